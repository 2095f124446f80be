"""Big Bro's side of the agent, as Big Bro and the trader see it in the consciousness tables.

* The outbox: a research database that is down for the first part of a whole sample run, or that
  loses the acknowledgement of a commit, still ends with every event in ``claude_messages`` once,
  in order, each announced by ``pg_notify`` (watched by a real LISTEN connection).
* Control: ``halt``, ``resume`` and ``close_all`` task messages written by "Big Bro" while a whole
  sample session runs on the paper exchange and the simulated clock.
* The inbox order, ``claude_state`` (modes, spend reset by the agent itself, errors) and trade
  results as observations.

The research database sits behind ``PgProxy`` (tests/fakes/pg_proxy.py), a TCP front for the
embedded PostgreSQL that can be down (connection refused), come up at the agent's first connection
attempt once its outbox holds enough events, or cut one connection right after forwarding a COMMIT.
"""
from __future__ import annotations

import asyncio
import json
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

import agent
from brokers.paper import PaperExchange
from core.clock import SimClock, external_io
from consciousness_notify import Event, EventType, Notifier
from data.bars import SAMPLES_DIR
from store.bigbro import Consciousness, InboxMessage
from data.calendar import MarketCalendar
from runner.run import EXIT_FAILED, EXIT_REFUSED, _run
from runner.sessions import sample_feed
from store.db import Database, DatabaseError, open_databases
from tests.fakes import free_port
from tests.fakes.pg_proxy import Listen
from tests.helpers import (agent_messages, agent_messages_async, async_wait_until, hk_settings, query, query_async,
                           wait_until)

AGENT = "intl_claude"
DEMO = "intl_claude-demo"  # who `agent.main(["--force"])` speaks as with no broker (the sample session)
EVENT_LINE = re.compile(r"consciousness_notify: event (\w+): (.*)$")


# --- helpers -----------------------------------------------------------------------------------------
def logged_events(log_dir: Path) -> list[tuple[str, str]]:
    out = []
    for line in (log_dir / "agent.log").read_text().splitlines():
        m = EVENT_LINE.search(line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def outbox_lines(folder: Path) -> int:
    """Events waiting in the outboxes of ``folder`` (read while the agent waits for its connection)."""
    return sum(len(f.read_text().splitlines()) for f in folder.glob("outbox-*.jsonl"))


def wait_for_notification(listen: Listen, message_id: int) -> None:
    """Notifications arrive in commit order: once the last message's has come, any other would have too."""
    wait_until(lambda: message_id in listen.ids(), what=f"the pg_notify of claude_messages id {message_id}")


# --- 1. the outbox ---------------------------------------------------------------------------------------
def test_research_db_down_for_the_first_part_of_a_run_loses_nothing_duplicates_nothing(
        database_url, research_proxy, tmp_path, capsys, restore_logging):
    proxy, research_url = research_proxy, research_proxy.target_url
    var = tmp_path / "var"
    outbox = var / f"outbox-{DEMO}.jsonl"
    # down from the very start of the run; back at the first attempt once 10 events wait in the outbox
    proxy.up_when(lambda: (lines := outbox_lines(var)) >= 10 and lines)
    with Listen(research_url) as listen:
        code = agent.main(["--force"], env={
            "DATABASE_URL": database_url, "RESEARCH_DATABASE_URL": proxy.url(),
            "CATALYST_VAR_DIR": str(var), "CATALYST_LOG_DIR": str(tmp_path / "logs")})
        out = capsys.readouterr().out
        rows = agent_messages(research_url, DEMO)
        assert rows, out
        wait_for_notification(listen, rows[-1]["id"])

    assert code == 0, out
    assert proxy.refused >= 1 and proxy.came_up_with >= 10, "the first events must have waited in the outbox"
    assert not outbox.exists(), "the outbox must be empty after the run"
    sent = logged_events(tmp_path / "logs")
    assert len(sent) == int(re.search(r"claude_messages \((\d+) event", out).group(1)) > 20
    # every event once, in the order it was sent: by id and by created_at alike
    assert [(r["data"]["event"], r["subject"]) for r in rows] == sent
    assert len({r["idempotency_key"] for r in rows}) == len(rows)
    assert [r["id"] for r in sorted(rows, key=lambda r: (r["created_at"], r["id"]))] == [r["id"] for r in rows]
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)
    # each insert announced once by pg_notify with its id
    assert listen.ids() == [r["id"] for r in rows]
    # trade results reached claude_observations through the same outbox
    exits = [r for r in rows if r["data"]["event"] == "EXIT"]
    observations = query(research_url, "SELECT * FROM claude_observations WHERE agent_id=$1 ORDER BY id", DEMO)
    assert len(observations) == len(exits) == 2
    assert {o["observation_type"] for o in observations} == {"market"}
    assert [json.loads(o["tags"])["reason"] for o in observations] == [e["data"]["reason"] for e in exits]


