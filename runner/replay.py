"""``agent.py --replay PATH [--from D] [--to D]``: the whole agent over historical bars, then a report.

One simulated clock and one paper exchange for the whole replay (the exchange keeps cash and
positions from session to session, like an account). Every session in the data, in order:
the paper exchange replays the session's bars up to the close while the run does what cron and
the agent would have done live: wake, reconcile, read the inbox, adopt unwatched positions, the
cycles of the profile's schedule (HK: 09:30 and 13:00, after the opening range), then the
monitors until their positions are closed or the session ends. Account equity is sampled at
every session close.

Isolation: the replay trades under its own agent id (``<agent_id>-replay-<stamp>``), so none of
its rows (positions, orders, cycles, monitor status, api_usage, messages) mixes with the live
agent's, and its lock never blocks the live agent. Alert transports (email, webhook) are off.

The report (``reports/replay-<stamp>/``, or ``CATALYST_REPORTS_DIR``): ``report.json``,
``report.md``, ``report.html`` and ``chart.png``, written by ``replay_report``. Trades are the replay
agent's closed positions, read back from the database; every trading figure in ``report.json`` is computed from its own ``trades`` list
(see ``summarize``), so anyone can check the figures against the list.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import logging
import os
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.clock import Clock, SimClock, WallClock
from config.settings import PROJECT_DIR
from data.bars import BarFileError
from data.calendar import MarketCalendar, Session
from runner.brains import cycle_key
from ops.logsetup import current_log_file
from news.replay_news import PROVIDER, NewsFileError, load_for_replay, mark_catalysts
from core.policy_lab import EntryFill
from runner.replay_report import print_report, write_report
from runner.sessions import NoReplayData, PaperFeed, replay_feed, scheduled_cycle_times
from runner.replay_compare import RANDOM_SEED_DEFAULT, compare_policies
from runner.replay_figures import Watch, build_report
from runner.replay_options import (
    RANGE_ENV, REPORTS_ENV, ReplayUsageError, data_notes, data_summary, parse_day, replay_data_options, unwritable,
)
from store.reports import RunFigures
from store.trading import PositionRecord
from runner.exit_codes import EXIT_OK, EXIT_FAILED, EXIT_USAGE

log = logging.getLogger("catalyst.replay")


# How long after a session's close the monitors may still run before the replay stops them.
MONITOR_GRACE = timedelta(minutes=30)
# Secrets that would send a replay's events to a person (email, webhook): never during a replay.
_ALERT_SECRETS = ("smtp_host", "smtp_port", "smtp_user", "smtp_password", "alert_email_to", "alert_email_from",
                  "alert_webhook_url")


def run_replay(args, settings, calendar: MarketCalendar, *, clock: Clock | None = None,
               env: Mapping[str, str] | None = None, reports_dir: Path | None = None) -> int:
    """Replay ``args.replay`` between ``args.date_from`` and ``args.date_to``; print and write the report.

    Exit 0 done, 1 the replay failed, 2 bad path or dates. ``clock`` only names the run (wall time);
    the replay itself runs on its own simulated clock.
    """
    env = os.environ if env is None else env
    try:
        start, end, feed, news = _read_data(args, settings.profile, calendar)
    except (ReplayUsageError, NoReplayData, BarFileError, NewsFileError, OSError) as exc:  # what the user gave cannot be replayed
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a bug reading good data: a failure of ours, not bad usage
        log.exception("reading the bars failed")
        print(f"replay failed while reading {args.replay}: {type(exc).__name__}: {exc} "
              f"(a bug; the trace is in {current_log_file()})", file=sys.stderr)
        return EXIT_FAILED
    if getattr(args, "live", False):
        print("note: a replay always trades on the paper exchange; --live is ignored", file=sys.stderr)
    started_wall = (clock or WallClock()).now()
    replay_settings = _own_settings(settings, started_wall, args)
    out_root = Path(reports_dir or env.get(REPORTS_ENV) or PROJECT_DIR / "reports").expanduser()
    problem = unwritable(out_root)
    if problem:  # found now, not after the replay has run for minutes
        print(f"replay: the reports folder {out_root} cannot be written ({problem}); "
              f"set {REPORTS_ENV} to a folder you can write", file=sys.stderr)
        return EXIT_USAGE
    _announce(args, feed, replay_settings.profile)
    sim = SimClock(feed.sessions[0].open)
    began = time.perf_counter()
    try:
        result = sim.run(_replay(args, replay_settings, calendar, sim, feed, news))
    except Exception as exc:  # noqa: BLE001 - one line for the trader, the trace for the log
        log.exception("replay failed")
        print(f"replay failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if result.report is None:
        print(f"replay failed: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    report = result.report
    if getattr(args, "compare", False) and not result.error:
        report["policies"], report["regret"], report["compare_note"] = _compare(
            args, replay_settings, calendar, feed, result)
    report["data"] = data_summary(feed, report["session_days"])
    report["run"].update({
        "data_path": str(args.replay), "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None, "profile_file": str(settings.profile_file),
        "started_at": started_wall.isoformat(), "wall_seconds": round(time.perf_counter() - began, 2),
    })
    folder = write_report(report, feed, calendar, out_root, f"replay-{started_wall:%Y%m%dT%H%M%S}",
                          pictures=not env.get(RANGE_ENV))
    print_report(report, folder)
    if result.error:
        print(f"replay failed: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _read_data(args, profile, calendar: MarketCalendar):
    """(from, to, the bars, the news) of the replay, or the usage error that says what is wrong."""
    start = parse_day(getattr(args, "date_from", None), "--from")
    end = parse_day(getattr(args, "date_to", None), "--to")
    if start and end and start > end:
        raise ReplayUsageError(f"--from {start} is after --to {end}; nothing to replay")
    feed = replay_feed(args.replay, profile, calendar, start, end, **replay_data_options(args))
    news = load_for_replay(Path(args.replay), profile.market, calendar.tz)  # news.csv beside the bars
    return start, end, feed, news


def _own_settings(settings, started_wall: datetime, args):
    """Never the live agent: an agent id, lock and records of the replay's own, and no alert channel."""
    profile = settings.profile
    salt = hashlib.sha256(f"{started_wall.isoformat()}:{os.getpid()}:{args.replay}".encode()).hexdigest()[:4]
    suffix = f"-replay-{started_wall:%Y%m%dT%H%M%S}-{salt}"
    return dataclasses.replace(
        settings,
        profile=profile.model_copy(update={"agent_id": profile.agent_id[: 50 - len(suffix)] + suffix}),
        secrets=settings.secrets.model_copy(update={name: None for name in _ALERT_SECRETS}),
        label="replay",
    )


