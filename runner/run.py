"""The trading run for agent.py's modes trade, close and heartbeat: the lifecycle (databases, the
agent lock, the runtime), then the mode, then the summary.

With no broker configured the run uses the paper exchange on a simulated clock: ``--force`` trades
the latest bundled sample session. ``--replay PATH`` is ``runner.replay``, dispatched by agent.py.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import datetime, timedelta
from typing import Mapping

from brokers.base import Broker, BrokerError
from consciousness_notify import Notifier, lost_events_line
from core.clock import Clock, SimClock
from config.settings import Profile
from data.calendar import MarketCalendar, Session, SessionState
from ops.logsetup import current_log_file
from runner.reconcile import Reconciler
from runner.stopping import StopOnSignal
from store.db import Databases
from store.trading import TradingStore
from runner.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_REFUSED
from runner.control import adopt, close_mode, heartbeat_mode, obey_controls, run_failed, sleep_state, stopped_by_signal, wake
from runner.cycle import trade_mode
from runner.runtime import (
    DatabasesUnreachable, LockHeld, RunFailed, Runtime, build_broker, configured_broker, repair_after_stopped_runs,
    run_lifecycle, run_owner, set_aside_earlier_paper_runs, tell_without_databases,
)

log = logging.getLogger("catalyst.run")



def run_agent(args: argparse.Namespace, settings, calendar: MarketCalendar, clock: Clock, env: Mapping[str, str]) -> int:
    profile = settings.profile
    secrets = settings.secrets
    live = bool(args.live and profile.live)
    broker_kind = configured_broker(profile, secrets)
    if broker_kind == "paper":
        if args.live:
            print(f"refused: --live needs a live {profile.market.value} broker, and none is configured "
                  "(see .env.example); nothing was traded", file=sys.stderr)
            return EXIT_REFUSED
        if args.mode == "heartbeat" and not args.force:
            print(f"heartbeat: no {profile.market.value} broker configured (see .env.example); nothing to watch")
            return EXIT_OK
        if args.mode == "trade" and not args.force:
            print(f"no {profile.market.value} broker configured (see .env.example); `--force` trades the bundled "
                  "sample session on the paper exchange")
            return EXIT_OK
        from runner.demo import demo_settings
        from runner.sessions import sample_feed

        settings = demo_settings(settings)  # never the live agent: its own id, lock, inbox and records
        profile = settings.profile
        feed = sample_feed(profile, calendar)
        session = feed.sessions[-1]
        sim = SimClock(session.open)
        return sim.run(_paper_run(args, settings, calendar, sim, feed, session, live))
    now = clock.now()
    if args.mode == "trade" and not args.force and not is_cycle_time(profile, calendar, now):
        if calendar.state(now) is SessionState.OPEN:  # e.g. the other of the two DST cron times
            times = ", ".join(f"{t:%H:%M}" for t in profile.schedule.cycle_times)
            print(f"{profile.market.value}: {calendar.local(now):%Y-%m-%d %H:%M %Z} is not a cycle time "
                  f"(cycles at {times} local). Nothing to do.")
            return EXIT_OK
        print(f"{profile.market.value}: no session open now ({calendar.local(now):%Y-%m-%d %H:%M %Z}); "
              f"next open {calendar.local(calendar.next_open(now)):%a %Y-%m-%d %H:%M %Z}. Nothing to do.")
        return EXIT_OK
    return clock.run(_broker_run(args, settings, calendar, clock, broker_kind, live))


def is_cycle_time(profile: Profile, calendar: MarketCalendar, now: datetime) -> bool:
    """A session is open and now is within the tolerance after one of the profile's cycle times."""
    if calendar.state(now) is not SessionState.OPEN:
        return False
    day = calendar.trading_day(now)
    tolerance = timedelta(minutes=profile.schedule.cycle_start_tolerance_minutes)
    return any(timedelta(0) <= now - calendar.at_local(day, t) <= tolerance for t in profile.schedule.cycle_times)


async def _paper_run(args, settings, calendar, clock: SimClock, feed, session: Session, live: bool) -> int:
    from brokers.paper import PaperExchange

    broker = PaperExchange(feed.series, clock, calendar, settings.profile)
    print(f"Catalyst {settings.profile.market.value} on the paper exchange: sample session {session.day} "
          f"({len(feed.real_symbols)} real symbol(s), {len(feed.synthetic_symbols)} synthetic), simulated clock, "
          f"agent id {settings.profile.agent_id}")
    return await _run(args, settings, calendar, clock, broker, feed.universe, live, session=session,
                      fresh_paper_day=args.mode == "trade")


async def _broker_run(args, settings, calendar, clock, broker_kind: str, live: bool) -> int:
    try:
        broker = build_broker(broker_kind, settings, clock, calendar, live)
    except BrokerError as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return await _run(args, settings, calendar, clock, broker, [], live, session=None)


