"""The consciousness MCP server as Big Bro and the trader use it: `python consciousness_mcp.py` started
by the MCP SDK's own client (stdio, and streamable HTTP with a bearer token), over the databases a
paper run of the agent has just written.

What is asserted is what a user of Claude Desktop would see: the fourteen tools, answers that agree
with `agent.py --mode status --json`, a halt sent through the server that the next run obeys (exit 3)
and answers, refusals that say what is allowed, and no configured secret in any answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

import agent
from brokers.paper import PaperExchange
from core.clock import SimClock
from config.settings import ENV_VARS, load_profile, profile_path
from data.calendar import MarketCalendar
from oversight.agents import AgentKind, AgentRegistry
from oversight.app import main as mcp_main
from runner.run import EXIT_FAILED, EXIT_REFUSED, _run
from runner.sessions import sample_feed
from tests.helpers import async_wait_until, query

PROJECT = Path(__file__).resolve().parent.parent
SERVER = PROJECT / "consciousness_mcp.py"
SEED_TOOLS = {  # seed 001 §5.1
    "get_agent_status", "get_messages", "send_message", "get_observations", "add_observation", "get_learnings",
    "add_learning", "get_questions", "add_question", "consciousness_summary", "get_trading_overview",
    "get_hkex_positions", "get_us_positions", "get_all_positions",
}
NO_SECRETS = {var: "" for var in ENV_VARS}


# --- helpers -----------------------------------------------------------------------------------------
def server_env(url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The server's whole configuration: this test's database and folders, no developer .env values."""
    return {**NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
            "CATALYST_LOG_DIR": str(tmp_path / "logs"), **extra}


def with_server(env: dict[str, str], work: Callable[[Client], Awaitable[Any]], mode: str = "auto") -> Any:
    """Start `python consciousness_mcp.py` (stdio) with the SDK's client and run ``work`` against it.
    The working directory is not the project's (Claude Desktop starts servers from anywhere);
    ``mode="legacy"`` speaks the initialize handshake of clients before the 2026 protocol."""
    async def go():
        params = StdioServerParameters(command=sys.executable, args=[str(SERVER)], env=env,
                                       cwd=str(Path(env["CATALYST_LOG_DIR"]).parent))
        async with Client(params, mode=mode) as client:
            return await work(client)
    return asyncio.run(go())


async def tool(client: Client, name: str, **args: Any) -> dict:
    result = await client.call_tool(name, args)
    [content] = result.content
    assert not result.is_error, f"{name} failed: {content.text}"
    return json.loads(content.text)


async def refused(client: Client, name: str, **args: Any) -> str:
    result = await client.call_tool(name, args)
    assert result.is_error, f"{name}({args}) was not refused: {result.content}"
    return result.content[0].text


def paper_run(url: str, var_dir: Path, **env: str) -> int:
    """`agent.py --force`: the sample HK session on the paper exchange, in this process."""
    return agent.main(["--force"], env={**NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(var_dir), **env})


def run_agent_id(url: str) -> str:
    """The agent id the paper run wrote under (what it reported to Big Bro), not a guess."""
    [row] = query(url, "SELECT DISTINCT from_agent FROM claude_messages WHERE data->>'event' = 'CYCLE_SUMMARY'")
    return row["from_agent"]


