"""The consciousness MCP server: fourteen tools (seed 001 §5.1), a resource per agent, a prompt.

Built on the official MCP SDK's ``MCPServer`` (the SDK's name for FastMCP since mcp 2). Tool
inputs are typed (the SDK derives their JSON schemas from the signatures); every result is one
compact JSON text with every string passed through the secrets redactor.
"""
from __future__ import annotations

import hmac
import json
from datetime import date
from decimal import Decimal
from typing import Annotated, Any, Awaitable, Callable, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from consciousness_notify import BIG_BRO
from oversight.service import Oversight, Refused, plain
from store.db import DatabaseError

SERVER_NAME = "catalyst-consciousness"
TOOL_NAMES = (
    "get_agent_status", "get_messages", "send_message", "get_observations", "add_observation", "get_learnings",
    "add_learning", "get_questions", "add_question", "consciousness_summary", "get_trading_overview",
    "get_hkex_positions", "get_us_positions", "get_all_positions",
)
INSTRUCTIONS = (
    "Catalyst's consciousness: the trading agents (intl_claude for HKEX, public_claude for US), Big Bro, and "
    "their messages, observations, learnings and questions, with positions across both markets. Start with "
    "get_trading_overview. Demo and replay agent ids are labelled as such and are never the live agent. This "
    "server never trades: send_message with type 'task' and command halt, resume or close_all asks an agent, "
    "which obeys at its next run or heartbeat and answers with a 'response' message."
)

READ = ToolAnnotations(readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False)
WRITE = ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False, openWorldHint=False)

AgentId = Annotated[str, Field(min_length=1, max_length=50, description="an agent id, e.g. intl_claude")]
Day = Annotated[date | None, Field(description="a past trading day (YYYY-MM-DD); default today in each market")]
Limit = Annotated[int, Field(ge=1, le=200, description="at most this many rows, newest first")]
Author = Annotated[str, Field(min_length=2, max_length=50,
                              description="who writes this (recorded with it): big_bro, or a person's id")]
Confidence = Annotated[Decimal | None, Field(ge=0, le=1, max_digits=3, decimal_places=2, description="0 to 1")]
ObservationType = Literal["market", "pattern", "anomaly", "insight", "error", "system", "workflow"]
LearningCategory = Literal["trading", "broker", "pattern", "market", "system", "mistake"]
Horizon = Literal["h1", "h2", "h3"]
MarketName = Literal["US", "HKEX", "global"]