async def _run(args, settings, calendar: MarketCalendar, clock: Clock, broker: Broker, universe, live: bool,
               session: Session | None, fresh_paper_day: bool = False) -> int:
    with StopOnSignal() as stop:
        try:
            return await _run_until_stopped(args, settings, calendar, clock, broker, universe, live, session, stop,
                                            fresh_paper_day)
        except asyncio.CancelledError:
            if not stop.received:
                raise
            asyncio.current_task().uncancel()  # stopped while starting: nothing was being watched yet
            print(f"stopped by {stop.signal_name} while starting; nothing was traded by this run", file=sys.stderr)
            return EXIT_FAILED


async def _run_until_stopped(args, settings, calendar: MarketCalendar, clock: Clock, broker: Broker, universe,
                             live: bool, session: Session | None, stop: StopOnSignal, fresh_paper_day: bool) -> int:
    profile = settings.profile
    started = clock.now()
    owner = run_owner(profile.agent_id, started, f"{id(broker)}:{started.timestamp()}")

    async def prepare(dbs: Databases) -> None:
        await repair_after_stopped_runs(TradingStore(dbs.trading, profile.agent_id, profile.market), clock)
        if fresh_paper_day and session is not None:
            await set_aside_earlier_paper_runs(dbs.trading, profile, calendar, session, owner)

    try:
        async with run_lifecycle(args, settings, calendar, clock, broker, universe, live, owner, prepare) as rt:
            code = await _mode_until_stopped(args, rt, session, stop)
        return failed_if_events_lost(code, rt.notifier)  # the notifier is closed: nothing more is sent
    except DatabasesUnreachable as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        await tell_without_databases(settings, clock, owner, "Trading database unreachable", str(exc))
        return EXIT_FAILED
    except LockHeld as exc:
        if args.mode == "close":  # asked to flatten now, and nothing was: a failure, not a skip
            print(f"close: {exc.holder}; nothing was closed. Tell that run instead (a close_all task, see README: "
                  "Closing everything in an emergency)", file=sys.stderr)
            return EXIT_FAILED
        print(str(exc))
        return EXIT_OK
    except RunFailed as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _mode_until_stopped(args, rt: Runtime, session: Session | None, stop: StopOnSignal) -> int:
    try:
        return await _mode(args, rt, session)
    except asyncio.CancelledError:
        if not stop.received:
            raise
        asyncio.current_task().uncancel()
        await rt.monitors.cancel()  # each monitor releases its lease as it ends
        await stopped_by_signal(rt, stop.signal_name or "SIGTERM")
        return EXIT_FAILED
    finally:
        stop.finishing = True


def failed_if_events_lost(code: int, notifier: Notifier) -> int:
    """Big Bro's events that neither the research database nor the outbox took fail the run: one line
    on stderr, exit 1 (a refusal keeps its own code). The notifier has alerted out of band already."""
    if not notifier.lost:
        return code
    print(f"run failed: {lost_events_line(len(notifier.lost))} (see {current_log_file()})", file=sys.stderr)
    return EXIT_FAILED if code == EXIT_OK else code


async def _mode(args, rt: Runtime, session: Session | None) -> int:
    await wake(rt)
    await rt.notifier.flush_outbox()
    try:
        await rt.broker.connect()
    except BrokerError as exc:
        await run_failed(rt, "Broker unreachable", str(exc))
        await sleep_state(rt, "broker unreachable")
        return EXIT_FAILED
    paper_driver = None
    if session is not None and hasattr(rt.broker, "start"):
        paper_driver = rt.broker.start(until=session.close)  # type: ignore[attr-defined]
    try:
        code = await _mode_steps(args, rt, session)
        return EXIT_FAILED if rt.run_lock is not None and rt.run_lock.stood_down else code
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: printed, recorded, notified, exit 1
        log.exception("the run failed")
        await run_failed(rt, f"Run failed: {type(exc).__name__}", f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    finally:
        if paper_driver is not None:
            await rt.broker.stop()  # type: ignore[attr-defined]
        await sleep_state(rt)


async def _mode_steps(args, rt: Runtime, session: Session | None) -> int:
    """Every mode: the exit journal into the tables (what an earlier run sold while the database was
    down), reconcile, Big Bro's inbox (controls obeyed), adopt orphaned positions, then the mode."""
    await rt.monitors.ctx.journal.flush(rt.store, force=True)
    report = await Reconciler(rt.broker, rt.store, rt.notifier, rt.clock, rt.calendar, rt.profile).run()
    if report.changes:
        print(f"reconcile: {report.summary()}")
    await obey_controls(rt)
    if args.mode == "close":
        return await close_mode(rt)
    if args.mode == "heartbeat":
        return await heartbeat_mode(rt)
    await adopt(rt)
    return await trade_mode(rt, session)


