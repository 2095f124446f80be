"""The consciousness MCP server's logic: who the agents are, what the databases say, the tools.

``consciousness_mcp.py`` (the entry point) builds the server from here. The server reads and
writes Big Bro's tables and reads the trading tables; it never talks to a broker.
"""
