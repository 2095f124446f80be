"""The trading run: lock, reconcile, inbox, cycles (tool loop), then the monitors until done.

``run_agent`` is called by ``agent.py`` for the modes trade, close and heartbeat and for
``--replay``. With no broker configured the run uses the paper exchange on a simulated clock:
``--force`` trades the latest bundled sample session, ``--replay PATH`` every session in PATH.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import sys
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Mapping

from brokers.base import Broker, BrokerError
from clock import Clock, SimClock, external_io
from config.settings import Profile
from consciousness_notify import Consciousness, Event, EventType, InboxMessage, Notifier, Priority
from data.calendar import MarketCalendar, Session, SessionState
from data.market import MarketData
from exit_advisor import ExitAdvisor, HaikuAdvisor
from logsetup import current_log_file
from position_monitor import MonitorContext, MonitorManager, MonitorOutcome
from reconcile import Reconciler
from sessions import scheduled_cycle_times
from signals import ExitReason
from spend import BudgetExhausted, SpendLedger
from stopping import StopOnSignal
from store.db import Database, DatabaseError, Databases, agent_lock_key, connect_once, open_databases
from store.trading import TradingStore
from tool_executor import CycleContext, ToolExecutor, close_everything
from workflow import Phase, WorkflowTracker, default_progress_stream

log = logging.getLogger("catalyst.run")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3


class RunFailed(Exception):
    """The run cannot go on; the message says what failed and what to do."""


class LockHeld(Exception):
    pass


# --- What a run is made of -------------------------------------------------------------------------
@dataclass
class Runtime:
    profile: Profile
    clock: Clock
    calendar: MarketCalendar
    dbs: Databases
    store: TradingStore
    notifier: Notifier
    consciousness: Consciousness | None
    broker: Broker
    market: MarketData
    monitors: MonitorManager
    spend: SpendLedger
    brain_name: str
    owner: str
    live: bool
    anthropic_client: Any = None
    halted_by_control: str | None = None
    cycles: list[CycleContext] = field(default_factory=list)
    cycle_results: list[dict[str, Any]] = field(default_factory=list)
    lock_conn: Any = None
    # A brain other than the profile's (the replay's seeded random-entry control); None: by brain_name.
    brain: Any = None
    news: Any = None  # news.service.NewsService


async def take_lock(db: Database, agent_id: str):
    """A session advisory lock held for the whole run; two runs for one agent never trade at once."""
    conn = await connect_once(db.url)
    with external_io():
        got = await conn.fetchval("SELECT pg_try_advisory_lock($1)", agent_lock_key(agent_id))
    if not got:
        with external_io():
            await conn.close()
        raise LockHeld(f"another Catalyst run for {agent_id} is in progress (it holds the agent lock); "
                       "this run exits without trading")
    return conn


def make_cycle_id(market: str, local_time: datetime, owner: str, n: int) -> str:
    suffix = hashlib.sha256(f"{owner}:{n}:{local_time.isoformat()}".encode()).hexdigest()[:6]
    return f"{market.lower()}_{local_time:%Y%m%d_%H%M%S}_{suffix}"


def run_owner(agent_id: str, started: datetime, salt: str) -> str:
    return f"{agent_id}@{started:%Y%m%dT%H%M%S}-{hashlib.sha256(salt.encode()).hexdigest()[:6]}"


# --- Entry point -------------------------------------------------------------------------------------
def run_agent(args: argparse.Namespace, settings, calendar: MarketCalendar, clock: Clock, env: Mapping[str, str]) -> int:
    profile = settings.profile
    secrets = settings.secrets
    live = bool(args.live and profile.live)
    broker_kind = configured_broker(profile, secrets)
    if args.replay is not None:
        from replay import run_replay

        return run_replay(args, settings, calendar, clock=clock, env=env)
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
        from demo import demo_settings
        from sessions import sample_feed

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


def configured_broker(profile: Profile, secrets) -> str:
    return secrets.broker_for(profile.market)


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


def build_broker(kind: str, settings, clock: Clock, calendar: MarketCalendar, live: bool) -> Broker:
    secrets = settings.secrets
    # A broker's pushes arrive in real time, and a simulated clock jumps ahead whenever nothing is
    # running: it cannot say when a push "happened". On a simulated clock the run polls instead
    # (every price_poll_seconds of simulated time, each poll answered at that simulated moment).
    push = not isinstance(clock, SimClock)
    if kind == "moomoo":
        from brokers.moomoo import MoomooBroker

        return MoomooBroker.from_settings(settings.profile, secrets, clock, live=live, quote_push=push)
    from brokers.alpaca import AlpacaBroker

    return AlpacaBroker(secrets, clock, live=live, streaming=push)


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
    secrets = settings.secrets
    started = clock.now()
    owner = run_owner(profile.agent_id, started, f"{id(broker)}:{started.timestamp()}")
    try:
        dbs = await open_databases(*secrets.database_urls(), settings.var_dir)
    except DatabaseError as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        await _tell_without_databases(settings, clock, owner, "Trading database unreachable", str(exc))
        return EXIT_FAILED
    lock_conn = None
    try:
        try:
            lock_conn = await take_lock(dbs.trading, profile.agent_id)
        except LockHeld as exc:
            print(str(exc))
            return EXIT_OK
        await repair_after_stopped_runs(TradingStore(dbs.trading, profile.agent_id, profile.market), clock)
        if fresh_paper_day and session is not None:
            await set_aside_earlier_paper_runs(dbs.trading, profile, calendar, session, owner)
        try:
            rt = await build_runtime(args, settings, calendar, clock, broker, universe, live, dbs, owner)
        except RunFailed as exc:
            print(f"run failed: {exc}", file=sys.stderr)
            return EXIT_FAILED
        rt.lock_conn = lock_conn
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
            await rt.monitors.cancel()
            try:
                await broker.close()
            except Exception:  # noqa: BLE001
                log.warning("broker close failed")
            if rt.anthropic_client is not None:
                with external_io():
                    await rt.anthropic_client.close()
            await rt.notifier.close()  # last attempt at the outbox; held alert summaries go out
    finally:
        if lock_conn is not None:
            with external_io():
                await lock_conn.close()
        await dbs.close()


async def repair_after_stopped_runs(store: TradingStore, clock: Clock) -> None:
    """Put right what a killed run of this agent left: its cycles still 'running' are closed as
    interrupted (said in one line), its monitors whose lease lapsed are marked dead (adoption, in
    the modes that adopt, says which positions it takes over)."""
    cycles, _monitors = await store.repair_after_stopped_runs(clock.now())
    if cycles:
        print(f"repaired: {len(cycles)} cycle(s) left running by a stopped run are marked interrupted "
              f"({', '.join(cycles)})")


async def set_aside_earlier_paper_runs(db: Database, profile: Profile, calendar: MarketCalendar, session: Session,
                                       owner: str) -> None:
    """The paper exchange opens a fresh account on every run, and every `--force` run replays the same
    sample day: the records of earlier runs of that day would contradict it (positions it does not
    hold) and pile up against the day's limits (after a dozen runs, "25 entries today" would refuse
    every entry). They are kept, under their own agent id, and this run starts the day afresh."""
    to_agent = f"{profile.agent_id}-paper-before-{owner.rsplit('-', 1)[-1]}"
    day_start = calendar.at_local(session.day, time(0))
    positions, cycles = await TradingStore(db, profile.agent_id, profile.market).set_aside_day(
        session.day, day_start, day_start + timedelta(days=1), to_agent, keep_halts_starting=CONTROL_HALT)
    if positions or cycles:
        print(f"earlier paper runs of {session.day} ({cycles} cycle(s), {positions} position(s)) are kept under "
              f"agent id {to_agent}; this run starts the day afresh")


async def _tell_without_databases(settings, clock: Clock, owner: str, subject: str, error: str) -> None:
    """A failure before any database is open: the event waits in the outbox; the alerters send it now."""
    from logsetup import RedactSecrets

    profile, secrets = settings.profile, settings.secrets
    try:
        alerters = build_alerters(secrets, clock)
    except RunFailed as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        alerters = []
    notifier = Notifier(None, profile.agent_id, clock, settings.var_dir / f"outbox-{profile.agent_id}.jsonl", owner,
                        alerters=alerters, redact=RedactSecrets(secrets.secret_values()).redact,
                        label=getattr(settings, "label", None))
    await notifier.send(Event(EventType.RUN_FAILED, subject, error, {"error": error}))
    await notifier.close()


async def build_runtime(args, settings, calendar, clock, broker, universe, live, dbs: Databases, owner: str) -> Runtime:
    profile = settings.profile
    secrets = settings.secrets
    store = TradingStore(dbs.trading, profile.agent_id, profile.market)
    from logsetup import RedactSecrets

    redactor = RedactSecrets(secrets.secret_values())
    notifier = Notifier(dbs.research, profile.agent_id, clock, settings.var_dir / f"outbox-{profile.agent_id}.jsonl",
                        owner, alerters=build_alerters(secrets, clock), redact=redactor.redact,
                        label=getattr(settings, "label", None))
    consciousness = Consciousness(dbs.research, profile.agent_id)
    spend = SpendLedger(store, clock, calendar, profile.budget.daily_usd, on_spend=_safe_spend(consciousness))
    market = MarketData(broker, clock, calendar, profile, universe)
    brain_name = args.brain or ("claude" if secrets.anthropic_api_key else "rules")
    client = None
    advisor: ExitAdvisor | None = None
    if brain_name == "claude":
        if not secrets.anthropic_api_key:
            raise RunFailed("--brain claude needs ANTHROPIC_API_KEY (see .env.example)")
        import anthropic

        client = anthropic.AsyncAnthropic(api_key=secrets.anthropic_api_key.get_secret_value(),
                                          base_url=secrets.anthropic_base_url or None,
                                          max_retries=0)  # retried by the brain on the run's clock (brains.py)
        advisor = HaikuAdvisor(client, profile.models.consult, profile.monitor.haiku_timeout_seconds)
    monitor_ctx = MonitorContext(broker=broker, technicals=market, store=store, notifier=notifier, clock=clock,
                                 calendar=calendar, profile=profile, owner=owner, advisor=advisor, spend=spend, live=live)
    from news.build import build_news

    # A simulated clock (a replay, the sample session) is in the past: the providers know only
    # today's news, so its news comes from the replay's news.csv alone.
    news = build_news(profile, secrets, clock, dbs.trading, broker, with_providers=not isinstance(clock, SimClock))
    return Runtime(profile, clock, calendar, dbs, store, notifier, consciousness, broker, market,
                   MonitorManager(monitor_ctx), spend, brain_name, owner, live, anthropic_client=client, news=news)


def _safe_spend(consciousness: Consciousness):
    async def on_spend(amount: Decimal, day: date, at: datetime) -> None:
        await consciousness.add_spend(amount, day, at)
    return on_spend


def build_alerters(secrets, clock) -> list:
    try:
        from alerts import build_alerters as build
    except ImportError as exc:  # never silently without urgent alerts: the run does not start
        raise RunFailed(f"urgent alerts cannot be sent: alerts.py does not import ({type(exc).__name__}: {exc}); "
                        "reinstall the requirements (make test)") from None
    return build(secrets, clock)


# --- Modes ---------------------------------------------------------------------------------------------
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
        return await _mode_steps(args, rt, session)
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: printed, recorded, notified, exit 1
        log.exception("the run failed")
        await run_failed(rt, f"Run failed: {type(exc).__name__}", f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    finally:
        if paper_driver is not None:
            await rt.broker.stop()  # type: ignore[attr-defined]
        await sleep_state(rt)


async def _mode_steps(args, rt: Runtime, session: Session | None) -> int:
    """Every mode: reconcile, Big Bro's inbox (controls obeyed), adopt orphaned positions, then the mode."""
    report = await Reconciler(rt.broker, rt.store, rt.notifier, rt.clock, rt.calendar, rt.profile).run()
    if report.changes:
        print(f"reconcile: {report.summary()}")
    inbox = await read_inbox(rt)
    if args.mode == "close":
        return await close_mode(rt)
    if args.mode == "heartbeat":
        return await heartbeat_mode(rt)
    await adopt(rt)
    return await trade_mode(rt, session, inbox)