def test_research_db_down_for_the_first_half_of_a_replay_every_event_arrives_once_in_order(
        database_url, research_proxy, tmp_path, capsys, restore_logging):
    """Six sessions of 09988 replayed with a looser profile; the research database comes up only once the
    outbox holds the events of the first sessions."""
    proxy, research_url = research_proxy, research_proxy.target_url
    outboxes = tmp_path / "var"
    proxy.up_when(lambda: (lines := outbox_lines(outboxes)) >= 30 and lines)
    code = agent.main(
        ["--replay", str(SAMPLES_DIR / "hk"), "--from", "2022-05-30", "--to", "2022-06-07", "--brain", "rules"],
        env={"DATABASE_URL": database_url, "RESEARCH_DATABASE_URL": proxy.url(), "ANTHROPIC_API_KEY": "",
             "CATALYST_VAR_DIR": str(outboxes), "CATALYST_LOG_DIR": str(tmp_path / "logs"),
             "CATALYST_REPORTS_DIR": str(tmp_path / "reports"),
             "CATALYST__SCHEDULE__CYCLE_TIMES": '["09:30", "10:30", "11:00", "13:00", "14:00", "15:00"]'})
    out = capsys.readouterr().out
    [report] = (tmp_path / "reports").glob("replay-*/report.json")
    r = json.loads(report.read_text())
    rows = agent_messages(research_url, r["run"]["agent_id"])

    assert code == 0, out
    assert proxy.refused >= 1 and proxy.came_up_with >= 30, "the first sessions' events must have waited in the outbox"
    assert not list(outboxes.glob("outbox-*.jsonl")), "the outbox must be empty after the replay"
    sent = logged_events(tmp_path / "logs")
    assert len(sent) >= 60, "premise: the database was down for about the first half of the replay's events"
    assert [(row["data"]["event"], row["subject"]) for row in rows] == sent, "every event once, in order"
    assert len({row["idempotency_key"] for row in rows}) == len(rows)
    assert [row["created_at"] for row in rows] == sorted(row["created_at"] for row in rows)
    exits = [row for row in rows if row["data"]["event"] == "EXIT"]
    assert len(exits) == r["n_trades"] >= 2


async def test_a_retry_after_a_lost_commit_acknowledgement_does_not_duplicate(research_proxy, tmp_path):
    proxy, research_url = research_proxy, research_proxy.target_url
    db0 = await Database(research_url, "research").connect()
    await db0.migrate("research")
    await db0.close()
    proxy.up()
    clock = SimClock(datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc))
    db = await Database(proxy.url(), "research").connect(min_size=1, max_size=1)
    notifier = Notifier(db, AGENT, clock, tmp_path / "outbox.jsonl", "run1")
    try:
        with Listen(research_url) as listen:
            proxy.lose_next_commit_ack = True
            await notifier.send(Event(EventType.ENTRY, "ENTRY 00700 100 @ 380", "bought"))
            assert proxy.acks_lost == 1
            assert notifier._outbox_pending(), "an unacknowledged insert must be kept for a retry"
            clock.advance(Notifier.RETRY_SECONDS + 1)
            await notifier.send(Event(EventType.EXIT, "EXIT 00700 stop_loss", "sold",
                                      {"symbol": "HK.00700", "reason": "stop_loss"}))
            rows = await agent_messages_async(research_url)
            await async_wait_until(lambda: rows[-1]["id"] in listen.ids(), what="the EXIT's pg_notify")
            assert [r["subject"] for r in rows] == ["ENTRY 00700 100 @ 380", "EXIT 00700 stop_loss"]
            assert listen.ids() == [r["id"] for r in rows], "one notification per message, none for the retry"
            assert not notifier._outbox_pending()
            assert len(await query_async(research_url, "SELECT id FROM claude_observations")) == 1
    finally:
        await db.close()


