#!/usr/bin/env python3
"""Catalyst's consciousness MCP server: Big Bro and the trader reach the agents from Claude Desktop
or Claude Code.

    python consciousness_mcp.py                      # stdio (Claude Desktop / Claude Code start it)
    python consciousness_mcp.py --http PORT [--host HOST]   # streamable HTTP at http://HOST:PORT/mcp

Fourteen tools over Big Bro's tables and the trading tables of both markets (``oversight/``). It
never trades: control goes to an agent as a task that the agent obeys and answers.
Exit codes: 0 stopped; 1 could not run; 2 bad usage or configuration; 3 refused for safety.
"""
import sys

from oversight.app import main

if __name__ == "__main__":
    sys.exit(main())
