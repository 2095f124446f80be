"""`kill <pid>` (SIGTERM) on a run that watches a position: the run stops cleanly instead of dying.

The position stays open at the broker, its monitor lease is released so that the next heartbeat adopts
it at once (not two minutes later), Big Bro is told what was left open, and the run exits 1.
"""
from __future__ import annotations

import asyncio
import os
import signal
from datetime import timedelta

from brokers.paper import PaperExchange
from core.clock import SimClock
from data.calendar import MarketCalendar
from runner.run import EXIT_FAILED, _run
from runner.sessions import sample_feed
from store.db import Database
from store.trading import TradingStore
from tests.helpers import async_wait_until, hk_settings, query

AGENT = "intl_claude"


def test_sigterm_while_a_position_is_watched_leaves_it_for_the_next_heartbeat_and_tells_big_bro(
        database_url, tmp_path, capsys):
    args, settings = hk_settings(database_url, tmp_path / "var", ["--force"])
    profile = settings.profile
    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)
    default_action_taken = []  # were the run's handler missing, this one (not the process's death) would see it
    previous = signal.signal(signal.SIGTERM, lambda *_: default_action_taken.append(True))

    async def scenario():
        broker = PaperExchange(feed.series, clock, calendar, profile)
        run = asyncio.get_running_loop().create_task(
            _run(args, settings, calendar, clock, broker, feed.universe, False, session=session))
        await async_wait_until(lambda: run.done() or broker.positions(), timeout=6 * 3600, interval=5,
                               what="the sample session's first entry")
        assert not run.done(), "premise: the sample session buys something"
        await clock.sleep(60)  # the monitor has started and holds the lease
        os.kill(os.getpid(), signal.SIGTERM)
        code = await run
        db = await Database(database_url, "check").connect()
        try:
            unwatched = await TradingStore(db, AGENT, profile.market).unwatched_open_positions(clock.now())
        finally:
            await db.close()
        return code, await broker.positions(), unwatched

    try:
        code, at_broker, unwatched = clock.run(scenario())
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    err = capsys.readouterr().err

    assert not default_action_taken, "the run must handle SIGTERM itself"
    assert code == EXIT_FAILED
    assert callable(handler_after) and handler_after is not signal.SIG_DFL, "the handler before the run is restored"
    [held] = at_broker
    assert "stopped by SIGTERM: 1 open position(s) left at the broker" in err and str(held.symbol) in err

    # The position is still open in the database, and free for the next heartbeat to adopt right now.
    [position] = query(database_url, "SELECT * FROM positions WHERE agent_id=$1", AGENT)
    assert position["status"] == "open" and position["quantity"] == held.quantity
    assert [p.position_id for p in unwatched] == [position["position_id"]]
    [status] = query(database_url, "SELECT status, lease_expires_at FROM monitor_status WHERE position_id=$1",
                     position["position_id"])
    assert status["status"] == "stopped" and status["lease_expires_at"] is None

    # Big Bro hears what was left and who picks it up; the paper exchange holds a backstop stop, so "high".
    [stopped] = query(database_url, "SELECT priority, subject, body, data FROM claude_messages "
                                    "WHERE from_agent=$1 AND subject LIKE 'Run stopped by SIGTERM%'", AGENT)
    assert stopped["priority"] == "high" and "1 position(s) left open" in stopped["subject"]
    assert str(held.symbol) in stopped["body"] and "--mode close" in stopped["body"]
    state = query(database_url, "SELECT current_mode, status_message, last_error FROM claude_state WHERE agent_id=$1", AGENT)[0]
    assert state["current_mode"] == "sleeping" and state["status_message"].startswith("stopped by SIGTERM")
    assert clock.now() < session.close - timedelta(hours=1), "the run stopped at once, not at the close"
