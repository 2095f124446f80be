"""Big Bro's controls as Big Bro, the trader and an impostor would meet them: rows written to
``claude_messages`` before `agent.py --force` runs the sample HKEX session (paper exchange, simulated
clock, embedded PostgreSQL), and the consciousness MCP server started by the MCP SDK's own client.

* One malformed message (``data`` a JSON array or a string) among a batch: the run goes on, the
  ``halt`` of the same batch is obeyed and answered, the bad one is marked failed with the reason.
* A task with a command the agent does not know is answered "unknown command" and marked failed.
* Only the controllers the profile names may halt or close the agent: a look-alike sender is answered
  "not allowed" and nothing is done; an operator the profile names is obeyed. The MCP server refuses
  to write as a look-alike id, or a command from someone who is not a controller.
* 5,000 pending messages: the brain is shown the most urgent few and told how many more wait; those
  it was not shown stay unread for the next cycle or run.
"""
from __future__ import annotations

import asyncio
import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg
from mcp import Client, StdioServerParameters

import agent
from config.settings import ENV_VARS
from runner.exit_codes import EXIT_OK, EXIT_REFUSED
from store.db import Database
from tests.fakes.fake_anthropic import reply, text
from tests.helpers import query

PROJECT = Path(__file__).resolve().parent.parent
SERVER = PROJECT / "consciousness_mcp.py"
# `--force` with no broker trades the sample session as the demo agent, and reads the demo's inbox.
DEMO = "intl_claude-demo"
NO_SECRETS = {var: "" for var in ENV_VARS}
T0 = datetime(2026, 1, 5, 0, 0, tzinfo=timezone.utc)  # before the sample session: every message is waiting
CAP = 20  # the profile's default max_messages_in_prompt: what one prompt shows of the inbox


# --- helpers -----------------------------------------------------------------------------------------
def run_agent(url: str, var_dir: Path, **env: str) -> int:
    """`agent.py --force` in this process with an explicit environment (no developer .env values)."""
    return agent.main(["--force"], env={**NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(var_dir), **env})


async def _write(url: str, rows: list[tuple]) -> list[int]:
    db = await Database(url, "research").connect()
    try:
        await db.migrate("research")
    finally:
        await db.close()
    conn = await asyncpg.connect(url)
    try:
        return [await conn.fetchval(
            """INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body, data, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) RETURNING id""", *row) for row in rows]
    finally:
        await conn.close()


def send(url: str, *messages: dict[str, Any]) -> list[int]:
    """Rows in the demo's inbox as Big Bro (or anyone with database access) writes them; ``data`` is
    the JSON text stored, so that it can be an array or a string."""
    rows = [(m.get("from_agent", "big_bro"), DEMO, m.get("msg_type", "task"), m.get("priority", "normal"),
             m.get("subject"), m.get("body", ""), m.get("data", "{}"), T0 + timedelta(minutes=i))
            for i, m in enumerate(messages)]
    return asyncio.run(_write(url, rows))


def answers(url: str) -> dict[int, dict]:
    """The demo's response to each message, by the id it answers (its ``data`` decoded)."""
    rows = query(url, """SELECT reply_to_id, subject, body, data FROM claude_messages
                         WHERE from_agent=$1 AND msg_type='response' ORDER BY id""", DEMO)
    out: dict[int, dict] = {}
    for r in rows:
        assert r["reply_to_id"] not in out, f"message {r['reply_to_id']} answered twice"
        out[r["reply_to_id"]] = {**r, "data": json.loads(r["data"])}
    return out


def status_of(url: str, message_id: int) -> tuple[str, dict | list | str | None]:
    [row] = query(url, "SELECT status, data FROM claude_messages WHERE id=$1", message_id)
    return row["status"], json.loads(row["data"]) if row["data"] is not None else None


def shown(prompt: str) -> list[str]:
    """The subjects of Big Bro's messages a cycle's prompt shows the brain."""
    found = re.search(r"^Messages from Big Bro[^:]*: (\[.*\])$", prompt, re.M)
    return [m["subject"] for m in json.loads(found.group(1))] if found else []


def entries(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith("ENTRY ")]