def _announce(args, feed: PaperFeed, profile) -> None:
    sessions = feed.sessions
    print(f"Catalyst replay {profile.market.value}: {len(sessions)} session(s) {sessions[0].day} to {sessions[-1].day} "
          f"from {args.replay} ({', '.join(s.short for s in feed.real_symbols)}"
          + (f"; synthetic: {', '.join(s.short for s in feed.synthetic_symbols)}" if feed.synthetic_symbols else "")
          + f"), simulated clock, agent id {profile.agent_id}")
    for symbol, lot in sorted(feed.assumed_lots.items()):
        print(f"  board lot of {symbol} assumed to be {lot} shares: bar files do not say; set the real one "
              f"in lots.csv (code,lot_size) beside the bars or under paper.lot_sizes in the profile "
              f"(e.g. CATALYST__PAPER__LOT_SIZES='{{\"{symbol.short}\": 500}}')")
    for line in data_notes(feed):
        print(f"  {line}")


def _compare(args, settings, calendar: MarketCalendar, feed: PaperFeed, result: ReplayResult):
    """--compare: the seeded random control replayed, then every policy on the same entries."""
    from runner.brains import RandomEntryBrain

    profile = settings.profile
    seed = RANDOM_SEED_DEFAULT if getattr(args, "seed", None) is None else args.seed
    print(f"  --compare: the random control (seed {seed}): {sum(result.entries_by_cycle.values())} entries "
          "at the agent's cycle times, exited by the monitor ...")
    random_settings = dataclasses.replace(
        settings, profile=profile.model_copy(update={"agent_id": profile.agent_id[:43] + "-random"}))
    random_args = argparse.Namespace(**{**vars(args), "brain": "rules"})
    sim = SimClock(feed.sessions[0].open)
    control = sim.run(_replay(random_args, random_settings, calendar, sim, feed,
                              brain=RandomEntryBrain(profile, result.entries_by_cycle, seed), say=lambda *_: None))
    return compare_policies(profile, calendar, feed, result.entries, result.report, control.entries,
                            (control.report or {}).get("trades", []), control.error, seed)


