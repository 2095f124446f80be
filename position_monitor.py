"""The executor of one position: the one object that owns a position's life, from the entry
decision to the booked exit, with its status (``ExecutorStatus``) and how it closed (``CloseType``).

    PENDING_ENTRY --fill--> OPEN --exit--> EXITING --booked--> CLOSED
          |                   ^               |
          +--no fill--> FAILED +--exit failed-+   (tried again after retry_delay_seconds)

* Entry (``enter``): the order sent once (``engine.entries``), its fill awaited (``brokers.orders``),
  the position opened from the fill and the broker-side backstop placed (``engine.backstop``).
* Monitoring (``run``), one async task per open position:
  * Price guard: every quote (broker push, or a poll every ``price_poll_seconds`` where there is
    none or the pushes went quiet: ``engine.quotes``) re-checks the rules that cannot wait: stop,
    target, trailing stop, and the STRONG time signals. A STRONG one exits at once, on that quote.
  * Full check every ``check_interval_seconds``: technicals and every signal, then the decision;
    ASK_HAIKU goes to the exit advisor within the consult gate's limits.
  * A failing check is logged, recorded and retried after ``retry_delay_seconds`` (backing off to
    the check interval); nothing that goes wrong in one pass of the loop ends the monitor. Only an
    exit, the end of the session or the loss of the lease (``engine.lease``) ends it.
* Exit (``engine.exits``): on a signal, an advisor's EXIT, or an early stop (``stop_early``:
  close_position, close_all, a halt). An exit that fails (refused order, no fill) is tried again
  after ``retry_delay_seconds``, backing off to a minute, until it succeeds or the session ends.
  No exit acts before the lease and the run's agent lock allow it (``MonitorLease.permits_exit``).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from core.risk import DailyLossAction, RiskState
from brokers.base import MarketClosed, Order, Quote
from consciousness_notify import EventType, Priority
from data.calendar import SessionState
from data.market import MarketData
from engine.backstop import place_backstop
from engine.context import MonitorContext, TechnicalsSource
from engine.day_risk import enforce_daily_loss
from engine.entries import EntryDecision, EntryRefused, open_position, send_entry_order
from engine.exit_advisor import AdviceRequest, ConsultGate
from engine.exits import Booked, CloseType, ExitNotFilled, ExitRequest, PositionExit
from engine.lease import ExitPermission, MonitorLease
from engine.outcome import ExecutorStatus, MonitorOutcome
from engine.quotes import PositionQuotes
from engine.spend import BudgetExhausted
from ops.retry import backoff_seconds
from signals import (
    Decision, ExitAction, ExitReason, PositionView, Signal, Strength, decide, evaluate, pnl_pct,
)
from store.trading import PositionRecord

__all__ = ["CloseType", "EntryAttempt", "ExecutorStatus", "MonitorContext", "MonitorManager", "MonitorOutcome",
           "PositionExecutor", "TechnicalsSource"]

log = logging.getLogger(__name__)


class ExitHeld(Exception):
    """This process may not sell the position now (its lease or the run's agent lock); the message says why."""


class PositionExecutor:
    def __init__(self, ctx: MonitorContext, position: PositionRecord) -> None:
        """The executor of a position that is open (just filled, or adopted from an earlier run)."""
        self.ctx = ctx
        self.position = position
        self.status = ExecutorStatus.OPEN
        self.close_type: CloseType | None = None
        self.gate = ConsultGate.from_settings(ctx.profile.monitor)
        self.high_watermark = position.high_watermark or position.entry_price
        self.last_quote: Quote | None = None
        self.outcome = MonitorOutcome(position.position_id, str(position.symbol), closed=False)
        self.lease = MonitorLease(ctx, position)
        self.exit = PositionExit(ctx, position, self.outcome.stop_reaction_seconds)
        self.quotes = PositionQuotes(ctx, position, self._record_error)
        self.stood_down = False                       # another process may own the position now: never sell
        self._exit_requests: asyncio.Queue[ExitRequest] = asyncio.Queue()
        self._last_signal_set: frozenset[tuple[str, str]] = frozenset()
        self._haiku_cost = Decimal(0)
        self._haiku_limit_told = False
        self._retry_exit: ExitRequest | None = None  # an exit that failed: tried again after the retry delay
        self._failed_checks = 0                       # full checks failed in a row (retry backoff)
        self._failed_exits = 0                        # exits failed in a row (retry backoff)
        self._told_exit_working = False               # Big Bro heard that the exit waits on a thin market

    # --- entry ------------------------------------------------------------------------------
    @classmethod
    async def enter(cls, ctx: MonitorContext, market: MarketData, decision: EntryDecision, price: Decimal,
                    attempt: "EntryAttempt") -> "EntryAttempt":
        """Send the entry and, once filled, open the position and place its backstop. The attempt (the
        caller's, so that it sees how far an entry got when a step raised) says what happened; its
        ``executor`` (status OPEN) is ready to be watched, or None (FAILED)."""
        order, attempt.client_order_id = await send_entry_order(ctx, decision, price)
        attempt.order = order
        if order.filled_quantity == 0:
            attempt.status = ExecutorStatus.FAILED
            return attempt
        try:
            position = await open_position(ctx, market, decision, order, attempt.client_order_id)
        except EntryRefused:
            attempt.status = ExecutorStatus.FAILED
            raise
        attempt.backstop = await place_backstop(ctx, position, order, decision.cycle_id)
        attempt.executor = cls(ctx, await ctx.store.position(position.position_id))  # type: ignore[arg-type]
        attempt.status = ExecutorStatus.OPEN
        return attempt

    # --- early stop -------------------------------------------------------------------------
    def request_exit(self, reason: ExitReason, detail: str, close_type: CloseType = CloseType.COMMAND) -> None:
        self._exit_requests.put_nowait(ExitRequest(reason, detail, close_type))

    async def stop_early(self, reason: ExitReason, detail: str,
                         close_type: CloseType = CloseType.COMMAND) -> MonitorOutcome:
        """Exit at once (close_position, close_all, a halt), through the same exit path and lock."""
        request = ExitRequest(reason, detail, close_type)
        try:
            await self._exit(request, None)
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the monitor keeps trying
            self.outcome.note = f"exit failed: {type(exc).__name__}: {exc}"
            await self._record_error(self.outcome.note)
            if not self.outcome.closed:
                self._retry_exit = request  # the running watch loop (if any) tries it again
        return self.outcome

    # --- monitoring -------------------------------------------------------------------------
    async def run(self) -> MonitorOutcome:
        ctx, pos = self.ctx, self.position
        if not await self.lease.claim(ctx.clock.now()):
            self.outcome.note = "another live process holds this position's monitor lease"
            log.info("%s: %s", pos.symbol, self.outcome.note)
            return self.outcome
        await self._notify(EventType.MONITOR_STARTED, f"Monitoring {pos.symbol.short}",
                           f"Watching {pos.side.value} {pos.quantity} {pos.symbol} from {pos.entry_price}; "
                           f"stop {pos.stop_price}, target {pos.target_price}, backstop {pos.backstop_status}.",
                           {"owner": ctx.owner})
        self.quotes.subscribe()
        try:
            await self._watch()
        finally:
            self.quotes.close()
            await self._release()
        return self.outcome

    # --- the loop ---------------------------------------------------------------------------
    async def _watch(self) -> None:
        ctx = self.ctx
        interval = ctx.profile.monitor.check_interval_seconds
        next_full = ctx.clock.now() + timedelta(seconds=interval)
        next_lease = ctx.clock.now()
        while not (self.outcome.closed or self.stood_down):
            if self.lease.run_stood_down():
                await self._step_down()
                return
            now = ctx.clock.now()
            session = ctx.calendar.session_at(now)
            state = session.state_at(now) if session else SessionState.CLOSED
            if state is not SessionState.OPEN:
                if not await self._wait_for_session(now, session, state):
                    return
                next_full = ctx.clock.now() + timedelta(seconds=interval)
                continue
            try:
                if self._retry_exit is not None:
                    # A failed exit (refused order, no fill) is tried again, not forgotten until the
                    # next signal: a Haiku EXIT or a close_all would otherwise wait 15 minutes or more.
                    request, self._retry_exit = self._retry_exit, None
                    await self._try_exit(request)
                    continue
                if not self._exit_requests.empty():
                    request = self._exit_requests.get_nowait()
                    await self._try_exit(request)
                    continue
                wait = max(0.0, min((next_full - now).total_seconds(), ctx.profile.monitor.price_poll_seconds))
                quote = await self.quotes.next(wait, self.last_quote)
                if quote is not None:
                    await self._price_guard(quote)
                    if self.outcome.closed or self.stood_down:
                        return
                now = ctx.clock.now()
                if now >= next_full:
                    next_full = now + timedelta(seconds=self._next_check_after(await self._full_check()))
                elif now >= next_lease and not await self.lease.renew(now):
                    await self._step_down()
                    return
                if now >= next_lease:
                    next_lease = now + timedelta(seconds=ctx.profile.monitor.lease_seconds / 3)
            except Exception as exc:  # noqa: BLE001 - nothing may kill the watch; record, wait, go on
                await self._record_error(f"monitor loop error: {type(exc).__name__}: {exc}")
                await ctx.clock.sleep(ctx.profile.monitor.retry_delay_seconds)

    def _next_check_after(self, ok: bool) -> float:
        """Seconds to the next full check: the interval, or soon after a failed one (doubling up to
        the interval while it keeps failing)."""
        m = self.ctx.profile.monitor
        if ok:
            self._failed_checks = 0
            return m.check_interval_seconds
        self._failed_checks += 1
        return backoff_seconds(self._failed_checks, m.retry_delay_seconds, m.check_interval_seconds)

    async def _wait_for_session(self, now: datetime, session, state: SessionState) -> bool:
        """Sleep through the lunch break (or until the open); False when the day's trading is over."""
        ctx = self.ctx
        if session is not None and (state is SessionState.LUNCH or now < session.open):
            resume = ctx.calendar.next_open(now)
            # Keep the lease alive while asleep: a lapsed lease lets another run adopt the position
            # and two processes would watch (and sell) it.
            renew_every = ctx.profile.monitor.lease_seconds / 3
            while ctx.clock.now() < resume:
                if not await self.lease.renew(ctx.clock.now()):
                    await self._step_down()
                    return False
                await ctx.clock.sleep(min(renew_every, (resume - ctx.clock.now()).total_seconds()))
            self.quotes.drop_before(resume)  # quotes from before the break are no price to act on
            return True
        self.outcome.note = "session ended with the position open; the broker backstop (if any) stays in place"
        await self._notify(
            EventType.MONITOR_ENDED, f"Monitor ended: {self.position.symbol.short} still open at the close",
            f"{self.position.symbol} is still open after the session; the next run or heartbeat adopts it.",
            {"still_open": True}, Priority.HIGH,
        )
        return False

    # --- checks -----------------------------------------------------------------------------
    def _view(self) -> PositionView:
        p = self.position
        return PositionView(
            symbol=str(p.symbol), side=p.side, quantity=p.quantity, entry_price=p.entry_price,
            entry_time=p.entry_time, stop_price=p.stop_price, target_price=p.target_price,
            high_watermark=self.high_watermark, entry_volume_rate=p.entry_volume_rate,
        )

    def _track_watermark(self, price: Decimal) -> None:
        if self.position.side.value == "long":
            self.high_watermark = max(self.high_watermark, price)
        else:
            self.high_watermark = min(self.high_watermark, price)

    async def _price_guard(self, quote: Quote) -> None:
        ctx = self.ctx
        self.last_quote = quote
        self._track_watermark(quote.price)
        now = ctx.clock.now()
        session = ctx.calendar.session_at(now)
        strong = [
            s for s in evaluate(self._view(), quote.price, now, session, None, ctx.profile.signals,
                                ctx.profile.monitor.hold_through_lunch)
            if s.strength is Strength.STRONG
        ]
        if not strong:
            return
        decision = decide(strong, ctx.profile.signals)
        reason = decision.exit_reason or ExitReason.SIGNALS
        await self._record_check(quote.price, decision, full_check=False)
        await self._try_exit(ExitRequest(reason, decision.reasons[0] + "; " + decision.reasons[1], CloseType.RULE),
                             trigger_time=quote.time)

    async def _full_check(self) -> bool:
        """One full check; False when it failed (recorded; the caller retries it soon). It starts with the
        broker's positions: one sold outside the agent (by hand) is booked with the broker's fills now."""
        ctx, pos = self.ctx, self.position
        await ctx.journal.flush(ctx.store)
        try:
            held = await self.exit.broker_quantity()
        except Exception as exc:  # noqa: BLE001 - a failed check is recorded and retried
            await self._record_error(f"full check failed: the broker's positions: {type(exc).__name__}: {exc}")
            return False
        if held <= 0:
            await self._try_exit(ExitRequest(ExitReason.CLOSED_AT_BROKER, "no longer held at the broker",
                                             CloseType.BROKER))
            return True
        try:
            quote = self.last_quote
            if quote is None or (ctx.clock.now() - quote.time).total_seconds() > ctx.profile.monitor.check_interval_seconds:
                quote = (await ctx.broker.snapshots([pos.symbol]))[pos.symbol].quote
                self.last_quote = quote
                self._track_watermark(quote.price)
            technicals = await ctx.technicals.exit_technicals(pos)
            now = ctx.clock.now()
            session = ctx.calendar.session_at(now)
            signals = evaluate(self._view(), quote.price, now, session, technicals, ctx.profile.signals,
                               ctx.profile.monitor.hold_through_lunch)
            advisor_ready = ctx.advisor is not None and not self.gate.exhausted and await self._budget_allows()
            decision = decide(signals, ctx.profile.signals, advisor_available=advisor_ready)
        except Exception as exc:  # noqa: BLE001 - a failed check is recorded and retried
            await self._record_error(f"full check failed: {type(exc).__name__}: {exc}")
            return False
        if ctx.advisor is not None and self.gate.exhausted and not self._haiku_limit_told and signals:
            self._haiku_limit_told = True
            await self._notify(EventType.HAIKU_LIMIT, f"Haiku cap reached for {pos.symbol.short}",
                               f"{self.gate.calls} consults used; the rules decide from now on.",
                               {"calls": self.gate.calls})
        await self._tell_signal_changes(signals, decision)
        self.outcome.checks += 1
        if decision.action is ExitAction.ASK_HAIKU:
            decision, exit_request = await self._consult(signals, decision, quote.price)
        else:
            exit_request = (
                ExitRequest(decision.exit_reason or ExitReason.SIGNALS, "; ".join(decision.reasons[:2]), CloseType.RULE)
                if decision.action is ExitAction.EXIT else None
            )
        await self._record_check(quote.price, decision, full_check=True)
        if exit_request is not None:
            await self._try_exit(exit_request)
        return True

    async def _budget_allows(self) -> bool:
        if self.ctx.spend is None:
            return True
        try:
            await self.ctx.spend.ensure_room()
            return True
        except BudgetExhausted:
            return False
        except Exception as exc:  # noqa: BLE001 - without the ledger, do not spend; but say why
            await self._record_error(f"the LLM spend ledger could not be read ({type(exc).__name__}: {exc}); "
                                     "no Haiku consult, the rules decide")
            return False

    async def _consult(self, signals: list[Signal], decision: Decision, price: Decimal) -> tuple[Decision, ExitRequest | None]:
        ctx, pos = self.ctx, self.position
        now = ctx.clock.now()
        allowed, why = self.gate.may_consult(now, signals)
        if not allowed:
            log.info("%s: no consult (%s); holding", pos.symbol, why)
            return decision, None
        request = AdviceRequest.build(self._view(), price, now, ctx.calendar.session_at(now), signals)
        advice = await ctx.advisor.advise(request)  # type: ignore[union-attr]
        self.gate.record(now, signals)
        self.outcome.haiku_calls += 1
        if advice.usage is not None and ctx.spend is not None:
            try:
                await ctx.spend.record(advice.usage, ctx.profile.models.consult, "consult",
                                       position_id=pos.position_id, cost=advice.cost_usd)
            except Exception:  # noqa: BLE001
                log.warning("%s: could not record the consult's cost", pos.symbol)
        self._haiku_cost += advice.cost_usd
        await self._notify(
            EventType.HAIKU_DECISION, f"Haiku: {advice.decision.value} {pos.symbol.short}",
            f"{advice.decision.value} ({advice.confidence:.2f}): {advice.reason}"
            + (f" [fallback: {advice.error}]" if not advice.ok else ""),
            {"decision": advice.decision.value, "reason": advice.reason, "confidence": advice.confidence,
             "ok": advice.ok, "error": advice.error, "cost_usd": advice.cost_usd,
             "signals": [str(s) for s in signals], "call": self.gate.calls},
            Priority.HIGH if not advice.ok else None,
        )
        if not advice.ok:
            await self._record_error(f"exit advisor failed, held: {advice.error}")
        if advice.decision is ExitAction.EXIT:
            return decision, ExitRequest(ExitReason.HAIKU, advice.reason, CloseType.HAIKU)
        return decision, None

    async def _tell_signal_changes(self, signals: list[Signal], decision: Decision) -> None:
        current = frozenset((s.name.value, s.strength.value) for s in signals)
        if current == self._last_signal_set:
            return
        self._last_signal_set = current
        if not signals:
            return
        await self._notify(
            EventType.SIGNAL, f"{self.position.symbol.short}: {', '.join(str(s) for s in signals)}",
            "; ".join(s.detail for s in signals) + f" -> {decision.action.value}",
            {"signals": [{"name": s.name.value, "strength": s.strength.value, "value": s.value,
                          "threshold": s.threshold} for s in signals], "decision": decision.action.value},
        )

    # --- exit -------------------------------------------------------------------------------
    async def _try_exit(self, request: ExitRequest, trigger_time: datetime | None = None) -> None:
        try:
            await self._exit(request, trigger_time)
            return
        except (ExitNotFilled, MarketClosed) as exc:  # thin minutes or the break began: no fault, sell on
            await self._tell_exit_working(request, exc)
        except Exception as exc:  # noqa: BLE001 - keep watching; the loop retries the exit
            await self._record_error(f"exit failed ({request.reason.value}): {type(exc).__name__}: {exc}")
        if not self.outcome.closed:
            self._retry_exit = request
        self._failed_exits += 1
        # Retry soon, backing off (to a minute at most) while the broker keeps refusing.
        await self.ctx.clock.sleep(backoff_seconds(self._failed_exits, self.ctx.profile.monitor.retry_delay_seconds, 60.0))

    async def _tell_exit_working(self, request: ExitRequest, exc: ExitNotFilled | MarketClosed) -> None:
        pos = self.position
        log.info("%s: exit (%s) still working: %s", pos.symbol, request.reason.value, exc)
        if self._told_exit_working:
            return
        self._told_exit_working = True
        await self._notify(EventType.EXIT_WORKING, f"Exit working: {pos.symbol.short} ({request.reason.value})",
                           f"{pos.symbol}: {exc}; the monitor keeps selling the rest as the market allows.",
                           {"reason": request.reason.value, "detail": str(exc)})

    async def _exit(self, request: ExitRequest, trigger_time: datetime | None) -> None:
        if self.outcome.closed:
            return
        await self._may_sell()
        self.status = ExecutorStatus.EXITING
        try:
            booked = await self.exit.run(request, last_quote=self.last_quote, trigger_time=trigger_time,
                                         haiku_calls=self.gate.calls)
        finally:
            if self.exit.booked is None:
                self.status = ExecutorStatus.OPEN
        self._closed(booked)

    async def _may_sell(self) -> None:
        """Raises ExitHeld unless this process may sell now; stands the monitor down when it never may."""
        permission = await self.lease.permits_exit(self.ctx.clock.now())
        if permission is ExitPermission.GO:
            return
        if permission is ExitPermission.STAND_DOWN and not self.stood_down:
            self.stood_down = True
            await self._step_down()
        raise ExitHeld(self.outcome.note if self.stood_down else self.ctx.run_lock.unproven)  # type: ignore[union-attr]

    def _closed(self, booked: Booked | None) -> None:
        if booked is None:
            return
        self.status = ExecutorStatus.CLOSED
        self.close_type = booked.close_type
        self.outcome.closed = True
        self.outcome.exit_reason = booked.reason
        self.outcome.exit_price = booked.price
        self.outcome.realized_pnl = booked.realized_pnl

    # --- records ----------------------------------------------------------------------------
    async def _record_check(self, price: Decimal, decision: Decision, full_check: bool, error: str | None = None) -> None:
        ctx, pos = self.ctx, self.position
        try:
            await ctx.store.record_check(
                pos.position_id, owner=ctx.owner, now=ctx.clock.now(), lease_seconds=ctx.profile.monitor.lease_seconds,
                last_price=price, pnl_pct=pnl_pct(self._view(), price).quantize(Decimal("0.0001")),
                high_watermark=self.high_watermark,
                signals=[{"name": s.name.value, "strength": s.strength.value, "detail": s.detail} for s in decision.signals],
                decision=decision.action.value, haiku_calls=self.gate.calls, haiku_cost_usd=self._haiku_cost,
                error=error, full_check=full_check,
            )
            if full_check:
                await ctx.store.update_high_watermark(pos.position_id, self.high_watermark)
        except Exception as exc:  # noqa: BLE001 - the trading database hiccuped; keep watching
            self.outcome.errors += 1
            log.warning("%s: could not record the check: %s", pos.symbol, exc)

    async def _step_down(self) -> None:
        """Another process took the position over (our lease had lapsed), or may have (the lease
        could not be renewed in time): stop, so that only one monitor ever sells it."""
        pos = self.position
        if self.lease.lost_because is not None:
            self.outcome.note = f"{self.lease.lost_because}; stopped watching so that no two processes sell it"
            await self._record_error(self.outcome.note)
            await self._notify(EventType.MONITOR_ENDED, f"Monitor stopped: {pos.symbol.short} lease lost",
                               f"{pos.symbol}: {self.outcome.note}. The next run or heartbeat adopts it.",
                               {"lease_lost": True, "owner": self.ctx.owner}, Priority.HIGH)
            return
        self.outcome.note = "another process holds this position's monitor lease now; stopped watching"
        log.warning("%s: %s", pos.symbol, self.outcome.note)
        await self._notify(EventType.MONITOR_ENDED, f"Monitor handed over: {pos.symbol.short}",
                           f"{pos.symbol} is watched by another process now; this one stopped.",
                           {"lease_lost": True, "owner": self.ctx.owner}, Priority.HIGH)

    async def _record_error(self, message: str) -> None:
        ctx, pos = self.ctx, self.position
        self.outcome.errors += 1
        log.warning("%s monitor: %s", pos.symbol, message)
        try:
            await ctx.store.record_check(
                pos.position_id, owner=ctx.owner, now=ctx.clock.now(), lease_seconds=ctx.profile.monitor.lease_seconds,
                last_price=self.last_quote.price if self.last_quote else None, pnl_pct=None,
                high_watermark=self.high_watermark, signals=[], decision=None, haiku_calls=self.gate.calls,
                haiku_cost_usd=self._haiku_cost, error=message[:1000], full_check=False,
            )
        except Exception:  # noqa: BLE001
            pass
        await self._notify(EventType.MONITOR_ERROR, f"Monitor error on {pos.symbol.short}", message, {"error": message})

    async def _release(self) -> None:
        pos = self.position
        await self.lease.release()
        if self.outcome.closed:
            await self._notify(EventType.MONITOR_ENDED, f"Monitor ended: {pos.symbol.short} closed",
                               f"{pos.symbol} closed ({self.outcome.exit_reason}) after {self.outcome.checks} full "
                               f"check(s) and {self.gate.calls} Haiku consult(s).",
                               {"checks": self.outcome.checks, "haiku_calls": self.gate.calls,
                                "errors": self.outcome.errors})

    async def _notify(self, kind: EventType, subject: str, body: str, data: dict, priority: Priority | None = None) -> None:
        await self.ctx.tell(self.position, kind, subject, body, data, priority)

@dataclass
class EntryAttempt:
    """What became of an entry decision: the final entry order, the backstop, and the executor that
    owns the position from here on (None when nothing filled)."""

    decision: EntryDecision
    status: ExecutorStatus
    client_order_id: str = ""
    order: Order | None = None
    backstop: str | None = None
    executor: PositionExecutor | None = None


class MonitorManager:
    """The run's position executors: starts one monitoring task per open position, stops one early on
    a command, and knows which are running."""

    def __init__(self, ctx: MonitorContext, keep_trying: bool = True) -> None:
        self.ctx = ctx
        self.keep_trying = keep_trying  # a close that fails is retried by a monitor of this run
        self.monitors: dict[int, PositionExecutor] = {}
        self.tasks: dict[int, asyncio.Task[MonitorOutcome]] = {}
        self.outcomes: list[MonitorOutcome] = []

    def start(self, position: PositionRecord) -> bool:
        """Watch a position that is open (adopted, or reconciled): a new executor for it. Not one whose
        exit is booked in the exit journal and not yet in the database: it is sold."""
        if position.position_id in self.ctx.journal.closing():
            return False
        return self.watch(PositionExecutor(self.ctx, position))

    def watch(self, executor: PositionExecutor) -> bool:
        pid = executor.position.position_id
        if pid in self.tasks and not self.tasks[pid].done():
            return False
        self.monitors[pid] = executor
        task = asyncio.get_running_loop().create_task(executor.run(), name=f"monitor-{executor.position.symbol}")
        task.add_done_callback(lambda t, pid=pid: self._finished(pid, t))
        self.tasks[pid] = task
        return True

    def _finished(self, position_id: int, task: asyncio.Task[MonitorOutcome]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("monitor %s crashed: %r", position_id, task.exception())
            return
        self.outcomes.append(task.result())

    async def close_now(self, position: PositionRecord, reason: ExitReason, detail: str) -> MonitorOutcome:
        """close_position, close_all, a halt: the position's executor stops early (a new one where no
        executor of this run is watching it). A close that does not complete is kept: the executor is
        watched from here on (``keep_trying``), and its loop sells until the position is flat or the
        session ends."""
        executor = self.monitors.get(position.position_id)
        if executor is not None and executor.outcome.closed:
            return executor.outcome
        if not self._running(position.position_id):
            executor = PositionExecutor(self.ctx, position)
        outcome = await executor.stop_early(reason, detail)
        if not outcome.closed and self.keep_trying and not self._running(position.position_id):
            self.watch(executor)
        return outcome

    async def close(self, position: PositionRecord, reason: ExitReason, detail: str) -> dict[str, Any]:
        """close_position: what the early stop of one position came to, truthfully."""
        outcome = await self.close_now(position, reason, detail)
        result = {"symbol": str(position.symbol), "closed": outcome.closed, "exit_reason": outcome.exit_reason,
                  "exit_price": outcome.exit_price, "realized_pnl": outcome.realized_pnl}
        if not outcome.closed:
            why = outcome.note or "not closed yet"
            result["error"] = (f"{why}; this run's monitor keeps trying until the position is flat or the session ends"
                               if self._running(position.position_id) else
                               f"{why}; nothing in this run tries again (the next run or heartbeat does)")
        return result

    async def close_all(self, reason: ExitReason, detail: str) -> list[dict[str, Any]]:
        """close_all, a halt, --mode close: every open position stopped early, one result each."""
        closing = self.ctx.journal.closing()
        return [await self.close(position, reason, detail) for position in await self.ctx.store.open_positions()
                if position.position_id not in closing]

    def _running(self, position_id: int) -> bool:
        task = self.tasks.get(position_id)
        return task is not None and not task.done()

    async def check_daily_loss(self, state: RiskState) -> DailyLossAction:
        return await enforce_daily_loss(self.ctx, self.close_all, state)

    def active(self) -> list[int]:
        return [pid for pid, t in self.tasks.items() if not t.done()]

    async def cancel(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