async def run_failed(rt: Runtime, subject: str, error: str) -> None:
    """A run failure: printed (redacted), counted in claude_state, and an urgent event (alerted)."""
    error = rt.notifier.redact(error)
    print(f"run failed: {error}", file=sys.stderr)
    await rt.notifier.send(Event(EventType.RUN_FAILED, subject, error, {"error": error}))
    await record_error(rt, f"{subject}: {error}")


async def stopped_by_signal(rt: Runtime, name: str) -> None:
    """After SIGTERM or SIGINT: say what is left open at the broker and who picks it up. Urgent (and alerted)
    when a position is left without a broker-side backstop: nothing protects it until a heartbeat
    or a run adopts it."""
    try:
        still_open = await rt.store.open_positions()
    except Exception as exc:  # noqa: BLE001 - the message goes out even when the database does not answer
        log.warning("could not list the open positions after %s: %s", name, type(exc).__name__)
        still_open = []
    unprotected = [p for p in still_open if p.backstop_status not in ("placed", "bracket")]
    listed = "; ".join(f"{p.symbol} {p.quantity} (backstop: {p.backstop_status})" for p in still_open) or "none"
    body = (f"Stopped by {name}. Open positions left at the broker: {listed}. Their monitor leases are released: "
            "the next heartbeat or trade run adopts them; `agent.py --mode close` flattens them.")
    print(f"stopped by {name}: {len(still_open)} open position(s) left at the broker ({listed}); "
          "the next heartbeat or run adopts them", file=sys.stderr)
    await rt.notifier.send(Event(
        EventType.RUN_STOPPED, f"Run stopped by {name}: {len(still_open)} position(s) left open", body,
        {"signal": name, "open_positions": [p.position_id for p in still_open],
         "without_backstop": [p.position_id for p in unprotected]},
        Priority.URGENT if unprotected else Priority.HIGH))
    await record_error(rt, f"stopped by {name}")
    await sleep_state(rt, f"stopped by {name}; {len(still_open)} position(s) left open")