# --- The replay on the simulated clock -----------------------------------------------------------
@dataclass
class ReplayResult:
    report: dict[str, Any] | None
    error: str | None = None
    entries: list[EntryFill] = field(default_factory=list)
    entries_by_cycle: dict[str, int] = field(default_factory=dict)


async def _replay(args, settings, calendar: MarketCalendar, clock: SimClock, feed: PaperFeed,
                  news: Sequence = (), *, brain=None, say=print) -> ReplayResult:
    """The replay's sessions in order; ``news`` goes to the store first; ``brain`` replaces the profile's
    (the random control); ``say`` prints."""
    from brokers.base import BrokerError
    from brokers.paper import PaperExchange
    from runner.runtime import DatabasesUnreachable, LockHeld, RunFailed, run_lifecycle, run_owner
    from runner.stopping import StopOnSignal

    profile = settings.profile
    broker = PaperExchange(feed.series, clock, calendar, profile)
    owner = run_owner(profile.agent_id, clock.now(), f"replay:{id(broker)}")
    try:
        async with run_lifecycle(args, settings, calendar, clock, broker, feed.universe, False, owner) as rt:
            if brain is not None:
                rt.brain = brain
            news_loaded = await rt.news.keep(news, source=PROVIDER) if news else 0
            try:
                await broker.connect()
            except BrokerError as exc:
                return ReplayResult(None, f"paper exchange: {exc}")
            account = await broker.account()
            equity_curve = [_equity_point("start", feed.sessions[0].open, account, calendar)]
            stuck: Counter[int] = Counter()
            error = None
            replayed: list[Session] = []
            partial = None
            with StopOnSignal() as stop:
                try:
                    error = await _replay_sessions(rt, broker, feed, calendar, clock, profile, equity_curve, stuck,
                                                   replayed, say)
                except asyncio.CancelledError:
                    if not stop.received:
                        raise
                    asyncio.current_task().uncancel()
                    await rt.monitors.cancel()
                    day = feed.sessions[len(replayed)].day if len(replayed) < len(feed.sessions) else feed.sessions[-1].day
                    partial = error = (f"stopped by {stop.signal_name} during the session of {day}; the report "
                                       f"covers the {len(replayed)} session(s) replayed before it")
                stop.finishing = True
            figures = RunFigures(rt.store.db, rt.store.agent_id)
            report, positions = await _report(rt, figures, broker, feed, calendar, profile, equity_curve, stuck,
                                              replayed, news_loaded)
            if partial:
                report["run"]["partial"] = partial
            entries_by_cycle = {cycle_key(calendar.local(started)): n
                                for started, n in await figures.entries_by_cycle_start()}
            return ReplayResult(report, error, _entries(positions), entries_by_cycle)
    except (DatabasesUnreachable, LockHeld, RunFailed) as exc:
        return ReplayResult(None, str(exc))


async def _report(rt, figures: RunFigures, broker, feed: PaperFeed, calendar: MarketCalendar, profile, equity_curve: list,
                  stuck: Counter[int], replayed: list[Session], news_loaded: int,
                  ) -> tuple[dict[str, Any], list[PositionRecord]]:
    positions = await figures.positions()
    report = build_report(
        positions=positions, watches=_watches(rt, stuck),
        monitor_rows={r["position_id"]: r for r in await rt.store.monitor_rows()}, equity_curve=equity_curve,
        usage=await figures.usage_by_purpose(), cycles=await figures.cycle_counts(), sessions=replayed, feed=feed,
        calendar=calendar, profile=profile, brain=rt.brain_name,
        last_prices={str(p.symbol): p.market_price for p in await broker.positions()},
    )
    report["pass_reasons"] = await figures.pass_reasons()
    await mark_catalysts(report, rt.news, news_loaded)
    return report, positions


