"""What a run is made of (``Runtime``) and its lifecycle: the databases, the agent lock, the broker,
the notifier and the brain's client, opened in order and always closed in the reverse order, for the
live run, the sample session and a replay alike (``run_lifecycle``)."""
from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

from brokers.base import Broker
from core.clock import Clock, SimClock, external_io
from config.settings import Profile
from consciousness_notify import Event, EventType, Notifier, Priority
from store.bigbro import Consciousness
from data.calendar import MarketCalendar, Session
from data.market import MarketData
from engine.exit_advisor import ExitAdvisor, HaikuAdvisor
from ops.retry import BestEffort
from position_monitor import MonitorContext, MonitorManager
from runner.brains import Brain, ClaudeBrain, RulesBrain
from engine.run_lock import RunLock
from engine.spend import SpendLedger
from store.db import AgentLock, Database, DatabaseError, Databases, open_databases
from store.journal import ExitJournal
from store.trading import TradingStore
from tool_executor import CycleContext

log = logging.getLogger("catalyst.run")



CONTROL_HALT = "halted by "  # how a halt from a control message starts its reason (resume lifts only these)


class RunFailed(Exception):
    """The run cannot go on; the message says what failed and what to do."""


class LockHeld(Exception):
    def __init__(self, agent_id: str) -> None:
        self.holder = f"another Catalyst run for {agent_id} is in progress (it holds the agent lock)"
        super().__init__(f"{self.holder}; this run exits without trading")


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
    # Who decides: the profile's brain (Claude or the rules), or the replay's seeded random-entry control.
    brain: Brain | None = None
    news: Any = None  # news.service.NewsService
    # Big Bro's side-calls (claude_state, the inbox): a failure is logged and counted, never stops the run.
    side_calls: BestEffort = field(default_factory=lambda: BestEffort(log))
    run_lock: RunLock | None = None  # proven before every entry and exit; stood down once another run has it


async def take_lock(db: Database, agent_id: str) -> AgentLock:
    """A session advisory lock held for the whole run; two runs for one agent never trade at once."""
    lock = await AgentLock.try_take(db.url, agent_id)
    if lock is None:
        raise LockHeld(agent_id)
    return lock


def make_cycle_id(market: str, local_time: datetime, owner: str, n: int) -> str:
    suffix = hashlib.sha256(f"{owner}:{n}:{local_time.isoformat()}".encode()).hexdigest()[:6]
    return f"{market.lower()}_{local_time:%Y%m%d_%H%M%S}_{suffix}"


def run_owner(agent_id: str, started: datetime, salt: str) -> str:
    return f"{agent_id}@{started:%Y%m%dT%H%M%S}-{hashlib.sha256(salt.encode()).hexdigest()[:6]}"


# --- Entry point -------------------------------------------------------------------------------------
def configured_broker(profile: Profile, secrets) -> str:
    return secrets.broker_for(profile.market)


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


async def tell_without_databases(settings, clock: Clock, owner: str, subject: str, error: str) -> None:
    """A failure before any database is open: the event waits in the outbox; the alerters send it now."""
    from ops.logsetup import RedactSecrets

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
    from ops.logsetup import RedactSecrets

    redactor = RedactSecrets(secrets.secret_values())
    notifier = Notifier(dbs.research, profile.agent_id, clock, settings.var_dir / f"outbox-{profile.agent_id}.jsonl",
                        owner, alerters=build_alerters(secrets, clock), redact=redactor.redact,
                        label=getattr(settings, "label", None))
    consciousness = Consciousness(dbs.research, profile.agent_id)
    spend = SpendLedger(store, clock, calendar, profile.budget.daily_usd, on_spend=consciousness.add_spend)
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
    journal = ExitJournal(settings.var_dir / f"exit-journal-{profile.agent_id}.jsonl", profile.agent_id, clock)
    monitor_ctx = MonitorContext(broker=broker, technicals=market, store=store, notifier=notifier, clock=clock,
                                 calendar=calendar, profile=profile, owner=owner, advisor=advisor, spend=spend, live=live,
                                 journal=journal)
    from news.build import build_news

    # A simulated clock (a replay, the sample session) is in the past: the providers know only
    # today's news, so its news comes from the replay's news.csv alone.
    news = build_news(profile, secrets, clock, dbs.trading, broker, with_providers=not isinstance(clock, SimClock))
    brain: Brain = ClaudeBrain(client, profile, spend) if brain_name == "claude" else RulesBrain(profile)
    return Runtime(profile, clock, calendar, dbs, store, notifier, consciousness, broker, market,
                   MonitorManager(monitor_ctx), spend, brain_name, owner, live, anthropic_client=client, brain=brain,
                   news=news)