async def record_error(rt: Runtime, error: str) -> None:
    if rt.consciousness is None:
        return
    try:
        await rt.consciousness.record_error(rt.notifier.redact(error), rt.clock.now())
    except Exception as exc:  # noqa: BLE001 - Big Bro's database is optional for trading
        log.warning("could not record the error in claude_state: %s", type(exc).__name__)


async def set_mode(rt: Runtime, mode: str, status: str | None = None) -> None:
    """claude_state: mode (awake, trading, monitoring, sleeping), last action, status message."""
    if rt.consciousness is None:
        return
    try:
        await rt.consciousness.set_mode(mode, rt.clock.now(), rt.notifier.redact(status) if status else None)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not update claude_state: %s", type(exc).__name__)


async def wake(rt: Runtime) -> None:
    if rt.consciousness is None:
        return
    try:
        now = rt.clock.now()
        await rt.consciousness.wake(now, rt.calendar.trading_day(now), rt.profile.budget.daily_usd)
    except Exception as exc:  # noqa: BLE001 - Big Bro's database is optional for trading
        log.warning("could not mark the agent awake: %s", type(exc).__name__)


async def sleep_state(rt: Runtime, status: str | None = None) -> None:
    outcomes = rt.monitors.outcomes
    closed = [o for o in outcomes if o.closed]
    entries = sum(c["entries"] for c in rt.cycle_results)
    await set_mode(rt, "sleeping", status or (
        f"run finished: {len(rt.cycle_results)} cycle(s), {entries} entr{'y' if entries == 1 else 'ies'}, "
        f"{len(closed)} exit(s), {len(outcomes) - len(closed)} position(s) left open"))


