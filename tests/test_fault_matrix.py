"""What a trader sees when a run meets a fault, bad input or a signal: `agent.py` as a subprocess,
as cron or a shell starts it. Each case asserts the exit code, the one line printed, and what the
database says afterwards (often through the next run, as the trader would look).

Exit codes: 0 done or skipped; 1 the run failed; 2 bad usage or configuration; 3 refused for safety.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from config.settings import ENV_VARS
from store.db import Database

PROJECT = Path(__file__).resolve().parent.parent
LIVE_AGENT = "intl_claude"
DEMO_AGENT = "intl_claude-demo"
# A developer's .env must not point a test at a real broker, key or database: blank every variable.
NO_SECRETS = {var: "" for var in ENV_VARS}


# --- helpers -----------------------------------------------------------------------------------------
@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        """What the run printed on stderr, line by line (a traceback would show here)."""
        return [line for line in self.err.splitlines() if line.strip()]


def inherited_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "CATALYST", "ALPACA_", "MOOMOO_", "DATABASE_URL", "RESEARCH_"))}


def agent_cli(database_url: str | None, tmp_path: Path, *argv: str, timeout: float = 120, **env: str) -> Ran:
    """``python agent.py ARGV`` in the project folder with a private var, log and reports folder."""
    base = {**inherited_env(), **NO_SECRETS, "CATALYST_VAR_DIR": str(tmp_path / "var"),
            "CATALYST_LOG_DIR": str(tmp_path / "logs"), "CATALYST_REPORTS_DIR": str(tmp_path / "reports")}
    if database_url:
        base["DATABASE_URL"] = database_url
    proc = subprocess.run([sys.executable, str(PROJECT / "agent.py"), *argv], cwd=PROJECT, text=True,
                          capture_output=True, timeout=timeout, env={**base, **env})
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def query(url: str, sql: str, *args) -> list[dict]:
    async def go():
        conn = await asyncpg.connect(url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    return asyncio.run(go())


def migrated(url: str) -> str:
    async def go():
        db = await Database(url, "setup").connect()
        try:
            await db.migrate("trading")
            await db.migrate("research")
        finally:
            await db.close()
    asyncio.run(go())
    return url


def big_bro_sends(url: str, to_agent: str, *commands: str) -> list[int]:
    """Urgent control tasks, written as Big Bro (or the README's SQL) writes them."""
    return [query(url, """INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body, data)
                          VALUES ('big_bro', $1, 'task', 'urgent', $2, 'from the fault matrix', $3::jsonb)
                          RETURNING id""", to_agent, command, json.dumps({"command": command}))[0]["id"]
            for command in commands]


def profile_file(tmp_path: Path, market: str = "hk", **changes: str) -> Path:
    """A copy of the market's profile with top-level keys changed (e.g. live="true")."""
    text = (PROJECT / "config" / f"{market}.yaml").read_text()
    lines = text.splitlines()
    for key, value in changes.items():
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in lines]
    path = tmp_path / f"{market}-custom.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- 1. a demo never speaks as the live agent -------------------------------------------------------
def test_a_demo_run_leaves_the_live_agents_inbox_lock_and_records_alone(database_url, tmp_path):
    url = migrated(database_url)
    pending = big_bro_sends(url, LIVE_AGENT, "close_all", "halt")

    demo = agent_cli(url, tmp_path, "--force")

    assert demo.code == 0, demo.err
    assert f"agent id {DEMO_AGENT}" in demo.out and "ENTRY" in demo.out
    assert "Big Bro close_all" not in demo.out and "Big Bro halt" not in demo.out, "the demo obeyed the live agent's controls"
    inbox = query(url, "SELECT id, status, read_at FROM claude_messages WHERE id = ANY($1::int[]) ORDER BY id", pending)
    assert [(m["status"], m["read_at"]) for m in inbox] == [("pending", None), ("pending", None)]
    assert query(url, "SELECT * FROM claude_messages WHERE reply_to_id = ANY($1::int[])", pending) == []
    assert query(url, "SELECT * FROM claude_messages WHERE from_agent=$1", LIVE_AGENT) == []
    posted = query(url, "SELECT subject, data FROM claude_messages WHERE from_agent=$1", DEMO_AGENT)
    assert posted and all(m["subject"].startswith("[demo] ") for m in posted)
    assert all(json.loads(m["data"])["run_kind"] == "demo" for m in posted)
    for table in ("cycles", "positions", "orders", "decisions", "monitor_status", "risk_day"):
        assert query(url, f"SELECT * FROM {table} WHERE agent_id=$1", LIVE_AGENT) == [], table

    live_status = agent_cli(url, tmp_path, "--mode", "status", "--json")
    assert live_status.code == 0, live_status.err
    shown = json.loads(live_status.out)
    assert shown["agent_id"] == LIVE_AGENT and shown["empty"] and shown["cycles"] == [] and shown["positions"] == []
    assert shown["today"]["halted"] is False, "the halt waits, unread, for the live agent"

    demo_status = agent_cli(url, tmp_path, "--mode", "status", "--force", "--json")
    shown = json.loads(demo_status.out)
    assert shown["agent_id"] == DEMO_AGENT and len(shown["cycles"]) == 2