async def test_research_db_unreachable_at_start_the_run_goes_on_and_delivers_later(
        database_url, research_proxy, tmp_path, monkeypatch):
    proxy, research_url = research_proxy, research_proxy.target_url
    monkeypatch.setattr(Database, "RECONNECT_SECONDS", 0.0)  # (a run on the simulated clock waits 30 s)
    dbs = await open_databases(database_url, proxy.url(), tmp_path)  # must not raise
    clock = SimClock(datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc))
    notifier = Notifier(dbs.research, AGENT, clock, tmp_path / "outbox.jsonl", "run2")
    try:
        assert not dbs.research.connected
        assert await dbs.trading.fetchval("SELECT count(*) FROM positions") == 0
        await notifier.send(Event(EventType.RISK_WARNING, "first", "while down"))
        assert notifier._outbox_pending()
        proxy.up()
        clock.advance(Notifier.RETRY_SECONDS + 1)
        await notifier.send(Event(EventType.RISK_WARNING, "second", "after it came back"))
        assert [r["subject"] for r in await agent_messages_async(research_url)] == ["first", "second"]
        assert not notifier._outbox_pending()
    finally:
        await dbs.close()


async def test_the_trading_database_stays_mandatory(tmp_path):
    with pytest.raises(DatabaseError, match="trading database"):
        await open_databases(f"postgresql://postgres:pw@127.0.0.1:{free_port()}/nothing", None, tmp_path)


async def test_a_record_the_database_refuses_does_not_block_the_outbox(trading_db, tmp_path):
    clock = SimClock(datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc))
    notifier = Notifier(trading_db, AGENT, clock, tmp_path / "outbox.jsonl", "run3")
    bad = {"table": "claude_messages", "idempotency_key": "k-bad", "from_agent": AGENT, "to_agent": "big_bro",
           "msg_type": "notification", "priority": "normal", "subject": "bad", "body": "", "data": {},
           "reply_to_id": 999999, "created_at": clock.now().isoformat()}  # no such message: FK refused
    notifier._append_outbox(bad)
    await notifier.send(Event(EventType.RISK_WARNING, "good", "after the bad one"))
    assert [r["subject"] for r in await agent_messages_async(trading_db.url)] == ["good"]
    assert not notifier._outbox_pending()
    assert "k-bad" in notifier.rejected_path.read_text()


# --- 2. inbox and control --------------------------------------------------------------------------------
class BigBro:
    """Writes to the agent's inbox as Big Bro does: rows in claude_messages (to_agent=intl_claude)."""

    def __init__(self, url: str, clock) -> None:
        self.url = url
        self.clock = clock
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> "BigBro":
        with external_io():
            self.conn = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *exc) -> None:
        with external_io():
            await self.conn.close()

    async def send(self, msg_type: str, subject: str, priority: str = "normal", body: str = "",
                   data: dict | None = None, at: datetime | None = None) -> int:
        with external_io():
            return await self.conn.fetchval(
                """INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body, data, created_at)
                   VALUES ('big_bro', $1, $2, $3, $4, $5, $6::jsonb, $7) RETURNING id""",
                AGENT, msg_type, priority, subject, body, json.dumps(data or {}), at or self.clock.now())

    async def fetch(self, sql: str, *args) -> list[dict]:
        with external_io():
            return [dict(r) for r in await self.conn.fetch(sql, *args)]