async def read_inbox(rt: Runtime) -> list[InboxMessage]:
    """Big Bro's pending messages, in priority order; control tasks are obeyed and answered."""
    if rt.consciousness is None:
        return []
    try:
        messages = await rt.consciousness.read_inbox(rt.clock.now())
    except Exception as exc:  # noqa: BLE001
        log.warning("could not read the inbox: %s", type(exc).__name__)
        return []
    for message in messages:
        log.info("message from %s (%s, %s): %s", message.from_agent, message.priority, message.msg_type, message.subject)
        if message.control:
            await obey(rt, message)
    return messages


CONTROL_HALT = "halted by "  # how a halt from a control message starts its reason (resume lifts only these)


async def obey(rt: Runtime, message: InboxMessage) -> None:
    """Carry out ``halt`` (no new entries today), ``resume`` (lift such a halt; never the daily-loss
    halt) or ``close_all`` (flatten now), and answer with a ``response`` message (reply_to_id set)."""
    now = rt.clock.now()
    day = rt.calendar.trading_day(now)
    command = message.control
    ok = True
    try:
        account = await rt.broker.account()
        risk_day = await rt.store.ensure_risk_day(day, account.equity)
        if command == "halt":
            reason = rt.notifier.redact(f"{CONTROL_HALT}{message.from_agent}: {message.body or message.subject}")[:500]
            await rt.store.set_halt(day, True, reason, now)
            answer = "halted: no new entries until resumed or the trading day ends"
        elif command == "resume":
            current = risk_day.get("halt_reason") or ""
            if risk_day.get("halted") and not current.startswith(CONTROL_HALT):
                ok = False
                answer = f"not resumed: the halt is not a control halt and stays for the day ({current})"
            else:
                await rt.store.set_halt(day, False, None, now)
                answer = "resumed: new entries allowed"
        else:
            results = await close_everything(_control_context(rt), ExitReason.CLOSE_ALL,
                                             f"close_all from {message.from_agent}")
            closed = sum(1 for r in results if r["closed"])
            ok = closed == len(results)
            answer = f"close_all: {closed} of {len(results)} position(s) closed"
            answer += "" if ok else "; the monitors keep trying: " + "; ".join(
                f"{r['symbol']}: {r.get('error')}" for r in results if not r["closed"])
    except Exception as exc:  # noqa: BLE001 - answer Big Bro either way
        log.exception("control %s failed", command)
        ok = False
        answer = f"{command} failed: {type(exc).__name__}: {rt.notifier.redact(str(exc))[:300]}"
    await rt.notifier.send(Event(EventType.CONTROL_RESPONSE, f"{command}: {'done' if ok else 'NOT done'}", answer,
                                 {"command": command, "in_reply_to": message.id, "ok": ok}, Priority.HIGH,
                                 msg_type="response", reply_to_id=message.id))
    try:
        if ok:
            await rt.consciousness.mark_processed(message.id, now)  # type: ignore[union-attr]
        else:  # answered "NOT done" above; the row says so too, never 'read' as if handled
            await rt.consciousness.mark_failed(message.id, now, answer)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - the answer went out; the row's status is what failed
        log.warning("could not mark Big Bro's message %s %s: %s", message.id, "processed" if ok else "failed",
                    type(exc).__name__)
        await record_error(rt, f"Big Bro's {command} (message {message.id}) answered but not marked: {type(exc).__name__}")
    print(f"Big Bro {command}: {answer}")