def build_alerters(secrets, clock) -> list:
    try:
        from ops.alerts import build_alerters as build
    except ImportError as exc:  # never silently without urgent alerts: the run does not start
        raise RunFailed(f"urgent alerts cannot be sent: alerts.py does not import ({type(exc).__name__}: {exc}); "
                        "reinstall the requirements (make test)") from None
    return build(secrets, clock)


def guard_the_lock(rt: Runtime, lock: AgentLock) -> asyncio.Task | None:
    """The run trades only while it proves its agent lock (``engine.run_lock``); a live run also checks
    it every ``lock_check_seconds``, so that a lock lost with its connection is taken again at once.
    Returns that checking task (None on a simulated clock: its entries and exits check the lock)."""
    rt.run_lock = rt.monitors.ctx.run_lock = RunLock(lock, rt.clock, lambda why: stand_down(rt, why))
    if isinstance(rt.clock, SimClock):
        return None
    return asyncio.get_running_loop().create_task(
        rt.run_lock.keep_proving(rt.profile.monitor.lock_check_seconds), name="agent-lock-check")


async def stand_down(rt: Runtime, why: str) -> None:
    """Another run holds the agent lock now: this run says so (one line, Big Bro) and trades no more."""
    line = f"stood down: {why}; this run places no more orders and leaves its positions to that run"
    print(line, file=sys.stderr)
    try:
        open_ids = sorted(rt.monitors.active())
        await rt.notifier.send(Event(EventType.RUN_STOPPED, f"Run stood down: {rt.profile.agent_id} lock lost", line,
                                     {"reason": "agent_lock_lost", "owner": rt.owner, "watched_positions": open_ids},
                                     Priority.URGENT))
    except Exception as exc:  # noqa: BLE001 - the line is printed; standing down must not fail
        log.warning("could not tell Big Bro that the run stood down: %s", exc)


# --- Modes ---------------------------------------------------------------------------------------------


class DatabasesUnreachable(Exception):
    """The trading database could not be opened: the run cannot start."""


@asynccontextmanager
async def run_lifecycle(args, settings, calendar: MarketCalendar, clock: Clock, broker: Broker, universe, live: bool,
                        owner: str, prepare: Callable[[Databases], Awaitable[None]] | None = None,
                        ) -> AsyncIterator[Runtime]:
    """The one lifecycle of every run (the live run, the sample session, a replay): the databases, the
    agent lock, ``prepare`` (repairs a run makes before it starts), the runtime; and on the way out,
    whatever happened, the monitors stopped (each releases its lease), the broker and the brain's client
    closed, the notifier closed (the outbox's last delivery attempt), the lock released, the databases
    closed. Raises DatabasesUnreachable, LockHeld or RunFailed when the run cannot start."""
    try:
        dbs = await open_databases(*settings.secrets.database_urls(), settings.var_dir, settings.secrets.secret_values())
    except DatabaseError as exc:
        raise DatabasesUnreachable(str(exc)) from None
    lock: AgentLock | None = None
    rt: Runtime | None = None
    prover: asyncio.Task | None = None
    try:
        lock = await take_lock(dbs.trading, settings.profile.agent_id)
        if prepare is not None:
            await prepare(dbs)
        rt = await build_runtime(args, settings, calendar, clock, broker, universe, live, dbs, owner)
        prover = guard_the_lock(rt, lock)
        yield rt
    finally:
        if prover is not None:
            prover.cancel()
            await asyncio.gather(prover, return_exceptions=True)
        if rt is not None:
            await rt.monitors.cancel()
            rt.monitors.ctx.orders.close()
            await rt.monitors.ctx.journal.flush(rt.store, force=True)  # what the exits sold, into the tables
        try:
            await broker.close()
        except Exception:  # noqa: BLE001 - closing must not hide why the run ended
            log.warning("broker close failed")
        if rt is not None:
            if rt.anthropic_client is not None:
                with external_io():
                    await rt.anthropic_client.close()
            await rt.notifier.close()  # last attempt at the outbox; held alert summaries go out
        if lock is not None:
            await lock.release()
        await dbs.close()