def test_halt_then_resume_then_close_all_during_a_sample_session(database_url, tmp_path, capsys):
    args, settings = hk_settings(database_url, tmp_path / "var", ["--force"])
    profile = settings.profile
    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)
    interval = timedelta(seconds=profile.monitor.check_interval_seconds)

    async def scenario():
        await (await Database(database_url, "research").connect()).migrate("research")
        async with BigBro(database_url, clock) as big_bro:
            halt_id = await big_bro.send("task", "halt", "urgent", "stand down: news pending", {"command": "halt"})
            broker = PaperExchange(feed.series, clock, calendar, profile)
            run = asyncio.get_running_loop().create_task(
                _run(args, settings, calendar, clock, broker, feed.universe, False, session=session))
            await clock.sleep_until(calendar.at_local(session.day, time(12, 30)))  # the lunch break
            resume_id = await big_bro.send("task", "Resume", "high")  # the command in the subject only

            async def opened_or_over():
                return await big_bro.fetch("SELECT * FROM positions WHERE status='open'") or run.done()

            found = await async_wait_until(opened_or_over, timeout=6 * 3600, interval=15,
                                           what="a position opened in the afternoon, or the run's end")
            open_rows = found if isinstance(found, list) else []
            sent_at = clock.now()
            close_id = await big_bro.send("task", "close everything", "urgent", "", {"command": "close_all"})
            code = await run
            return code, halt_id, resume_id, close_id, sent_at, open_rows

    code, halt_id, resume_id, close_id, sent_at, open_rows = clock.run(scenario())
    out = capsys.readouterr().out

    cycles = query(database_url, "SELECT cycle_id, status FROM cycles ORDER BY started_at")
    assert len(cycles) == 2
    halted_cycle, resumed_cycle = cycles[0]["cycle_id"], cycles[1]["cycle_id"]
    # halt: the morning cycle made no entry and said why, in a decision row and a printed line
    skip = query(database_url, "SELECT decision, reasoning FROM decisions WHERE cycle_id=$1", halted_cycle)
    assert [d["decision"] for d in skip] == ["skip"]
    assert "halted by big_bro: stand down: news pending" in skip[0]["reasoning"]
    assert f"cycle {halted_cycle}: no new entries (halted by big_bro: stand down: news pending)" in out
    assert query(database_url, "SELECT * FROM orders WHERE cycle_id=$1", halted_cycle) == []
    assert code == EXIT_REFUSED  # a halted cycle is a refusal for safety (exit 3), the run went on
    # resume: the afternoon cycle traded
    assert len(open_rows) == 1 and open_rows[0]["cycle_id"] == resumed_cycle
    # close_all: flat within one check interval of the message
    position = query(database_url, "SELECT * FROM positions WHERE position_id=$1", open_rows[0]["position_id"])[0]
    assert position["status"] == "closed" and position["exit_reason"] == "close_all"
    assert sent_at <= position["exit_time"] <= sent_at + interval + timedelta(seconds=60)
    # every control answered with a response message in reply, and marked processed
    responses = [r for r in agent_messages(database_url) if r["msg_type"] == "response"]
    assert [(r["reply_to_id"], r["data"]["command"], r["data"]["ok"]) for r in responses] == [
        (halt_id, "halt", True), (resume_id, "resume", True), (close_id, "close_all", True)]
    assert "close_all: 1 of 1 position(s) closed" in out
    tasks = query(database_url, "SELECT id, status, read_at FROM claude_messages WHERE from_agent='big_bro' ORDER BY id")
    assert [(t["id"], t["status"]) for t in tasks] == [(halt_id, "processed"), (resume_id, "processed"),
                                                       (close_id, "processed")]
    # claude_state shows the run's modes and the result
    state = query(database_url, "SELECT * FROM claude_state WHERE agent_id=$1", AGENT)[0]
    assert state["current_mode"] == "sleeping" and state["last_wake_at"] == session.open
    assert state["spend_day"] == session.day and state["status_message"].startswith("run finished: 2 cycle(s), 1 entry")
    assert state["last_action_at"] > state["last_wake_at"]


def test_resume_does_not_lift_the_daily_loss_halt(database_url, tmp_path, capsys):
    args, settings = hk_settings(database_url, tmp_path / "var", ["--force"])
    profile = settings.profile
    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)

    async def scenario():
        db = await Database(database_url, "t").connect()
        await db.migrate("trading")
        await db.migrate("research")
        await db.execute("""INSERT INTO risk_day (agent_id, trading_day, start_equity, halted, halt_reason, halted_at)
                            VALUES ($1, $2, 1000000, true, 'daily loss -2.10% reached the -2% limit', $3)""",
                         AGENT, session.day, session.open)
        await db.close()
        async with BigBro(database_url, clock) as big_bro:
            resume_id = await big_bro.send("task", "resume", "urgent")
            broker = PaperExchange(feed.series, clock, calendar, profile)
            code = await _run(args, settings, calendar, clock, broker, feed.universe, False, session=session)
            return code, resume_id

    code, resume_id = clock.run(scenario())
    out = capsys.readouterr().out
    response = [r for r in agent_messages(database_url) if r["reply_to_id"] == resume_id]
    assert len(response) == 1 and response[0]["data"]["ok"] is False
    assert "not resumed" in response[0]["subject"] + out
    assert query(database_url, "SELECT * FROM orders") == [], "no entry while the daily-loss halt stands"
    assert code == EXIT_REFUSED