def _control_context(rt: Runtime) -> CycleContext:
    if rt.cycles:
        return rt.cycles[-1]
    tracker = WorkflowTracker(rt.clock)
    return CycleContext(rt.profile, rt.clock, rt.calendar, rt.broker, rt.market, rt.store, rt.notifier, rt.monitors,
                        tracker, cycle_id=f"control-{rt.owner}", brain=rt.brain_name, live=rt.live)


async def adopt(rt: Runtime) -> int:
    """Start a monitor for every open position whose monitor lease is missing or expired."""
    started = 0
    for position in await rt.store.unwatched_open_positions(rt.clock.now()):
        if rt.monitors.start(position):
            started += 1
    return started


async def close_mode(rt: Runtime) -> int:
    results = await close_everything(_control_context(rt), ExitReason.CLOSE_ALL, "--mode close")
    for r in results:
        print(f"  {r['symbol']}: {'closed at ' + str(r['exit_price']) if r['closed'] else 'NOT closed: ' + str(r.get('error'))}")
    print(f"close: {sum(1 for r in results if r['closed'])} of {len(results)} position(s) closed")
    return EXIT_OK if all(r["closed"] for r in results) else EXIT_FAILED


async def heartbeat_mode(rt: Runtime) -> int:
    """No new entries: adopt open positions whose monitor died (lease expired) and watch them until
    they close or the session ends. One line and exit 0 when there is nothing to do. Nothing is
    adopted during the lunch break or after the close (the next trade run or heartbeat in a session
    does it), so a heartbeat never holds the agent lock over the afternoon's trade run."""
    now = rt.clock.now()
    state = rt.calendar.state(now)
    if state is not SessionState.OPEN:
        held = len(await rt.store.open_positions())
        print(f"heartbeat: {rt.profile.market.value} session {state.value} "
              f"({rt.calendar.local(now):%Y-%m-%d %H:%M %Z}); {held} open position(s); nothing to watch now")
        return EXIT_OK
    adopted = await adopt(rt)
    if not adopted:
        held = len(await rt.store.open_positions())
        print(f"heartbeat: nothing to watch ({held} open position(s), "
              f"{'each watched by a live monitor' if held else 'none open'})")
        return EXIT_OK
    symbols = ", ".join(str(m.position.symbol) for pid, m in rt.monitors.monitors.items() if pid in rt.monitors.active())
    print(f"heartbeat: adopted {adopted} position(s) whose monitor had stopped ({symbols}); "
          "watching until they close or the session ends")
    await supervise(rt)
    for o in rt.monitors.outcomes:
        if o.closed:
            print(f"  EXIT {o.symbol} {o.exit_reason} @ {o.exit_price}: {rt.profile.currency} {o.realized_pnl}")
        else:
            print(f"  OPEN {o.symbol}: {o.note or 'still open'}")
    return EXIT_OK


async def trade_mode(rt: Runtime, session: Session | None, inbox: list[InboxMessage]) -> int:
    """Cycles (after the opening range), then watch the monitors until done.

    On a broker: one cycle now (cron starts the run at a cycle time). On the paper exchange's
    sample session: every cycle of the profile's schedule that day, as cron would have run them.
    """
    code = await trade_session(rt, session, inbox)
    print_summary(rt)
    return code


