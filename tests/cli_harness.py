"""`agent.py` as a user runs it, and the database as Big Bro writes it, for the tests of faults and
operations (test_fault_matrix, test_operator_faults, test_money_faults, test_chaos, test_lock_and_quotes)."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from config.settings import ENV_VARS
from store.db import Database
from tests.helpers import query

PROJECT = Path(__file__).resolve().parent.parent
# A developer's .env must not point a test at a real broker, key or database: blank every variable.
NO_SECRETS = {var: "" for var in ENV_VARS}


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


def holding_the_lock_of(url: str, agent_id: str, action):
    """``action()`` while another session holds ``agent_id``'s run lock (as a live run does)."""
    from store.db import agent_lock_key

    async def go():
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", agent_lock_key(agent_id))
            return await asyncio.to_thread(action)
        finally:
            await conn.close()
    return asyncio.run(go())
