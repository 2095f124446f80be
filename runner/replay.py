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
from datetime import date, datetime, timedelta
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
from runner.sessions import NoReplayData, PaperFeed, replay_feed
from store.reports import RunFigures
from store.trading import PositionRecord
from runner.exit_codes import EXIT_OK, EXIT_FAILED, EXIT_USAGE

log = logging.getLogger("catalyst.replay")


REPORTS_ENV = "CATALYST_REPORTS_DIR"
# Set by ``--jobs`` for the processes that replay one range each: their reports are merged, not read.
RANGE_ENV = "CATALYST_REPLAY_RANGE"
# How long after a session's close the monitors may still run before the replay stops them.
MONITOR_GRACE = timedelta(minutes=30)
# Secrets that would send a replay's events to a person (email, webhook): never during a replay.
_ALERT_SECRETS = ("smtp_host", "smtp_port", "smtp_user", "smtp_password", "alert_email_to", "alert_email_from",
                  "alert_webhook_url")


class ReplayUsageError(Exception):
    """Bad --from/--to, or no data to replay: exit 2 with this message."""


# --- Entry point -------------------------------------------------------------------------------
def run_replay(args, settings, calendar: MarketCalendar, *, clock: Clock | None = None,
               env: Mapping[str, str] | None = None, reports_dir: Path | None = None) -> int:
    """Replay ``args.replay`` between ``args.date_from`` and ``args.date_to``; print and write the report.

    Exit 0 done, 1 the replay failed, 2 bad path or dates. ``clock`` only names the run (wall time);
    the replay itself runs on its own simulated clock.
    """
    env = os.environ if env is None else env
    if getattr(args, "jobs", 1) > 1:
        from runner.replay_jobs import run_split_replay

        return run_split_replay(args, settings, calendar, env=env, reports_dir=reports_dir)
    wall = clock or WallClock()
    profile = settings.profile
    try:
        start = _parse_day(getattr(args, "date_from", None), "--from")
        end = _parse_day(getattr(args, "date_to", None), "--to")
        if start and end and start > end:
            raise ReplayUsageError(f"--from {start} is after --to {end}; nothing to replay")
        feed = replay_feed(args.replay, profile, calendar, start, end, **replay_data_options(args))
        news = load_for_replay(Path(args.replay), profile.market, calendar.tz)  # news.csv beside the bars
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

    started_wall = wall.now()
    stamp = f"{started_wall:%Y%m%dT%H%M%S}"
    salt = hashlib.sha256(f"{started_wall.isoformat()}:{os.getpid()}:{args.replay}".encode()).hexdigest()[:4]
    suffix = f"-replay-{stamp}-{salt}"
    replay_id = profile.agent_id[: 50 - len(suffix)] + suffix
    replay_settings = dataclasses.replace(
        settings,
        profile=profile.model_copy(update={"agent_id": replay_id}),
        secrets=settings.secrets.model_copy(update={name: None for name in _ALERT_SECRETS}),
        label="replay",
    )
    out_root = Path(reports_dir or env.get(REPORTS_ENV) or PROJECT_DIR / "reports").expanduser()
    problem = _unwritable(out_root)
    if problem:  # found now, not after the replay has run for minutes
        print(f"replay: the reports folder {out_root} cannot be written ({problem}); "
              f"set {REPORTS_ENV} to a folder you can write", file=sys.stderr)
        return EXIT_USAGE
    sessions = feed.sessions
    print(f"Catalyst replay {profile.market.value}: {len(sessions)} session(s) {sessions[0].day} to {sessions[-1].day} "
          f"from {args.replay} ({', '.join(s.short for s in feed.real_symbols)}"
          + (f"; synthetic: {', '.join(s.short for s in feed.synthetic_symbols)}" if feed.synthetic_symbols else "")
          + f"), simulated clock, agent id {replay_id}")
    for symbol, lot in sorted(feed.assumed_lots.items()):
        print(f"  board lot of {symbol} assumed to be {lot} shares: bar files do not say; set the real one "
              f"in lots.csv (code,lot_size) beside the bars or under paper.lot_sizes in the profile "
              f"(e.g. CATALYST__PAPER__LOT_SIZES='{{\"{symbol.short}\": 500}}')")
    for line in data_notes(feed):
        print(f"  {line}")
    sim = SimClock(sessions[0].open)
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
            args, replay_settings, calendar, feed, result, report)
    report["data"] = data_summary(feed, report["session_days"])
    report["run"].update({
        "data_path": str(args.replay), "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None, "profile_file": str(settings.profile_file),
        "started_at": started_wall.isoformat(), "wall_seconds": round(time.perf_counter() - began, 2),
    })
    folder = write_report(report, feed, calendar, out_root, f"replay-{stamp}", pictures=not env.get(RANGE_ENV))
    print_report(report, folder)
    if result.error:
        print(f"replay failed: {result.error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --- What the data held: options, notes and the report's "data" part (issue 15) -------------------------
def replay_data_options(args) -> dict[str, Any]:
    """``--tz`` and ``--min-coverage`` as ``replay_feed`` takes them; a bad value is a usage error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz = getattr(args, "tz", None)
    if tz:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReplayUsageError(f"--tz {tz!r} is not a time zone; expected a name like Asia/Hong_Kong, "
                                   "America/New_York or UTC") from None
    text = getattr(args, "min_coverage", None)
    share = 0.0
    if text:
        try:
            share = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        except ValueError:
            share = -1
        if not 0 <= share <= 1:
            raise ReplayUsageError(f"--min-coverage {text!r} is not a share of a session's bars; "
                                   "expected 0..1 or a percent (0.9 or 90%)")
    return {"tz": tz or None, "min_coverage": share}


def data_notes(feed: PaperFeed) -> list[str]:
    """What the replay makes of the data, one line each: resolution, short sessions, skipped ones."""
    by_step: dict[int, list[str]] = defaultdict(list)
    for symbol in feed.real_symbols:
        by_step[feed.series[symbol].resolution_minutes].append(symbol.short)
    steps = "; ".join(f"{step}-minute ({', '.join(names)})" for step, names in sorted(by_step.items()))
    lines = [f"bars: {steps}" if len(by_step) > 1 else f"bars: {next(iter(by_step), 1)}-minute"]
    short = {d: c for d, c in feed.coverage.items() if c < 1}
    if short:
        lines.append(f"{len(short)} session(s) with missing bars, replayed as they are: "
                     + ", ".join(f"{d} {c:.0%}" for d, c in short.items()))
    if feed.skipped_sessions:
        lines.append(f"{len(feed.skipped_sessions)} session(s) under --min-coverage left out: "
                     + ", ".join(f"{d} {c:.0%}" for d, c in feed.skipped_sessions.items()))
    if feed.other_market_files:
        lines.append(f"not read (bars of the other market): {', '.join(feed.other_market_files)}")
    return lines


def data_summary(feed: PaperFeed, session_days: Sequence[str]) -> dict[str, Any]:
    """The report's ``data``: resolution, each replayed session's coverage, skipped sessions, lots assumed."""
    return {
        "resolution_minutes": {str(s): feed.series[s].resolution_minutes for s in feed.real_symbols},
        "coverage": {d: round(feed.coverage[date.fromisoformat(d)], 4) for d in session_days
                     if date.fromisoformat(d) in feed.coverage},
        "incomplete_sessions": {d.isoformat(): round(c, 4) for d, c in feed.coverage.items() if c < 1},
        "skipped_sessions": {d.isoformat(): round(c, 4) for d, c in feed.skipped_sessions.items()},
        "assumed_lots": {str(s): lot for s, lot in sorted(feed.assumed_lots.items())},
        "other_market_files": list(feed.other_market_files),
    }


# --- --compare: the same entries under each exit policy ----------------------------------------------
RANDOM_SEED_DEFAULT = 1


def _compare(args, settings, calendar: MarketCalendar, feed: PaperFeed, result: ReplayResult,
             report: dict[str, Any]) -> tuple[dict[str, dict], dict[str, dict], str]:
    """The policy table and the regret per exit reason (see ``policy_lab``)."""
    from runner.brains import RandomEntryBrain
    from brokers.paper_tapes import SessionTapes
    from core.policy_lab import index_by_entry, key_of, policy_row, regret_by_reason

    profile = settings.profile
    tapes = SessionTapes(feed.series, calendar, profile)
    agent = _outcomes(report["trades"])
    entries = _closed_entries(result.entries, report["trades"], calendar)
    held = _re_exits(entries, tapes, calendar, profile, backstop=False)
    backstop = _re_exits(entries, tapes, calendar, profile, backstop=True)

    seed = getattr(args, "seed", None)
    seed = RANDOM_SEED_DEFAULT if seed is None else seed
    print(f"  --compare: the random control (seed {seed}): {sum(result.entries_by_cycle.values())} entries "
          "at the agent's cycle times, exited by the monitor ...")
    random_settings = dataclasses.replace(
        settings, profile=profile.model_copy(update={"agent_id": profile.agent_id[:43] + "-random"}))
    random_args = argparse.Namespace(**{**vars(args), "brain": "rules"})
    sim = SimClock(feed.sessions[0].open)
    control = sim.run(_replay(random_args, random_settings, calendar, sim, feed,
                              brain=RandomEntryBrain(profile, result.entries_by_cycle, seed), say=lambda *_: None))
    random_trades = (control.report or {}).get("trades", [])
    random_outcomes = _outcomes(random_trades)
    random_held = _re_exits(_closed_entries(control.entries, random_trades, calendar), tapes, calendar, profile,
                            backstop=False)
    policies = {
        "agent": policy_row(agent),
        "backstop": policy_row(backstop),
        "close": policy_row(held),
        "random": {**policy_row(random_outcomes), "seed": seed},
        "random_close": {**policy_row(random_held), "seed": seed},
    }
    with_catalyst = {(t["symbol"], t["entry_time"]) for t in report["trades"]
                     if (t.get("catalyst") or {}).get("has_catalyst")}
    if with_catalyst:  # what the news was worth: the same rows split by a catalyst at the entry
        for name, rows in (("agent", agent), ("close", held)):
            policies[f"{name}_with_catalyst"] = policy_row([o for o in rows if key_of(o) in with_catalyst])
            policies[f"{name}_without_catalyst"] = policy_row([o for o in rows if key_of(o) not in with_catalyst])
    note = ("agent: the monitor's exits (the main result); backstop: only the broker-side stop "
            f"{profile.backstop.stop_pct}% and target {profile.backstop.target_pct}%, then the time exit; close: held to "
            "the time exit; random: as many entries at the same cycle times in symbols drawn from the session's "
            f"universe (seed {seed}), exited by the monitor; random_close: those entries held to the time exit.")
    if control.error:
        note += f" The random control stopped early: {control.error}."
    return policies, regret_by_reason(agent, index_by_entry(held)), note


def _outcomes(trades: list[dict[str, Any]]):
    """A report's trades as ``policy_lab.Outcome``s, keyed by exit reason (and deciding signal)."""
    from core.policy_lab import Outcome

    return [Outcome(t["symbol"], t["entry_time"], t["net_pnl"], t["net_pnl_pct"], _reason(t)) for t in trades]


def _closed_entries(entries: list[EntryFill], trades: list[dict[str, Any]], calendar: MarketCalendar) -> list[EntryFill]:
    """The entries of the closed trades (an entry still open at the end has no exit to compare)."""
    closed = {(t["symbol"], t["entry_time"]) for t in trades}
    return [e for e in entries if (str(e.symbol), calendar.local(e.time).isoformat()) in closed]


def _reason(trade: dict[str, Any]) -> str:
    """The exit reason, with the deciding technical signal for ``signals`` exits (``signals:volume_dying``)."""
    signal = trade.get("exit_signal")
    return f"{trade['exit_reason']}:{signal}" if signal else trade["exit_reason"]


def _re_exits(entries, tapes, calendar: MarketCalendar, profile, *, backstop: bool):
    from core.policy_lab import barrier_levels, outcome_of, re_exit, time_exit_after

    out = []
    for e in entries:
        session = calendar.session_at(e.time)
        steps = tapes.steps(e.symbol, session.day) if session else None
        if not steps or not steps.times:
            continue
        stop = target = None
        if backstop:
            stop, target = barrier_levels(e.price, e.symbol, session.day, profile)
        x = re_exit(e, steps, time_exit_after(session, e.time, profile), profile, stop=stop, target=target)
        out.append(outcome_of(x, calendar.local))
    return out


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot take a report, or None when it can."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _parse_day(text: str | None, flag: str) -> date | None:
    if text is None or not str(text).strip():
        return None
    try:
        return date.fromisoformat(str(text).strip())
    except ValueError:
        raise ReplayUsageError(f"{flag} {text!r} is not a date; write it as YYYY-MM-DD") from None


# --- The replay on the simulated clock -----------------------------------------------------------
@dataclass
class ReplayResult:
    report: dict[str, Any] | None
    error: str | None = None
    entries: list[EntryFill] = field(default_factory=list)
    entries_by_cycle: dict[str, int] = field(default_factory=dict)


@dataclass
class _Watch:
    """What the monitors of one position reported (a position can be watched by several, one a day)."""

    haiku_calls: int = 0
    errors: int = 0
    reactions: list[float] = field(default_factory=list)
    seen: bool = False


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
            report, positions = await _report(rt, broker, feed, calendar, profile, equity_curve, stuck, replayed,
                                              news_loaded)
            if partial:
                report["run"]["partial"] = partial
            entries_by_cycle = {cycle_key(calendar.local(started)): n
                                for started, n in await RunFigures(rt.store.db, rt.store.agent_id).entries_by_cycle_start()}
            return ReplayResult(report, error, _entries(positions), entries_by_cycle)
    except (DatabasesUnreachable, LockHeld, RunFailed) as exc:
        return ReplayResult(None, str(exc))


async def _report(rt, broker, feed: PaperFeed, calendar: MarketCalendar, profile, equity_curve: list,
                  stuck: Counter[int], replayed: list[Session], news_loaded: int,
                  ) -> tuple[dict[str, Any], list[PositionRecord]]:
    figures = RunFigures(rt.store.db, rt.store.agent_id)
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
    from runner.control import adopt, read_inbox, wake

    error = None
    for session in feed.sessions:
        if clock.now() < session.open:
            await clock.sleep_until(session.open)
        closed_before = len([o for o in rt.monitors.outcomes if o.closed])
        pnl_before = sum((o.realized_pnl or Decimal(0) for o in rt.monitors.outcomes if o.closed), Decimal(0))
        rt.market.universe = feed.trading_in(session)
        driver = broker.start(until=session.close)
        try:
            await wake(rt)
            reconciled = await Reconciler(broker, rt.store, rt.notifier, clock, calendar, profile).run()
            if reconciled.changes:
                say(f"  {session.day} reconcile: {reconciled.summary()}")
            inbox = await read_inbox(rt)
            await adopt(rt)
            lookback = profile.scan.volume_lookback_sessions
            if feed.has_history_in(calendar.previous_sessions(session.day, lookback)):
                code = await _trade_session(rt, session, inbox, stuck, say)
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


async def _trade_session(rt, session: Session, inbox, stuck: Counter[int], say=print) -> int:
    """runner.cycle.trade_session, but a monitor still running well after the close is stopped and counted."""
    from runner.cycle import trade_session

    budget = (session.close + MONITOR_GRACE - rt.clock.now()).total_seconds()
    try:
        async with asyncio.timeout(budget):
            return await trade_session(rt, session, inbox)
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


def _watches(rt, stuck: Counter[int]) -> dict[int, _Watch]:
    watches: dict[int, _Watch] = defaultdict(_Watch)
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


# --- The report ---------------------------------------------------------------------------------
def _num(value: Decimal | float | int | None, places: int = 4) -> float | None:
    return None if value is None else round(float(value), places)


def deciding_signal(monitor_row: dict | None) -> str | None:
    """The technical signal behind a ``signals`` exit: the strongest of the last check, first by precedence."""
    import json

    from signals import PRECEDENCE

    raw = (monitor_row or {}).get("signals") or []
    found = json.loads(raw) if isinstance(raw, str) else raw
    order = {"strong": 0, "moderate": 1, "weak": 2}
    rank = {name.value: i for i, name in enumerate(PRECEDENCE)}
    ranked = sorted((s for s in found if s.get("name") in rank),
                    key=lambda s: (order.get(s.get("strength"), 3), rank[s["name"]]))
    return ranked[0]["name"] if ranked else None


def _trade_row(p: PositionRecord, watch: _Watch | None, monitor_row: dict | None, calendar: MarketCalendar,
               synthetic: set) -> dict[str, Any]:
    haiku = watch.haiku_calls if watch and watch.seen else int((monitor_row or {}).get("haiku_calls") or 0)
    errors = (watch.errors if watch else 0) + (0 if watch and watch.seen else int((monitor_row or {}).get("error_count") or 0))
    row = {
        "position_id": p.position_id,
        "symbol": str(p.symbol),
        "synthetic": p.symbol in synthetic,
        "side": p.side.value,
        "quantity": p.quantity,
        "trading_day": p.trading_day.isoformat(),
        "tier": p.tier,
        "entry_time": calendar.local(p.entry_time).isoformat(),
        "entry_price": _num(p.entry_price),
        "entry_reason": p.entry_reason,
        "stop_price": _num(p.stop_price),
        "target_price": _num(p.target_price),
        "entry_fees": _num(p.entry_fees),
        "haiku_calls": haiku,
        "monitor_errors": errors,
        "stop_reaction_s": [round(s, 3) for s in (watch.reactions if watch else [])],
    }
    if p.status == "closed":
        gross = p.realized_pnl + p.entry_fees + p.exit_fees
        row.update({
            "exit_time": calendar.local(p.exit_time).isoformat() if p.exit_time else None,
            "exit_price": _num(p.exit_price),
            "exit_reason": p.exit_reason,
            "exit_signal": deciding_signal(monitor_row) if p.exit_reason == "signals" else None,
            "exit_type": p.exit_type,
            "exit_fees": _num(p.exit_fees),
            "fees": _num(p.entry_fees + p.exit_fees),
            "gross_pnl": _num(gross),
            "net_pnl": _num(p.realized_pnl),
            "net_pnl_pct": _num(p.realized_pnl_pct),
        })
    else:
        row["status"] = p.status
    return row


def summarize(trades: Sequence[Mapping[str, Any]], open_positions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Every trading figure of the report, from the trade rows alone (the test recomputes them this way).

    win: net P&L > 0, loss: net P&L < 0; ``win_rate`` is a fraction (0..1) of all closed trades;
    ``avg_win_pct`` / ``avg_loss_pct`` average ``net_pnl_pct`` (net of fees, of the entry value)
    over wins / losses; ``stop_reaction_s_p95`` is the 95th percentile (linear) of every
    price-guard exit's reaction time; monitor errors include positions still open at the end.
    """
    import numpy as np

    n = len(trades)
    wins = [t for t in trades if t["net_pnl"] > 0]
    losses = [t for t in trades if t["net_pnl"] < 0]
    reactions = [s for t in trades for s in t["stop_reaction_s"]]
    haiku = sum(t["haiku_calls"] for t in trades)
    by_reason = Counter(t["exit_reason"] for t in trades)
    pnl_by_reason: dict[str, float] = defaultdict(float)
    for t in trades:
        pnl_by_reason[t["exit_reason"]] += t["net_pnl"]
    return {
        "n_trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": round(len(wins) / n, 4) if n else None,
        "avg_win_pct": round(sum(t["net_pnl_pct"] for t in wins) / len(wins), 4) if wins else None,
        "avg_loss_pct": round(sum(t["net_pnl_pct"] for t in losses) / len(losses), 4) if losses else None,
        "gross_pnl": round(sum(t["gross_pnl"] for t in trades), 4),
        "fees": round(sum(t["fees"] for t in trades), 4),
        "net_pnl": round(sum(t["net_pnl"] for t in trades), 4),
        "exits_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "net_pnl_by_reason": {k: round(v, 4) for k, v in sorted(pnl_by_reason.items())},
        "haiku_calls": haiku,
        "haiku_calls_per_trade": round(haiku / n, 4) if n else None,
        "monitor_errors": sum(t["monitor_errors"] for t in [*trades, *open_positions]),
        "stop_reactions": len(reactions),
        "stop_reaction_s_p95": round(float(np.percentile(reactions, 95)), 3) if reactions else None,
    }


def max_drawdown_pct(equities: Sequence[float]) -> float:
    """The largest fall from a running peak, in percent of that peak (0 when equity never fell)."""
    peak, worst = None, 0.0
    for e in equities:
        peak = e if peak is None else max(peak, e)
        if peak and peak > 0:
            worst = max(worst, (peak - e) / peak * 100)
    return round(worst, 4)


def build_report(*, positions: list[PositionRecord], watches: dict[int, _Watch], monitor_rows: dict[int, dict],
                 equity_curve: list[dict[str, Any]], usage: dict[str, dict[str, Any]], cycles: dict[str, int],
                 sessions: list[Session], feed: PaperFeed, calendar: MarketCalendar, profile, brain: str,
                 last_prices: Mapping[str, Decimal | None]) -> dict[str, Any]:
    synthetic = set(feed.synthetic_symbols)
    rows = [_trade_row(p, watches.get(p.position_id), monitor_rows.get(p.position_id), calendar, synthetic)
            for p in positions]
    trades = [r for r in rows if "status" not in r]
    open_positions = [{**r, "last_price": _num(last_prices.get(r["symbol"]))} for r in rows if r.get("status") == "open"]
    not_booked = [r for r in rows if r.get("status") not in (None, "open")]
    curve = [{**pt, "equity": _num(pt["equity"]), "cash": _num(pt["cash"])} for pt in equity_curve]
    start_equity = curve[0]["equity"]
    final_equity = curve[-1]["equity"]
    llm_cost = sum((u["cost_usd"] for u in usage.values()), Decimal(0))
    bars = sum(_bars_in(feed.series[s], sessions) for s in feed.real_symbols + feed.synthetic_symbols)
    figures = summarize(trades, open_positions)
    return {
        "market": profile.market.value,
        "currency": profile.currency,
        "sessions": len(sessions),
        "session_days": [s.day.isoformat() for s in sessions],
        "first_session": sessions[0].day.isoformat() if sessions else None,
        "last_session": sessions[-1].day.isoformat() if sessions else None,
        "symbols": [str(s) for s in feed.real_symbols],
        "synthetic_symbols": [str(s) for s in feed.synthetic_symbols],
        "bars_replayed": bars,
        **figures,
        "starting_equity": start_equity,
        "final_equity": final_equity,
        "return_pct": round((final_equity - start_equity) / start_equity * 100, 4) if start_equity else None,
        "max_drawdown_pct": max_drawdown_pct([pt["equity"] for pt in curve]),
        "equity_curve": curve,
        "llm_cost_usd": _num(llm_cost, 6),
        "llm_usage": {k: {"calls": v["calls"], "cost_usd": _num(v["cost_usd"], 6)} for k, v in sorted(usage.items())},
        "cycles": sum(cycles.values()),
        "cycles_by_status": cycles,
        "trades": trades,
        "open_positions": open_positions,
        "not_booked": not_booked,
        "run": {
            "agent_id": profile.agent_id,
            "brain": brain,
            "universe_seed": profile.paper.universe_seed,
            "starting_cash": _num(profile.paper.starting_cash),
            "cycle_times": [t.strftime("%H:%M") for t in profile.schedule.cycle_times],
        },
    }


def _bars_in(series, sessions: list[Session]) -> int:
    if series.minute.empty or not sessions:
        return 0
    index = series.minute.index
    return int(sum(((index >= s.open) & (index < s.close)).sum() for s in sessions))