async def trade_session(rt: Runtime, session: Session | None, inbox: list[InboxMessage]) -> int:
    """The cycles due in ``session`` (or now, on a broker), then the monitors until they end; no summary."""
    code = EXIT_OK
    first = True
    for when in cycle_times(rt, session):
        if when > rt.clock.now():
            await rt.clock.sleep_until(when)
        if rt.calendar.state(rt.clock.now()) is not SessionState.OPEN:
            continue
        if not first:  # a later cycle of the same run: Big Bro may have written meanwhile (e.g. resume)
            inbox = await read_inbox(rt)
        first = False
        outcome = await run_cycle(rt, inbox)
        if outcome == EXIT_REFUSED and len(rt.cycles) > 1:
            outcome = EXIT_OK  # "refused" is about the run's start; a later cycle stopping is a clean end
        code = max(code, outcome)
        inbox = []
        if code == EXIT_FAILED:
            break
    await supervise(rt)
    return code


def cycle_times(rt: Runtime, session: Session | None) -> list[datetime]:
    now = rt.clock.now()
    today = session or rt.calendar.session_at(now)
    if today is None:
        return [now]
    if session is None:
        delay = timedelta(minutes=rt.profile.schedule.opening_range_minutes)
        start = today.open + delay if today.state_at(now) is SessionState.OPEN and now < today.open + delay else now
        return [start]
    return scheduled_cycle_times(rt.profile, rt.calendar, today)


async def run_cycle(rt: Runtime, inbox: list[InboxMessage]) -> int:
    """One trading cycle, recorded from start to finish: its row never stays 'running'."""
    now = rt.clock.now()
    cycle_id = make_cycle_id(rt.profile.market.value, rt.calendar.local(now), rt.owner, len(rt.cycles))
    tracker = WorkflowTracker(rt.clock, default_progress_stream())
    ctx = CycleContext(rt.profile, rt.clock, rt.calendar, rt.broker, rt.market, rt.store, rt.notifier, rt.monitors,
                       tracker, cycle_id, rt.brain_name, rt.live, halted_by_control=rt.halted_by_control, news=rt.news)
    rt.cycles.append(ctx)
    await rt.store.start_cycle(cycle_id, "trade", rt.brain_name, now)
    try:
        return await _cycle_steps(rt, ctx, inbox)
    except BaseException as exc:  # a signal (CancelledError) as well: the row must not stay 'running'
        if not any(r["cycle_id"] == cycle_id for r in rt.cycle_results):
            await _abandon_cycle(rt, ctx, exc)
        raise


async def _abandon_cycle(rt: Runtime, ctx: CycleContext, exc: BaseException) -> None:
    """An unexpected error or a stop ended the cycle: its row says so (the run then fails loudly)."""
    stopped = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
    error = "the run was stopped during the cycle" if stopped else f"{type(exc).__name__}: {exc}"
    try:
        await _record_cycle_end(rt, ctx, "interrupted" if stopped else "failed", None, rt.notifier.redact(error))
    except Exception as again:  # noqa: BLE001 - the original error is the one to report
        log.warning("could not mark cycle %s failed: %s", ctx.cycle_id, type(again).__name__)


async def _cycle_steps(rt: Runtime, ctx: CycleContext, inbox: list[InboxMessage]) -> int:
    from brains import ClaudeBrain, CycleStatus, FatalBrainError, RulesBrain

    cycle_id = ctx.cycle_id
    executor = ToolExecutor(ctx)
    brain = rt.brain or (ClaudeBrain(rt.anthropic_client, rt.profile, rt.spend) if rt.brain_name == "claude"
                         else RulesBrain(rt.profile))
    await set_mode(rt, "trading", f"cycle {cycle_id} ({rt.brain_name} brain)")
    code = EXIT_OK
    try:
        if rt.brain_name == "claude":
            try:
                await rt.spend.ensure_room()
            except BudgetExhausted as exc:
                await rt.notifier.send(Event(EventType.BUDGET, "LLM budget exhausted before the cycle", str(exc),
                                             {"cycle_id": cycle_id}))
                await _finish_cycle(rt, ctx, "budget_stopped", None, str(exc))
                print(f"cycle {cycle_id}: refused, {exc}")
                return EXIT_REFUSED
        state = await executor.risk_state()
        if state.halted:
            await rt.store.log_decision(cycle_id=cycle_id, created_at=rt.clock.now(), decision="skip",
                                        reasoning=f"no new entries: {state.halt_reason}", source=rt.brain_name)
            await _finish_cycle(rt, ctx, "completed", None, None, summary=f"halted: {state.halt_reason}")
            print(f"cycle {cycle_id}: no new entries ({state.halt_reason})")
            return EXIT_REFUSED
        context = render_context(rt, ctx, await _portfolio(executor), inbox, await rt.spend.remaining())
        result = await brain.run_cycle(executor, context)
    except FatalBrainError as exc:
        error = str(exc)
        await rt.notifier.send(Event(EventType.RUN_FAILED, "Claude refused the run: " + error[:120], error,
                                     {"cycle_id": cycle_id}))
        await _finish_cycle(rt, ctx, "failed", None, error)
        await record_error(rt, f"cycle {cycle_id}: {error}")
        print(f"run failed: {rt.notifier.redact(error)}", file=sys.stderr)
        return EXIT_FAILED
    status, error = result.status.value, result.error
    if result.status is CycleStatus.FAILED:
        log.error("cycle %s failed: %s", cycle_id, result.error)
        await record_error(rt, f"cycle {cycle_id} failed: {result.error}")
        print(f"cycle {cycle_id} failed: {rt.notifier.redact(result.error or 'the brain failed')}", file=sys.stderr)
        code = EXIT_FAILED
    outage = ctx.data_outage()
    if outage and result.status is CycleStatus.COMPLETED:
        status, error, code = CycleStatus.FAILED.value, f"market data unavailable: {outage}", EXIT_FAILED
        await market_data_unavailable(rt, ctx, error)
    await _finish_cycle(rt, ctx, status, result, error)
    await executor.check_daily_loss()
    return code