async def _replay_sessions(rt, broker, feed: PaperFeed, calendar: MarketCalendar, clock: SimClock, profile,
                           equity_curve: list, stuck: Counter[int], replayed: list[Session],
                           say=print) -> str | None:
    """Every session in turn, as cron and the agent would have run it; the error that stopped it, if any."""
    from runner.reconcile import Reconciler
    from runner.control import adopt, obey_controls, wake

    error = None
    for session in feed.sessions:
        if clock.now() < session.open:
            await clock.sleep_until(session.open)
        closed_before = len([o for o in rt.monitors.outcomes if o.closed])
        pnl_before = sum((o.realized_pnl or Decimal(0) for o in rt.monitors.outcomes if o.closed), Decimal(0))
        cycles = scheduled_cycle_times(profile, calendar, session)
        rt.market.universe = feed.trading_in(session, priced_by=cycles[0] if cycles else None)
        driver = broker.start(until=session.close)
        try:
            await wake(rt)
            await rt.monitors.ctx.journal.flush(rt.store, force=True)
            reconciled = await Reconciler(broker, rt.store, rt.notifier, clock, calendar, profile).run()
            if reconciled.changes:
                say(f"  {session.day} reconcile: {reconciled.summary()}")
            await obey_controls(rt)
            await adopt(rt)
            lookback = profile.scan.volume_lookback_sessions
            if feed.has_history_in(calendar.previous_sessions(session.day, lookback)):
                code = await _trade_session(rt, session, stuck, say)
            else:
                code = EXIT_OK
                before = (f"no bars in the {lookback} sessions before this one (a gap in the data)"
                          if feed.has_history_before(session) else "no bars before this session")
                say(f"  {session.day:%Y-%m-%d %a}: {before}, so no volume ratio: a warm-up session, no cycle")
            await driver  # the tape to the close, so the close marks the account
        finally:
            await broker.stop()
        replayed.append(session)
        account = await broker.account()
        equity_curve.append(_equity_point(session.day.isoformat(), session.close, account, calendar))
        outcomes = [o for o in rt.monitors.outcomes if o.closed]
        day_pnl = sum((o.realized_pnl or Decimal(0) for o in outcomes), Decimal(0)) - pnl_before
        say(f"  {session.day:%Y-%m-%d %a}: {len(outcomes) - closed_before} trade(s) closed, "
            f"P&L {profile.currency} {day_pnl:+,.2f}, equity {account.equity:,.2f}")
        if code == EXIT_FAILED:
            error = f"a cycle on {session.day} failed; the replay stopped there (see {current_log_file()})"
            return error
    return error


async def _trade_session(rt, session: Session, stuck: Counter[int], say=print) -> int:
    """runner.cycle.trade_session, but a monitor still running well after the close is stopped and counted."""
    from runner.cycle import trade_session

    budget = (session.close + MONITOR_GRACE - rt.clock.now()).total_seconds()
    try:
        async with asyncio.timeout(budget):
            return await trade_session(rt, session)
    except TimeoutError:
        active = rt.monitors.active()
        log.error("%s: %d monitor(s) still running %s after the close; stopped", session.day, len(active), MONITOR_GRACE)
        say(f"  {session.day}: {len(active)} monitor(s) still running {MONITOR_GRACE} after the close; stopped "
              "(counted as monitor errors)")
        for pid in active:
            stuck[pid] += 1
            rt.monitors.tasks[pid].cancel()
        await asyncio.gather(*(rt.monitors.tasks[pid] for pid in active), return_exceptions=True)
        return EXIT_OK


def _equity_point(label: str, at: datetime, account, calendar: MarketCalendar) -> dict[str, Any]:
    return {"label": label, "time": calendar.local(at).isoformat(), "equity": account.equity, "cash": account.cash}


def _entries(positions: list[PositionRecord]) -> list[EntryFill]:
    return [EntryFill(p.symbol, p.entry_time, p.entry_price, p.quantity, p.entry_fees) for p in positions
            if p.entry_price and p.quantity > 0]


def _watches(rt, stuck: Counter[int]) -> dict[int, Watch]:
    watches: dict[int, Watch] = defaultdict(Watch)
    for o in rt.monitors.outcomes:
        w = watches[o.position_id]
        w.seen = True
        w.haiku_calls += o.haiku_calls
        w.errors += o.errors
        w.reactions.extend(o.stop_reaction_seconds)
    for pid, task in rt.monitors.tasks.items():
        if task.done() and not task.cancelled() and task.exception() is not None:
            watches[pid].errors += 1  # the monitor crashed (logged by the manager)
    for pid, n in stuck.items():
        watches[pid].errors += n
    return dict(watches)