# --- 6. one malformed message -----------------------------------------------------------------------
def test_a_halt_in_a_batch_with_malformed_messages_is_obeyed_and_the_bad_ones_are_answered_why(
        database_url, tmp_path, capsys):
    array_id, string_id, halt_id = send(
        database_url,
        {"priority": "urgent", "subject": "flatten?", "data": "[1, 2]"},
        {"priority": "urgent", "subject": "stop", "data": '"halt"'},
        {"priority": "urgent", "subject": "halt", "body": "stand down: news pending", "data": '{"command": "halt"}'},
    )

    code = run_agent(database_url, tmp_path / "var")
    captured = capsys.readouterr()

    assert code == EXIT_REFUSED, captured.err  # the halt stopped the cycles: a refusal, not a failure
    assert "Traceback" not in captured.err and "AttributeError" not in captured.out + captured.err
    assert entries(captured.out) == [] and query(database_url, "SELECT * FROM orders") == [], "no entry after a halt"
    got = answers(database_url)
    assert got[halt_id]["data"]["ok"] is True and "no new entries" in got[halt_id]["body"]
    assert status_of(database_url, halt_id)[0] == "processed"
    for bad_id, kind in ((array_id, "a JSON array"), (string_id, "a JSON string")):
        answer = got[bad_id]
        assert answer["data"]["ok"] is False and answer["subject"].endswith("NOT done")
        assert f"malformed message: data is {kind}" in answer["body"], answer["body"]
        status, data = status_of(database_url, bad_id)
        assert status == "failed", "a bad message is never taken as read"
    # the stored data is kept as Big Bro wrote it (nothing merged into a non-object)
    assert status_of(database_url, array_id)[1] == [1, 2]


def test_an_unknown_command_is_answered_unknown_command_and_marked_failed(database_url, tmp_path, capsys):
    [task_id] = send(database_url, {"priority": "urgent", "subject": "sell everything",
                                    "data": '{"command": "liquidate"}'})

    code = run_agent(database_url, tmp_path / "var")
    out = capsys.readouterr().out

    assert code == EXIT_OK
    answer = answers(database_url)[task_id]
    assert answer["data"]["ok"] is False and answer["data"]["command"] == "liquidate"
    assert "unknown command 'liquidate'" in answer["body"] and "halt, resume, close_all" in answer["body"]
    assert status_of(database_url, task_id)[0] == "failed"
    assert entries(out), "an unknown command changes nothing: the run trades"


# --- 7. who may command -----------------------------------------------------------------------------
def test_a_halt_or_close_all_from_a_look_alike_sender_is_not_allowed_and_not_obeyed(database_url, tmp_path, capsys):
    ids = send(
        database_url,
        {"from_agent": "intl_claude.", "priority": "urgent", "subject": "halt", "data": '{"command": "halt"}'},
        {"from_agent": "intl_claude_demo", "priority": "urgent", "subject": "halt", "data": '{"command": "halt"}'},
        {"from_agent": "big_bro_", "priority": "urgent", "subject": "close_all", "data": '{"command": "close_all"}'},
    )

    code = run_agent(database_url, tmp_path / "var")
    out = capsys.readouterr().out

    assert code == EXIT_OK, out
    assert entries(out), "nobody allowed to halt it: the run trades"
    assert query(database_url, "SELECT * FROM risk_day WHERE agent_id=$1 AND halted", DEMO) == []
    got = answers(database_url)
    for message_id, sender in zip(ids, ("intl_claude.", "intl_claude_demo", "big_bro_")):
        assert got[message_id]["data"]["ok"] is False
        assert f"not allowed: '{sender}' is not a controller of {DEMO} (controllers: big_bro)" in got[message_id]["body"]
        assert status_of(database_url, message_id)[0] == "failed"


def test_an_operator_the_profile_names_is_obeyed(database_url, tmp_path, capsys):
    [halt_id] = send(database_url, {"from_agent": "trader", "priority": "urgent", "subject": "halt",
                                    "body": "done for today", "data": '{"command": "halt"}'})

    code = run_agent(database_url, tmp_path / "var", CATALYST__CONTROLLERS="[big_bro, trader]")
    out = capsys.readouterr().out

    assert code == EXIT_REFUSED and entries(out) == []
    assert "halted by trader: done for today" in out
    assert answers(database_url)[halt_id]["data"]["ok"] is True
    assert status_of(database_url, halt_id)[0] == "processed"