async def market_data_unavailable(rt: Runtime, ctx: CycleContext, error: str) -> None:
    """A cycle that could not see the market: printed, counted, and an urgent event (alerted),
    so that days of "no candidate" are never mistaken for quiet markets."""
    error = rt.notifier.redact(error)
    print(f"cycle {ctx.cycle_id} failed: {error}", file=sys.stderr)
    await rt.notifier.send(Event(
        EventType.DATA_UNAVAILABLE, "Market data unavailable: the cycle could not decide anything",
        f"Cycle {ctx.cycle_id} ({rt.brain_name}): {error}. No entry was considered on real data; check the "
        "broker's market data (quota, permissions, connection).", {"cycle_id": ctx.cycle_id, "error": error}))
    await record_error(rt, f"cycle {ctx.cycle_id}: {error}")


async def _portfolio(executor: ToolExecutor) -> dict[str, Any]:
    from tool_executor import portfolio_summary

    return await portfolio_summary(executor)


def render_context(rt: Runtime, ctx: CycleContext, portfolio: dict[str, Any], inbox: list[InboxMessage],
                   budget_left: Decimal) -> str:
    import json

    now = rt.clock.now()
    local = rt.calendar.local(now)
    lines = [
        f"Now {local:%Y-%m-%d %H:%M %Z} ({rt.profile.market.value}); cycle {ctx.cycle_id}.",
        f"Session: {rt.calendar.state(now).value}; {rt.calendar.minutes_to_close(now) or 0:.0f} trading minutes to the close"
        + (f", {rt.calendar.minutes_to_break(now):.0f} to the lunch break" if rt.calendar.minutes_to_break(now) else "") + ".",
        "Portfolio: " + json.dumps(portfolio, separators=(",", ":"), default=str),
        f"LLM budget left today: USD {budget_left:.4f} of {rt.profile.budget.daily_usd}.",
    ]
    if inbox:
        lines.append("Messages from Big Bro (most urgent first): "
                     + json.dumps([m.for_context() for m in inbox], separators=(",", ":"), default=str))
    lines.append("Run the trading workflow now.")
    return "\n".join(lines)


async def _finish_cycle(rt: Runtime, ctx: CycleContext, status: str, result, error: str | None, summary: str | None = None) -> None:
    ctx.tracker.advance(Phase.LOG)
    ctx.tracker.advance(Phase.COMPLETE)
    tokens, cost = await _record_cycle_end(rt, ctx, status, result, error, summary)
    record = {"cycle_id": ctx.cycle_id, "status": status, "brain": rt.brain_name, "tools": len(ctx.tracker.tools),
              "entries": ctx.trades_executed, "decisions": ctx.decisions_made, "tokens": tokens, "cost_usd": cost,
              "requests": result.requests if result else 0, "error": error}
    rt.cycle_results.append(record)
    no_backstop = [e["symbol"] for e in ctx.entries if e.get("backstop") in ("none", "failed")]
    body = (f"Cycle {ctx.cycle_id} ({rt.brain_name}) {status}: {ctx.trades_executed} entr{'y' if ctx.trades_executed == 1 else 'ies'}, "
            f"{len(ctx.tracker.tools)} tool calls, cost USD {cost:.4f}.")
    if no_backstop:
        body += f" No broker backstop for: {', '.join(no_backstop)}."
    if error:
        body += f" Error: {error}"
    await rt.notifier.send(Event(EventType.CYCLE_SUMMARY, f"Cycle {status}: {ctx.trades_executed} entries", body,
                                 {**record, "entries_detail": ctx.entries, "phases": ctx.tracker.timings(),
                                  "no_backstop": no_backstop}))