class StaticToken:
    """The SDK's TokenVerifier for one shared bearer token (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str):
        from mcp.server.auth.provider import AccessToken

        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token=token, client_id="catalyst-token-holder", scopes=[])
        return None


# Long: Big Bro's fourteen MCP tools, each a few lines registered as a closure over one service.
def build_server(oversight: Oversight, redact: Callable[[str], str], bearer_token: str | None = None,
                 public_url: str | None = None) -> MCPServer:
    """The server; with ``bearer_token`` (HTTP) every request must carry it, through the SDK's own
    bearer middleware. The SDK's auth settings are written for OAuth and want an issuer URL: with one
    shared token there is no issuer, the server's own URL stands in (no OAuth route is served)."""
    auth = None
    if bearer_token is not None:
        from mcp.server.auth.settings import AuthSettings

        auth = {"auth": AuthSettings(issuer_url=public_url or "http://127.0.0.1", resource_server_url=None),
                "token_verifier": StaticToken(bearer_token)}
    server = MCPServer(SERVER_NAME, instructions=INSTRUCTIONS, log_level="WARNING", **(auth or {}))

    async def answer(work: Awaitable[dict[str, Any]]) -> str:
        try:
            result = await work
        except Refused as exc:
            raise ToolError(redact(str(exc))) from None
        except DatabaseError as exc:
            raise ToolError(redact(f"database unavailable: {exc}")) from None
        return json.dumps(plain(result, redact), separators=(",", ":"), ensure_ascii=False)

    @server.tool(annotations=READ)
    async def get_agent_status(agent_id: AgentId | None = None, day: Day = None,
                               include_records: bool = False) -> str:
        """Status of every agent, or one: mode, last wake, open positions (monitor alive or dead), today's
        realized P&L, entries, halt, LLM spend vs budget, recent cycles, unread messages. Demo/replay ids are
        labelled; include_records also lists replays and archived paper runs."""
        return await answer(oversight.agent_status(agent_id, day, include_records))

    @server.tool(annotations=READ)
    async def get_messages(agent: AgentId | None = None, unread: bool = False,
                           type: Annotated[str | None, Field(max_length=50, description=(
                               "message type (message, task, response, notification) or event (EXIT, ENTRY, "
                               "CYCLE_SUMMARY, RISK_HALT, CONTROL_RESPONSE, ...)"))] = None,
                           limit: Limit = 20, include_data: bool = False,
                           mark_read: Annotated[bool, Field(description=(
                               "mark the pending ones addressed to Big Bro or a person as read (never an agent's "
                               "inbox)"))] = False) -> str:
        """Inter-agent messages, newest first: from or to one agent, only unread (pending), of one type or
        event. Bodies are cut at 600 characters; include_data adds the JSON data."""
        return await answer(oversight.messages(agent, unread, type, limit, include_data, mark_read))

    @server.tool(annotations=WRITE)
    async def send_message(to_agent: AgentId,
                           subject: Annotated[str, Field(min_length=1, max_length=500)],
                           body: Annotated[str, Field(max_length=10000)] = "",
                           type: Literal["message", "task"] = "message",
                           command: Annotated[Literal["halt", "resume", "close_all"] | None, Field(description=(
                               "a control task the agent obeys and answers: halt (no new entries today), resume "
                               "(lift such a halt), close_all (flatten now)"))] = None,
                           priority: Literal["low", "normal", "high", "urgent"] | None = None,
                           from_agent: Author = BIG_BRO) -> str:
        """Send a message or a task to an agent (refused for an unknown id, with the known ones). A command
        makes it a task, urgent unless said otherwise; the agent answers with a 'response' (reply_to_id)."""
        return await answer(oversight.send_message(to_agent=to_agent, subject=subject, body=body, msg_type=type,
                                                   command=command, priority=priority, from_agent=from_agent))

    @server.tool(annotations=READ)
    async def get_observations(agent: AgentId | None = None, observation_type: ObservationType | None = None,
                               market: MarketName | None = None, limit: Limit = 20) -> str:
        """Recorded observations (trade results, market notes), newest first."""
        return await answer(oversight.observations(agent=agent, observation_type=observation_type, market=market,
                                                   limit=limit))

    @server.tool(annotations=WRITE)
    async def add_observation(subject: Annotated[str, Field(min_length=1, max_length=200)],
                              content: Annotated[str, Field(min_length=1, max_length=10000)],
                              observation_type: ObservationType = "insight", confidence: Confidence = None,
                              market: MarketName | None = None, horizon: Horizon | None = None,
                              agent_id: Author = BIG_BRO) -> str:
        """Record an observation (who wrote it is recorded as agent_id)."""
        return await answer(oversight.add_observation(agent_id=agent_id, observation_type=observation_type,
                                                      subject=subject, content=content, confidence=confidence,
                                                      horizon=horizon, market=market))

    @server.tool(annotations=READ)
    async def get_learnings(category: LearningCategory | None = None, min_confidence: Confidence = None,
                            agent: AgentId | None = None, limit: Limit = 20) -> str:
        """Learnings, most confident first (0.7 and above counts as validated)."""
        return await answer(oversight.learnings(agent=agent, category=category, min_confidence=min_confidence,
                                                limit=limit))

    @server.tool(annotations=WRITE)
    async def add_learning(learning: Annotated[str, Field(min_length=1, max_length=10000)],
                           category: LearningCategory = "trading", confidence: Confidence = None,
                           source: Annotated[str | None, Field(max_length=200)] = None,
                           context: Annotated[str | None, Field(max_length=10000)] = None,
                           applies_to_markets: list[MarketName] | None = None,
                           agent_id: Author = BIG_BRO) -> str:
        """Record a learning (who wrote it is recorded as agent_id)."""
        return await answer(oversight.add_learning(agent_id=agent_id, category=category, learning=learning,
                                                   source=source, context=context, confidence=confidence,
                                                   markets=applies_to_markets))

    @server.tool(annotations=READ)
    async def get_questions(status: Literal["open", "investigating", "answered", "parked"] | None = "open",
                            agent: AgentId | None = None, limit: Limit = 20) -> str:
        """Questions (open ones by default), highest priority first; shared questions are always included."""
        return await answer(oversight.questions(agent=agent, status=status, limit=limit))

    @server.tool(annotations=WRITE)
    async def add_question(question: Annotated[str, Field(min_length=1, max_length=5000)],
                           context: Annotated[str | None, Field(max_length=10000)] = None,
                           horizon: Literal["h1", "h2", "h3", "perpetual"] | None = None,
                           priority: Annotated[int, Field(ge=1, le=10)] = 5,
                           category: Annotated[str | None, Field(max_length=100)] = None,
                           agent_id: Author = BIG_BRO) -> str:
        """Add an open question (who asks is recorded as agent_id)."""
        return await answer(oversight.add_question(agent_id=agent_id, question=question, context=context,
                                                   horizon=horizon, priority=priority, category=category))

    @server.tool(annotations=READ)
    async def consciousness_summary(day: Annotated[date | None, Field(description=(
            "a UTC day (YYYY-MM-DD); default the last 24 hours"))] = None) -> str:
        """Full overview of the consciousness: every agent's mode, spend, errors and unread messages, the
        message traffic by sender and event, research counts and the top open questions."""
        return await answer(oversight.consciousness_summary(day))

    @server.tool(annotations=READ)
    async def get_trading_overview(day: Day = None, include_non_live: bool = False) -> str:
        """Trading and consciousness combined (start here): per agent and market, open positions, unwatched
        positions, realized P&L, trades, entries, halts, LLM spend vs budget, last cycle; Big Bro's unread
        urgent/high messages; research counts."""
        return await answer(oversight.trading_overview(day, include_non_live))

    @server.tool(annotations=READ)
    async def get_hkex_positions(include_non_live: bool = False) -> str:
        """Open HKEX positions of the live HK agent (include_non_live adds demo/replay ids, labelled)."""
        return await answer(oversight.positions("HK", include_non_live))

    @server.tool(annotations=READ)
    async def get_us_positions(include_non_live: bool = False) -> str:
        """Open US positions of the live US agent (include_non_live adds demo/replay ids, labelled)."""
        return await answer(oversight.positions("US", include_non_live))

    @server.tool(annotations=READ)
    async def get_all_positions(include_non_live: bool = False) -> str:
        """Open positions across both markets, with the monitor's last price, P&L and whether it is alive."""
        return await answer(oversight.positions(None, include_non_live))

    @server.resource("catalyst://agents", name="agents", mime_type="application/json",
                     description="Every known agent id and what it is (trading, demo, replay, ...)")
    async def agents_resource() -> str:
        infos = await oversight.agents(include_records=True)
        return json.dumps(plain([i.label() for i in infos], redact), separators=(",", ":"))

    @server.resource("catalyst://agents/{agent_id}/today", name="agent_today", mime_type="application/json",
                     description="One agent's day: status, positions, exits and their reasons, problems, spend")
    async def agent_today(agent_id: str) -> str:
        try:
            return await answer(oversight.agent_today(agent_id))
        except ToolError as exc:
            raise ResourceError(str(exc)) from None

    @server.prompt(name="daily_review", title="Daily review",
                   description="Walk through the day: positions, exits and their reasons, errors, spend")
    async def daily_review(day: str | None = None, market: str | None = None) -> str:
        try:
            chosen = date.fromisoformat(day) if day else None
        except ValueError:
            raise ValueError(f"day '{day}': use YYYY-MM-DD") from None
        wanted = {"HK": "HK", "HKEX": "HK", "US": "US"}.get((market or "").upper()) if market else None
        try:
            data = await oversight.daily_review_data(chosen, wanted)
        except Refused as exc:
            raise ValueError(redact(str(exc))) from None
        return review_prompt(json.dumps(plain(data, redact), separators=(",", ":"), ensure_ascii=False),
                             chosen.isoformat() if chosen else "today")

    return server


def review_prompt(data_json: str, day: str) -> str:
    return (
        f"You are Big Bro, reviewing Catalyst's trading day ({day}). The live agents' records follow as JSON "
        "(status, positions, exits with their reasons, problems reported, LLM spend).\n\n"
        "Walk through it in this order and be concrete (symbols, amounts, times):\n"
        "1. Positions: what is still open, with which stop and target, and whether its monitor is alive; an open "
        "position whose monitor is dead is watched by nobody until the next run or heartbeat.\n"
        "2. Exits: each exit and its reason; which reasons lost money, whether stops were hit or exits came from "
        "signals, time, or close_all; the day's realized P&L against the number of trades.\n"
        "3. Errors: every problem event (monitor errors, failed runs, missing market data, risk halts, budget, "
        "positions without a broker backstop) and whether it was resolved.\n"
        "4. Spend: LLM spend against the daily budget, and whether it bought anything.\n"
        "5. Then decide: record what was learned (add_observation, add_learning), open questions worth following "
        "(add_question), and only if needed a control task (send_message type=task command=halt|resume|close_all), "
        "which the agent obeys at its next run or heartbeat and answers.\n\n"
        f"Records:\n{data_json}"
    )