async def test_inbox_is_read_most_urgent_first_then_oldest_and_marked_read(trading_db):
    t0 = datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc)
    big_bro = BigBro(trading_db.url, None)
    async with big_bro:
        order = [("low", 0), ("normal", 1), ("urgent", 2), ("high", 3), ("low", -1), ("urgent", 5), ("normal", -2)]
        ids = {}
        for priority, minute in order:
            ids[(priority, minute)] = await big_bro.send("message", f"{priority} {minute}", priority,
                                                         at=t0 + timedelta(minutes=minute))
        await big_bro.send("message", "for the US agent", "urgent", at=t0)
        await big_bro.conn.execute("UPDATE claude_messages SET to_agent='public_claude' WHERE subject='for the US agent'")
    consciousness = Consciousness(trading_db, AGENT)
    now = t0 + timedelta(hours=1)
    inbox = await consciousness.read_inbox(now)
    assert [m.subject for m in inbox] == ["urgent 2", "urgent 5", "high 3", "normal -2", "normal 1", "low -1", "low 0"]
    rows = await trading_db.fetch("SELECT subject, status, read_at FROM claude_messages WHERE to_agent=$1", AGENT)
    assert {(r["status"], r["read_at"]) for r in rows} == {("read", now)}
    assert await consciousness.read_inbox(now) == [], "a message is read once"
    assert await trading_db.fetchval("SELECT status FROM claude_messages WHERE to_agent='public_claude'") == "pending"


def test_control_commands_are_recognised_from_subject_or_data_only_in_tasks():
    def msg(msg_type, subject, data=None):
        return InboxMessage(1, "big_bro", msg_type, "normal", subject, None, data, datetime(2026, 11, 23, tzinfo=timezone.utc))

    assert msg("task", "HALT").control == "halt"
    assert msg("task", "Close All").control == "close_all"
    assert msg("task", "please", {"command": "close-all"}).control == "close_all"
    assert msg("message", "halt").control is None
    assert msg("task", "halt the music?").control is None


# --- 3. claude_state ---------------------------------------------------------------------------------------
async def test_spend_of_one_trading_day_is_zero_on_the_next_without_any_external_reset(trading_db):
    c = Consciousness(trading_db, AGENT)
    monday, tuesday = date(2026, 11, 23), date(2026, 11, 24)
    at = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
    await c.wake(at, monday, Decimal("5"))
    await c.add_spend(Decimal("0.0420"), monday, at)
    await c.add_spend(Decimal("0.0080"), monday, at + timedelta(minutes=5))
    await c.record_error("Broker unreachable: OpenD at 127.0.0.1:11111 refused the connection", at)
    state = await c.state()
    assert state["api_spend_today"] == Decimal("0.0500") and state["error_count_today"] == 1
    # Tuesday: the first thing the agent does is wake (a heartbeat or a trade run): reset by itself
    await c.wake(at + timedelta(days=1), tuesday, Decimal("5"))
    state = await c.state()
    assert state["api_spend_today"] == 0 and state["spend_day"] == tuesday and state["error_count_today"] == 0
    assert state["api_spend_month"] == Decimal("0.0500")
    assert state["last_error"].startswith("Broker unreachable")
    # a cost recorded on a new day without a wake (the run spans midnight) also starts from zero
    await c.add_spend(Decimal("0.0100"), date(2026, 11, 25), at + timedelta(days=2))
    assert (await c.state())["api_spend_today"] == Decimal("0.0100")


def test_a_run_failure_is_counted_in_claude_state_and_sent_urgently(database_url, tmp_path, capsys, restore_logging):
    closed_port = free_port()
    code = agent.main(["--market", "us", "--force"], env={
        "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"), "CATALYST_LOG_DIR": str(tmp_path / "logs"),
        "ALPACA_API_KEY": "PKTESTKEY123", "ALPACA_SECRET_KEY": "secret-alpaca-value-42",
        "ALPACA_BASE_URL": f"http://127.0.0.1:{closed_port}", "ALPACA_DATA_URL": f"http://127.0.0.1:{closed_port}"})
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert "run failed" in err and "secret-alpaca-value-42" not in err
    state = query(database_url, "SELECT * FROM claude_state WHERE agent_id='public_claude'")[0]
    assert state["error_count_today"] == 1 and state["last_error"].startswith("Broker unreachable")
    assert state["current_mode"] == "sleeping"
    failed = query(database_url, "SELECT priority, subject FROM claude_messages WHERE from_agent='public_claude'")
    assert [(m["priority"], m["subject"]) for m in failed] == [("urgent", "Broker unreachable")]