async def _record_cycle_end(rt: Runtime, ctx: CycleContext, status: str, result, error: str | None,
                            summary: str | None = None) -> tuple[dict[str, int], Decimal]:
    """The cycle's row finished: status, phases, tools, usage and cost; returns (tokens, cost)."""
    usage = result.usage if result else None
    tokens = {"input": usage.input_tokens, "output": usage.output_tokens, "cache_write": usage.cache_write_tokens,
              "cache_read": usage.cache_read_tokens} if usage else {}
    cost = result.cost_usd if result else Decimal(0)
    await rt.store.finish_cycle(
        ctx.cycle_id, status=status, completed_at=rt.clock.now(), phases=ctx.tracker.timings(),
        tools_called=ctx.tracker.tools, iterations=result.iterations if result else 0, tokens=tokens, cost_usd=cost,
        trades_executed=ctx.trades_executed, decisions_made=ctx.decisions_made,
        summary=summary or (result.final_text[:2000] if result else None), error=error,
    )
    return tokens, cost


async def supervise(rt: Runtime) -> None:
    """Keep the process alive while monitors run: daily-loss checks and Big Bro's controls meanwhile."""
    interval = rt.profile.monitor.check_interval_seconds
    if rt.monitors.active():
        await set_mode(rt, "monitoring", f"watching {len(rt.monitors.active())} position(s)")
    while rt.monitors.active():
        done, _ = await asyncio.wait([rt.monitors.tasks[pid] for pid in rt.monitors.active()], timeout=interval)
        if not rt.monitors.active():
            break
        try:
            await read_inbox(rt)
            if rt.cycles:
                await ToolExecutor(rt.cycles[-1]).check_daily_loss()
        except Exception as exc:  # noqa: BLE001 - supervision must not end the monitors
            log.warning("supervision check failed: %s", exc)


def print_summary(rt: Runtime) -> None:
    outcomes: list[MonitorOutcome] = rt.monitors.outcomes
    cur = rt.profile.currency
    print()
    for c in rt.cycle_results:
        t = c["tokens"]
        llm = (f"{c['requests']} request(s), {t.get('input', 0)} in / {t.get('output', 0)} out tokens "
               f"(cache read {t.get('cache_read', 0)}), USD {Decimal(c['cost_usd']):.4f}") if c["brain"] == "claude" else "no LLM (rules brain)"
        print(f"cycle {c['cycle_id']}: {c['status']}, {c['brain']} brain, {c['tools']} tool calls, "
              f"{c['entries']} entr{'y' if c['entries'] == 1 else 'ies'}; {llm}")
    from data.universe import is_synthetic_symbol
    from instruments import parse_symbol

    def label(symbol: str) -> str:
        return symbol + (" [synthetic]" if is_synthetic_symbol(parse_symbol(symbol)) else "")

    for ctx in rt.cycles:
        for e in ctx.entries:
            print(f"  ENTRY {label(e['symbol'])} {e['filled_quantity']} @ {e['fill_price']} ({e['status']}, backstop {e['backstop']})")
    total = Decimal(0)
    for o in outcomes:
        if o.closed:
            total += o.realized_pnl or Decimal(0)
            pnl = f"{cur} {o.realized_pnl:+,.2f}" if o.realized_pnl is not None else "not booked"
            print(f"  EXIT  {label(o.symbol)} {o.exit_reason} @ {o.exit_price if o.exit_price is None else f'{o.exit_price:.4f}'}: {pnl} "
                  f"({o.checks} check{'' if o.checks == 1 else 's'}, {o.haiku_calls} Haiku)")
        else:
            print(f"  OPEN  {o.symbol}: {o.note or 'still open'}")
    closed = [o for o in outcomes if o.closed and o.realized_pnl is not None]
    wins = sum(1 for o in closed if o.realized_pnl > 0)
    print(f"P&L: realized {cur} {total:+,.2f} over {len(closed)} closed trade(s), {wins} win(s)")
    where = f"embedded PostgreSQL {rt.dbs.embedded.data_dir}" if rt.dbs.embedded else rt.dbs.trading.where
    print(f"Records: {where} (cycles, decisions, orders, positions, monitor_status, api_usage); "
          f"Big Bro: claude_messages ({len(rt.notifier.sent)} event(s)); log: {current_log_file()}")
