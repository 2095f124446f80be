"""Helpers every test module may use (no test module imports another).

Waiting: a test that needs something to happen waits for it with ``wait_until`` (a thread, a
subprocess, a fake server) or ``await async_wait_until`` (on the test's event loop, simulated or
not). Both fail the test when it does not happen in time; neither ever returns silently.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import time
from pathlib import Path
from typing import Any, Callable

import asyncpg

import agent


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "the condition",
               interval: float = 0.01) -> Any:
    """Poll ``predicate`` (real time) until it returns something true, and return that; after
    ``timeout`` seconds fail with an AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def async_wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "the condition",
                           interval: float = 0.01) -> Any:
    """``wait_until`` on the running event loop; ``predicate`` may be a coroutine function.

    ``timeout`` and ``interval`` are seconds of the loop's own time: simulated seconds on a
    ``SimClock`` loop (where waiting costs no real time), real seconds otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


async def every_row(url: str, *, except_big_bros_messages: bool = False) -> list[tuple[str, str]]:
    """(table, row as JSON text) for every row of every table of the database at ``url``, every text
    column included: where a secret would show if one were ever stored. ``except_big_bros_messages``:
    leave out what Big Bro wrote (a test's own control messages)."""
    conn = await asyncpg.connect(url)
    try:
        tables = [r["table_name"] for r in await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public' AND table_type='BASE TABLE'")]
        rows = []
        for table in tables:
            where = " WHERE from_agent <> 'big_bro'" if except_big_bros_messages and table == "claude_messages" else ""
            rows += [(table, r[0]) for r in await conn.fetch(f"SELECT row_to_json(t)::text FROM {table} t{where}")]
        return rows
    finally:
        await conn.close()


async def query_async(url: str, sql: str, *args: Any) -> list[dict]:
    """``query`` from inside a running event loop (not a simulated one: use the agent's Database there)."""
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def query(url: str, sql: str, *args: Any) -> list[dict]:
    """The rows of ``sql`` on the database at ``url``, as a trader (or Big Bro) reads them afterwards."""
    return asyncio.run(query_async(url, sql, *args))


# --- Big Bro's view: what an agent sent to claude_messages ------------------------------------------------
AGENT_MESSAGES = """SELECT id, msg_type, priority, subject, data, created_at, idempotency_key, reply_to_id, status
                    FROM claude_messages WHERE from_agent=$1 ORDER BY id"""


def decoded(rows: list[dict]) -> list[dict]:
    """Rows of claude_messages with their ``data`` JSON decoded."""
    for r in rows:
        r["data"] = json.loads(r["data"])
    return rows


def agent_messages(url: str, agent_id: str = "intl_claude") -> list[dict]:
    """Every message ``agent_id`` sent, oldest first, ``data`` decoded."""
    return decoded(query(url, AGENT_MESSAGES, agent_id))


async def agent_messages_async(url: str, agent_id: str = "intl_claude") -> list[dict]:
    return decoded(await query_async(url, AGENT_MESSAGES, agent_id))


def hk_settings(database_url: str, var_dir: Path, argv: list[str]):
    """``(args, settings)`` of ``agent.py <argv>`` for the HK agent on ``database_url``."""
    args = agent.parse_args(argv)
    env = agent.read_environment({"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(var_dir)})
    return args, agent.load_settings(args, env)


def hk_sample_under_three_codes(folder: Path, files: str = "09988_*.csv") -> Path:
    """The 09988 sample bars copied under three codes, so a cycle (or the random control) has several
    symbols to choose from."""
    from data.bars import SAMPLES_DIR

    folder.mkdir()
    for code in ("09988", "00700", "00005"):
        for f in (SAMPLES_DIR / "hk").glob(files):
            (folder / f.name.replace("09988", code)).write_bytes(f.read_bytes())
    return folder