def status_json(url: str, var_dir: Path, agent_id: str, clock: SimClock) -> dict:
    """`agent.py --mode status --json` for ``agent_id`` at the clock's time."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = agent.main(["--mode", "status", "--json"], clock=clock, env={
            **NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(var_dir), "CATALYST__AGENT_ID": agent_id})
    assert code == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def hk_session():
    profile = load_profile(profile_path("hk"), {})
    calendar = MarketCalendar(profile.market)
    return profile, calendar, sample_feed(profile, calendar).sessions[-1]


# --- 1. the tools ------------------------------------------------------------------------------------
def test_the_stdio_server_offers_the_fourteen_tools_a_resource_per_agent_and_the_daily_review(database_url, tmp_path):
    async def look(client: Client):
        return await client.list_tools(), await client.list_resource_templates(), await client.list_prompts()

    tools, templates, prompts = with_server(server_env(database_url, tmp_path), look)
    legacy_tools, _, _ = with_server(server_env(database_url, tmp_path), look, mode="legacy")

    assert {t.name for t in tools.tools} == SEED_TOOLS == {t.name for t in legacy_tools.tools}
    by_name = {t.name: t for t in tools.tools}
    send = by_name["send_message"].input_schema
    assert send["required"] == ["to_agent", "subject"]
    command = send["properties"]["command"]
    assert {"halt", "resume", "close_all"} <= set(json.dumps(command).replace('"', " ").split()), command
    assert by_name["get_messages"].input_schema["properties"]["limit"]["maximum"] == 200
    assert by_name["get_all_positions"].annotations.read_only_hint is True
    assert by_name["send_message"].annotations.read_only_hint is False
    assert [t.uri_template for t in templates.resource_templates] == ["catalyst://agents/{agent_id}/today"]
    assert [p.name for p in prompts.prompts] == ["daily_review"]


def test_the_server_cannot_trade_no_broker_or_order_code_is_loaded():
    """Control goes through messages only: the server's modules never import a broker adapter or the
    code that places orders."""
    probe = ("import sys, oversight.app, oversight.server, oversight.service; "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('brokers', 'tool_executor', 'position_monitor', 'run', 'reconcile', 'brains'))))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert loaded.stdout.split() == ["brokers", "brokers.base"], loaded.stdout  # the typed values only


# --- 2. agreement with --mode status --json ----------------------------------------------------------
def test_after_a_paper_run_the_agent_status_agrees_with_mode_status_json(database_url, tmp_path, hk_session, capsys):
    _profile, calendar, session = hk_session
    var_dir = tmp_path / "var"
    assert paper_run(database_url, var_dir) == 0
    agent_id = run_agent_id(database_url)
    expected = status_json(database_url, var_dir, agent_id, SimClock(session.close))
    assert expected["today"]["closed_trades"] > 0, "premise: the sample session trades"

    async def ask(client: Client):
        return (await tool(client, "get_agent_status", agent_id=agent_id, day=session.day.isoformat()),
                await tool(client, "get_all_positions", include_non_live=True),
                await tool(client, "get_trading_overview", day=session.day.isoformat(), include_non_live=True))

    status, positions, overview = with_server(server_env(database_url, tmp_path), ask)

    [mine] = status["agents"]
    assert mine["agent_id"] == agent_id
    for key in ("session", "today", "llm"):
        assert mine[key] == expected[key], key
    assert [{k: v for k, v in p.items() if k != "monitor_alive"} for p in mine["positions"]] == expected["positions"]
    assert mine["cycles"] == expected["cycles"][:3]
    assert [p for p in positions["positions"] if p["agent_id"] == agent_id] == expected["positions"] == []
    [day] = [a for a in overview["agents"] if a["agent_id"] == agent_id]
    assert (Decimal(day["realized_pnl"]), day["closed_trades"], day["entries"]) == (
        Decimal(expected["today"]["realized_pnl"]), expected["today"]["closed_trades"], expected["today"]["entries"])
    assert mine["mode"] == "sleeping" and mine["last_wake_at"] == session.open.isoformat()


def test_a_position_left_open_by_a_stopped_run_is_listed_like_mode_status_with_its_monitor_dead(
        database_url, tmp_path, hk_session, capsys):
    """A run stopped (SIGTERM) while it watched a position: the position stays open with nobody watching."""
    profile, calendar, session = hk_session
    var_dir = tmp_path / "var"
    args = agent.parse_args(["--force"])
    settings = agent.load_settings(args, agent.read_environment(
        {**NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(var_dir)}))
    feed = sample_feed(profile, calendar)
    clock = SimClock(session.open)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)

    async def stopped_run():
        broker = PaperExchange(feed.series, clock, calendar, profile)
        run = asyncio.get_running_loop().create_task(
            _run(args, settings, calendar, clock, broker, feed.universe, False, session=session))
        await async_wait_until(lambda: run.done() or broker.positions(), timeout=6 * 3600, interval=5,
                               what="the sample session's first entry")
        assert not run.done(), "premise: the sample session buys something"
        await clock.sleep(60)
        os.kill(os.getpid(), signal.SIGTERM)
        return await run

    try:
        assert clock.run(stopped_run()) == EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)
    [open_row] = query(database_url, "SELECT agent_id, symbol FROM positions WHERE status='open'")
    agent_id = open_row["agent_id"]
    expected = status_json(database_url, var_dir, agent_id, SimClock(session.close))
    assert [p["symbol"] for p in expected["positions"]] == [open_row["symbol"]]

    async def ask(client: Client):
        return (await tool(client, "get_all_positions", include_non_live=True),
                await tool(client, "get_hkex_positions", include_non_live=True),
                await tool(client, "get_us_positions", include_non_live=True),
                await tool(client, "get_agent_status", agent_id=agent_id, day=session.day.isoformat()))

    every, hkex, us, status = with_server(server_env(database_url, tmp_path), ask)

    listed = [p for p in every["positions"] if p["agent_id"] == agent_id]
    keys = ("position_id", "symbol", "side", "quantity", "entry_price", "entry_time", "stop_price", "target_price",
            "backstop_status")
    assert [{k: p[k] for k in keys} for p in listed] == [{k: p[k] for k in keys} for p in expected["positions"]]
    assert [p["monitor_alive"] for p in listed] == [False]
    assert hkex["positions"] == every["positions"] and us["positions"] == []
    [mine] = status["agents"]
    assert [{k: v for k, v in p.items() if k != "monitor_alive"} for p in mine["positions"]] == expected["positions"]
    assert mine["monitors"] == {"alive": 0, "dead": [open_row["symbol"]]}


# --- 3. a halt through the server --------------------------------------------------------------------
def test_a_halt_sent_through_the_server_stops_the_next_run_which_answers_it(database_url, tmp_path, capsys):
    var_dir = tmp_path / "var"
    assert paper_run(database_url, var_dir) == 0
    agent_id = run_agent_id(database_url)
    env = server_env(database_url, tmp_path)

    async def send_halt(client: Client):
        return await tool(client, "send_message", to_agent=agent_id, type="task", command="halt",
                          subject="halt", body="stand down: results under review")

    sent = with_server(env, send_halt)
    assert (sent["to"], sent["type"], sent["command"], sent["status"]) == (agent_id, "task", "halt", "pending")
    assert f"reply_to_id={sent['id']}" in sent["what_happens"]
    capsys.readouterr()

    assert paper_run(database_url, var_dir) == EXIT_REFUSED
    out = capsys.readouterr().out
    assert "halted by big_bro: stand down: results under review" in out
    assert "ENTRY " not in out

    async def read_answer(client: Client):
        return (await tool(client, "get_messages", agent=agent_id, type="response"),
                await tool(client, "get_messages", agent=agent_id, type="task", include_data=True))

    responses, tasks = with_server(env, read_answer)
    [answer] = responses["messages"]
    assert (answer["from"], answer["to"], answer["reply_to_id"]) == (agent_id, "big_bro", sent["id"])
    # The paper run is a demo (its own agent id), and what a demo posts says so.
    assert agent_id.endswith("-demo")
    assert answer["subject"] == "[demo] halt: done" and "no new entries" in answer["body"]
    [task] = tasks["messages"]
    assert (task["id"], task["status"], task["command"]) == (sent["id"], "processed", "halt")
    assert task["data"]["sent_via"] == "consciousness_mcp", "the write records where it came from"


# --- 4. refusals and who wrote what -------------------------------------------------------------------
def test_messages_to_unknown_or_record_only_agents_and_writes_as_an_agent_are_refused(database_url, tmp_path):
    replay_id = "intl_claude-replay-20220615T093000"
    async def scenario(client: Client):
        await tool(client, "get_agent_status")  # migrated; now a replay run's state row appears
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("INSERT INTO claude_state (agent_id, current_mode) VALUES ($1, 'sleeping')", replay_id)
        finally:
            await conn.close()
        return {
            "unknown": await refused(client, "send_message", to_agent="intl_claud", subject="typo"),
            "replay": await refused(client, "send_message", to_agent=replay_id, subject="hello"),
            "as_agent": await refused(client, "send_message", to_agent="big_bro", subject="x", from_agent="intl_claude"),
            "halt_big_bro": await refused(client, "send_message", to_agent="big_bro", subject="x", command="halt",
                                          from_agent="trader"),
            "bad_limit": await refused(client, "get_messages", limit=100000),
            "future": await refused(client, "get_agent_status", agent_id="intl_claude", day="2099-01-02"),
            "note": await tool(client, "add_observation", subject="Lunch fades", content="HK momentum fades into lunch",
                               observation_type="pattern", confidence=0.6, market="HKEX", agent_id="trader"),
            "listed": await tool(client, "get_agent_status", include_records=True),
            "default": await tool(client, "get_agent_status"),
            "positions": await tool(client, "get_all_positions"),
        }

    r = with_server(server_env(database_url, tmp_path), scenario)

    assert "unknown agent 'intl_claud'" in r["unknown"]
    for known in ("intl_claude (trading, HK)", "public_claude (trading, US)", "big_bro (oversight)"):
        assert known in r["unknown"]
    assert "nothing reads its inbox" in r["replay"] and replay_id in r["replay"]
    assert "never writes as an agent" in r["as_agent"]
    assert "does not trade" in r["halt_big_bro"]
    assert "limit" in r["bad_limit"]
    assert "in the future" in r["future"]
    assert query(database_url, "SELECT count(*) AS n FROM claude_messages")[0]["n"] == 0, "nothing refused was written"
    [obs] = query(database_url, "SELECT agent_id, source_db, observation_type, market FROM claude_observations")
    assert obs == {"agent_id": "trader", "source_db": "consciousness_mcp", "observation_type": "pattern", "market": "HKEX"}
    kinds = {a["agent_id"]: (a["kind"], a.get("note", "")) for a in r["listed"]["agents"]}
    assert kinds[replay_id][0] == "replay" and "not the live agent" in kinds[replay_id][1]
    assert kinds["intl_claude"] == ("trading", "")
    assert replay_id not in {a["agent_id"] for a in r["default"]["agents"]}
    assert "include_records" in r["default"]["not_listed"]


def test_agent_ids_of_demos_replays_and_archives_are_never_the_live_agent():
    hk = load_profile(profile_path("hk"), {})
    us = load_profile(profile_path("us"), {})
    registry = AgentRegistry([hk, us])
    cases = {
        "intl_claude": AgentKind.TRADING, "public_claude": AgentKind.TRADING, "big_bro": AgentKind.OVERSIGHT,
        "intl_claude-demo": AgentKind.DEMO, "public_claude-demo": AgentKind.DEMO,
        "intl_claude-replay-20260101T000000": AgentKind.REPLAY,
        "intl_claude-paper-before-a1b2c3": AgentKind.PAPER_ARCHIVE,
        "intl_claude-demo-paper-before-a1b2c3": AgentKind.PAPER_ARCHIVE,
        "intl_claude-x": AgentKind.OTHER, "intl_claudex": AgentKind.OTHER, "trader": AgentKind.OTHER,
    }
    got = {a: registry.classify(a).kind for a in cases}
    assert got == cases
    assert [a for a in cases if registry.classify(a).is_live_agent] == ["intl_claude", "public_claude"]
    assert registry.classify("intl_claude-replay-1").market == "HK"
    assert registry.classify("public_claude-demo").profile.agent_id == "public_claude-demo"


def test_mark_read_clears_big_bros_unread_but_never_an_agents_inbox(database_url, tmp_path):
    async def scenario(client: Client):
        to_big_bro = await tool(client, "send_message", to_agent="big_bro", subject="fyi", from_agent="trader")
        to_agent = await tool(client, "send_message", to_agent="intl_claude", subject="look at lunch exits")
        marked = await tool(client, "get_messages", unread=True, mark_read=True)
        after = await tool(client, "get_messages", unread=True)
        return to_big_bro, to_agent, marked, after

    to_big_bro, to_agent, marked, after = with_server(server_env(database_url, tmp_path), scenario)

    assert marked["count"] == 2 and marked["marked_read"] == 1
    assert [m["id"] for m in after["messages"]] == [to_agent["id"]], "the agent's inbox is the agent's to read"
    rows = query(database_url, "SELECT id, from_agent, status, data FROM claude_messages ORDER BY id")
    assert [(r["id"], r["from_agent"], r["status"]) for r in rows] == [
        (to_big_bro["id"], "trader", "read"), (to_agent["id"], "big_bro", "pending")]
    assert all(json.loads(r["data"])["sent_via"] == "consciousness_mcp" for r in rows)


# --- 5. streamable HTTP and the token -----------------------------------------------------------------
TOKEN = "mcp-token-" + "7f3c9a1e5b2d4f60"


@contextlib.contextmanager
def http_server(env: dict[str, str]):
    """`consciousness_mcp.py --http 0`: yields the URL it says it serves."""
    proc = subprocess.Popen([sys.executable, str(SERVER), "--http", "0"], cwd=PROJECT, env={**os.environ, **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "consciousness MCP server on http://127.0.0.1:" in line, line + (proc.stderr.read() if proc.poll() else "")
        yield line.split(" on ", 1)[1].split(" ", 1)[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "probe", "version": "0"}}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_http_with_a_token_refuses_requests_without_it_and_serves_those_with_it(database_url, tmp_path):
    with http_server(server_env(database_url, tmp_path, CATALYST_MCP_TOKEN=TOKEN)) as url:
        async def go():
            async with httpx2.AsyncClient() as raw:
                without = await raw.post(url, json=INITIALIZE, headers=HEADERS)
                wrong = await raw.post(url, json=INITIALIZE, headers={**HEADERS, "Authorization": "Bearer not-it"})
            async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as authorised:
                async with Client(streamable_http_client(url, http_client=authorised)) as client:
                    tools = await client.list_tools()
                    overview = await tool(client, "get_trading_overview")
            return without, wrong, tools, overview

        without, wrong, tools, overview = asyncio.run(go())

    assert without.status_code == 401 and wrong.status_code == 401
    assert "initialize" not in without.text and TOKEN not in without.text + wrong.text
    assert {t.name for t in tools.tools} == SEED_TOOLS
    assert {a["agent_id"] for a in overview["agents"]} >= {"intl_claude", "public_claude"}


def test_http_on_a_non_loopback_address_without_a_token_is_refused(database_url, tmp_path, capsys):
    code = mcp_main(["--http", "0", "--host", "0.0.0.0"], env=server_env(database_url, tmp_path))
    err = capsys.readouterr().err
    assert code == EXIT_REFUSED
    assert "refused: --host 0.0.0.0" in err and "CATALYST_MCP_TOKEN" in err
    with pytest.raises(SystemExit) as usage:
        mcp_main(["--host", "0.0.0.0"], env=server_env(database_url, tmp_path))
    assert usage.value.code == 2 and "--host only applies with --http" in capsys.readouterr().err
    assert mcp_main(["--http", "0"], env=server_env(database_url, tmp_path, CATALYST_MCP_TOKEN="short")) == 2


# --- 6. secrets ----------------------------------------------------------------------------------------
SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-mcpTESTsecret0001",
    "ALPACA_SECRET_KEY": "alpaca-secret-mcpTEST0002",
    "MOOMOO_TRADE_PWD": "moomoo-pwd-mcpTEST0003",
    "SMTP_PASSWORD": "smtp-pwd-mcpTEST0004",
    "CATALYST_MCP_TOKEN": "mcp-token-mcpTEST00000005",
}


def test_no_tool_result_resource_or_prompt_contains_a_configured_secret(database_url, tmp_path, hk_session):
    """Records that carry secrets (an agent's error text, a message body, a note) come out redacted."""
    _profile, _calendar, session = hk_session
    leak = " ".join(SECRETS.values())
    env = server_env(database_url, tmp_path, **SECRETS)

    async def seed_and_read(client: Client):
        await tool(client, "get_agent_status")  # the server migrated the database
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE claude_state SET last_error=$1::text, status_message=$1::text WHERE agent_id='intl_claude'",
                               f"auth failed with {leak}")
            await conn.execute(
                """INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body, data)
                   VALUES ('intl_claude', 'big_bro', 'notification', 'urgent', $1::text, $1::text, $2::jsonb)""",
                f"RUN_FAILED {leak}", json.dumps({"event": "RUN_FAILED", "error": leak}))
        finally:
            await conn.close()
        await tool(client, "add_observation", subject="key seen", content=f"saw {leak}")
        await tool(client, "add_learning", learning=f"never log {leak}", source="test")
        await tool(client, "add_question", question=f"why was {leak} printed?")
        await tool(client, "send_message", to_agent="intl_claude", subject="rotate", body=f"rotate {leak}")
        texts = []
        calls = {
            "get_agent_status": {}, "get_messages": {"include_data": True, "limit": 50},
            "get_observations": {}, "get_learnings": {}, "get_questions": {}, "consciousness_summary": {},
            "get_trading_overview": {}, "get_hkex_positions": {}, "get_us_positions": {}, "get_all_positions": {},
        }
        for name, args in calls.items():
            result = await client.call_tool(name, args)
            texts.append(result.content[0].text)
        texts.append((await client.call_tool("get_agent_status", {"agent_id": "intl_claude",
                                                                   "day": session.day.isoformat()})).content[0].text)
        texts.append((await client.call_tool("send_message", {"to_agent": leak[:40], "subject": "x"})).content[0].text)
        resource = await client.read_resource("catalyst://agents/intl_claude/today")
        texts.append(resource.contents[0].text)
        prompt = await client.get_prompt("daily_review", {})
        texts.append(prompt.messages[0].content.text)
        return texts

    texts = with_server(env, seed_and_read)

    everything = "\n".join(texts)
    for name, value in SECRETS.items():
        assert value not in everything, f"{name} appears in a result"
    assert everything.count("***") >= 10, "the records with secrets were read, redacted"
    assert "auth failed with ***" in everything and "never log ***" in everything