def test_a_halt_from_big_bro_lasts_the_trading_day_across_demo_runs(database_url, tmp_path):
    """The agent's answer promises "no new entries until resumed or the trading day ends": the next
    run setting the earlier runs' records aside must not take the halt with them."""
    url = migrated(database_url)
    [halt] = big_bro_sends(url, DEMO_AGENT, "halt")

    first = agent_cli(url, tmp_path, "--force")
    second = agent_cli(url, tmp_path, "--force")

    assert "Big Bro halt: halted" in first.out
    for run in (first, second):
        assert run.code == 3, run.out + run.err
        assert "ENTRY" not in run.out and "no new entries (halted by big_bro" in run.out
    assert query(url, "SELECT * FROM positions") == []
    [answer] = query(url, "SELECT body FROM claude_messages WHERE reply_to_id=$1", halt)
    assert "until resumed or the trading day ends" in answer["body"]


# --- 4. the live gate --------------------------------------------------------------------------------
def test_catalyst_live_in_the_environment_does_not_count_as_the_profiles_live(tmp_path):
    ran = agent_cli(None, tmp_path, "--live", CATALYST__LIVE="true")

    assert ran.code == 3
    assert any("CATALYST__LIVE is ignored" in line for line in ran.lines)
    assert any(line.startswith("refused: --live needs the profile to say `live: true`") for line in ran.lines)
    assert len(ran.lines) == 2, ran.err


def test_live_with_no_live_broker_is_refused_even_when_the_profile_and_the_flag_agree(tmp_path):
    config = profile_file(tmp_path, live="true")

    ran = agent_cli(None, tmp_path, "--config", str(config), "--live", "--force", CATALYST__LIVE="false")

    assert ran.code == 3, ran.out + ran.err
    assert ran.lines[-1] == ("refused: --live needs a live HK broker, and none is configured (see .env.example); "
                             "nothing was traded")
    assert "ENTRY" not in ran.out and "profile to say" not in ran.err, "not the misleading refusal"
    assert not (tmp_path / "var" / "pg").exists(), "refused before anything started"


def test_status_never_says_live_for_an_agent_without_a_live_broker(database_url, tmp_path):
    config = profile_file(tmp_path, live="true")

    ran = agent_cli(database_url, tmp_path, "--config", str(config), "--mode", "status")

    assert ran.code == 0, ran.err
    assert ran.out.splitlines()[0] == f"Catalyst {LIVE_AGENT} — HK (paper)"


# --- 5. an unreachable Messages API never hangs a run -------------------------------------------------
def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@contextlib.contextmanager
def silent_api():
    """A server that takes the connection and never answers (a black hole behind a proxy)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize("api", ["closed port", "never answers"])
def test_an_unreachable_messages_api_ends_a_simulated_clock_run_with_one_line(database_url, tmp_path, api):
    """The SDK's back-off and timeouts ran on the event loop's timers, which never come due under the
    simulated clock while a call is in flight: the demo hung for ever on the first retryable error."""
    with contextlib.ExitStack() as stack:
        url = closed_port_url() if api == "closed port" else stack.enter_context(silent_api())
        ran = agent_cli(database_url, tmp_path, "--force", timeout=60, ANTHROPIC_API_KEY="sk-ant-fault-matrix",
                        ANTHROPIC_BASE_URL=url, CATALYST__MODELS__REQUEST_TIMEOUT_SECONDS="2")

    assert ran.code == 1, ran.out + ran.err
    [line] = ran.lines
    said = "APIConnectionError: Connection error." if api == "closed port" else "did not answer within 2 s (3 attempts)"
    assert re.fullmatch(r"cycle hk_\d{8}_\d{6}_[0-9a-f]{6} failed: .*", line) and said in line, line
    [cycle] = query(database_url, "SELECT status, error FROM cycles")
    assert cycle["status"] == "failed" and said in cycle["error"]
    assert "sk-ant-fault-matrix" not in ran.out + ran.err


def test_an_unreachable_messages_api_ends_a_replay_with_its_report(database_url, tmp_path):
    ran = agent_cli(database_url, tmp_path, "--replay", "data/samples/hk", "--from", "2022-06-15", "--to", "2022-06-15",
                    timeout=60, ANTHROPIC_API_KEY="sk-ant-fault-matrix", ANTHROPIC_BASE_URL=closed_port_url())

    assert ran.code == 1
    assert "APIConnectionError: Connection error." in ran.err and ran.lines[-1].startswith("replay failed: ")
    assert list((tmp_path / "reports").glob("replay-*/report.json")), ran.out + ran.err