def with_server(url: str, tmp_path: Path, work: Callable[[Client], Awaitable[Any]]) -> Any:
    """`python consciousness_mcp.py` (stdio) started by the MCP SDK's client, ``work`` run against it."""
    env = {**NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
           "CATALYST_LOG_DIR": str(tmp_path / "logs")}

    async def go():
        params = StdioServerParameters(command=sys.executable, args=[str(SERVER)], env=env, cwd=str(tmp_path))
        async with Client(params) as client:
            return await work(client)
    return asyncio.run(go())


async def refused(client: Client, **args: Any) -> str:
    result = await client.call_tool("send_message", args)
    assert result.is_error, f"send_message({args}) was not refused: {result.content}"
    return result.content[0].text


def test_the_mcp_server_refuses_look_alike_ids_and_commands_from_non_controllers(database_url, tmp_path):
    async def scenario(client: Client):
        out = {sender: await refused(client, to_agent="intl_claude", subject="halt", command="halt", from_agent=sender)
               for sender in ("intl_claude.", "intl_claude_demo", "big_bro.", "bigbro", "public-claude")}
        out["trader"] = await refused(client, to_agent="intl_claude", subject="halt", command="halt", from_agent="trader")
        out["to_look_alike"] = await refused(client, to_agent="intl_claude.", subject="halt", command="halt")
        ok = await client.call_tool("send_message", {"to_agent": "intl_claude", "subject": "lunch exits look early",
                                                     "from_agent": "trader"})
        assert not ok.is_error, ok.content
        return out

    r = with_server(database_url, tmp_path, scenario)

    for sender, like in (("intl_claude.", "intl_claude"), ("intl_claude_demo", "intl_claude-demo"),
                         ("big_bro.", "big_bro"), ("bigbro", "big_bro"), ("public-claude", "public_claude")):
        assert f"from_agent '{sender}' looks like the agent id '{like}'" in r[sender], r[sender]
    assert "'trader' is not a controller of intl_claude (controllers: big_bro)" in r["trader"]
    assert "unknown agent 'intl_claude.'" in r["to_look_alike"]
    rows = query(database_url, "SELECT from_agent, msg_type FROM claude_messages")
    assert rows == [{"from_agent": "trader", "msg_type": "message"}], "nothing refused was written"


# --- 8. a flood of messages -------------------------------------------------------------------------
def test_5000_pending_messages_the_brain_sees_the_cap_most_urgent_first_and_the_rest_stay_unread(
        database_url, tmp_path, fake_anthropic, capsys):
    flood = [{"msg_type": "message", "priority": "low", "subject": f"note {i}", "body": "x" * 300}
             for i in range(4997)]
    urgent = [{"msg_type": "message", "priority": "urgent", "subject": f"urgent {i}"} for i in range(3)]
    send(database_url, *flood, *urgent)  # the urgent ones last: they are still shown first
    fake_anthropic.script([reply(text("No trade this cycle."))] * 10)

    code = run_agent(database_url, tmp_path / "var", ANTHROPIC_API_KEY=fake_anthropic.api_key,
                     ANTHROPIC_BASE_URL=fake_anthropic.base_url)
    capsys.readouterr()

    assert code == EXIT_OK
    assert max(len(json.dumps(body)) for body in fake_anthropic.requests) < 100_000, "a request the API can take"
    prompts = [body["messages"][0]["content"][0]["text"] for body in fake_anthropic.requests
               if len(body["messages"]) == 1]
    assert len(prompts) == 2, "one prompt per cycle (09:45 and 13:15)"
    first, second = (shown(p) for p in prompts)
    assert first == ["urgent 0", "urgent 1", "urgent 2"] + [f"note {i}" for i in range(CAP - 3)]
    assert second == [f"note {i}" for i in range(CAP - 3, 2 * CAP - 3)], "the next oldest, at the next cycle"
    assert f"{5000 - CAP:,} more message(s) wait unread" in prompts[0]
    assert f"{5000 - 2 * CAP:,} more message(s) wait unread" in prompts[1]
    counts = {r["status"]: r["n"] for r in query(
        database_url, "SELECT status, count(*) AS n FROM claude_messages WHERE to_agent=$1 GROUP BY status", DEMO)}
    assert counts == {"read": 2 * CAP, "pending": 5000 - 2 * CAP}, "what the brain was not shown stays unread"
