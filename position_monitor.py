"""One async task per open position, from the entry fill until the position is closed.

* Price guard: every quote (broker push, or a poll every ``price_poll_seconds`` where there is
  none) re-checks the rules that cannot wait: stop, target, trailing stop, and the STRONG time
  signals. A STRONG one exits at once, on that quote.
* Full check every ``check_interval_seconds``: technicals and every signal, then the decision;
  ASK_HAIKU goes to the exit advisor within the consult gate's limits.
* Exit: cancel the position's protective orders first (what a backstop already sold, wholly or
  in part, is part of the exit), sell what the broker really holds (never more: never short),
  wait for the fill, book the exit with the real fill price, fees and realized P&L, tell Big Bro.
  An exit that fails (refused order, no fill) is tried again after ``retry_delay_seconds``,
  backing off to a minute, until it succeeds or the session ends.
* A failing check is logged, recorded and retried after ``retry_delay_seconds`` (backing off to
  the check interval); nothing that goes wrong in one pass of the loop ends the monitor. Only an
  exit, the end of the session or the loss of the lease ends a monitor. The lease in
  ``monitor_status`` says which process watches the position; it is renewed while the monitor
  sleeps through lunch, and a monitor whose lease another process took over stops at once.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from brokers.base import (
    Broker, BrokerError, Order, OrderPurpose, OrderRequest, OrderStatus, OrderType, Quote, Subscription,
)
from core.clock import Clock
from config.settings import Profile
from consciousness_notify import Event, EventType, Notifier, Priority
from data.calendar import MarketCalendar, SessionState
from engine.exit_advisor import AdviceRequest, ConsultGate, ExitAdvisor
from core.instruments import Rounding, round_to_tick, ticks_away
from signals import (
    Decision, ExitAction, ExitReason, ExitTechnicals, PositionView, Signal, Strength, decide, evaluate, pnl_pct,
)
from engine.spend import BudgetExhausted, SpendLedger
from store.trading import PositionRecord, TradingStore

log = logging.getLogger(__name__)

MAX_EXIT_ATTEMPTS = 5


class TechnicalsSource(Protocol):
    async def exit_technicals(self, position: PositionRecord) -> ExitTechnicals | None: ...


@dataclass
class MonitorContext:
    broker: Broker
    technicals: TechnicalsSource
    store: TradingStore
    notifier: Notifier
    clock: Clock
    calendar: MarketCalendar
    profile: Profile
    owner: str
    advisor: ExitAdvisor | None = None
    spend: SpendLedger | None = None
    live: bool = False

    @property
    def fill_timeout(self) -> float:
        m = self.profile.monitor
        return m.fill_timeout_live_seconds if self.live else m.fill_timeout_paper_seconds


@dataclass(frozen=True)
class ExitRequest:
    reason: ExitReason
    detail: str
    exit_type: str


@dataclass
class MonitorOutcome:
    position_id: int
    symbol: str
    closed: bool
    exit_reason: str | None = None
    exit_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    checks: int = 0
    haiku_calls: int = 0
    errors: int = 0
    stop_reaction_seconds: list[float] = field(default_factory=list)
    note: str = ""


class ExitFailed(Exception):
    pass


def _backoff(first: float, failures: int, ceiling: float) -> float:
    """``first`` after one failure, doubling with each further one, never above ``ceiling``
    (nor below ``first``)."""
    return max(first, min(ceiling, first * 2 ** min(failures - 1, 16)))


class PositionMonitor:
    def __init__(self, ctx: MonitorContext, position: PositionRecord) -> None:
        self.ctx = ctx
        self.position = position
        self.gate = ConsultGate.from_settings(ctx.profile.monitor)
        self.high_watermark = position.high_watermark or position.entry_price
        self.last_quote: Quote | None = None
        self.outcome = MonitorOutcome(position.position_id, str(position.symbol), closed=False)
        self._quotes: asyncio.Queue[Quote] = asyncio.Queue()
        self._exit_requests: asyncio.Queue[ExitRequest] = asyncio.Queue()
        self._last_signal_set: frozenset[tuple[str, str]] = frozenset()
        self._haiku_cost = Decimal(0)
        self._haiku_limit_told = False
        self._exit_lock = asyncio.Lock()
        self._exit_fills: list[Order] = []
        self._retry_exit: ExitRequest | None = None  # an exit that failed: tried again after the retry delay
        self._failed_checks = 0                       # full checks failed in a row (retry backoff)
        self._lease_until: datetime | None = None     # until when the lease is ours for certain
        self._lease_unknown: str | None = None        # why the lease could not be renewed (it lapsed)
        self._failed_exits = 0                        # exits failed in a row (retry backoff)

    # --- public -----------------------------------------------------------------------------
    def request_exit(self, reason: ExitReason, detail: str, exit_type: str = "command") -> None:
        self._exit_requests.put_nowait(ExitRequest(reason, detail, exit_type))

    async def exit_now(self, reason: ExitReason, detail: str, exit_type: str = "command") -> MonitorOutcome:
        """Exit at once (close_position, close_all, a halt), through the same exit path and lock."""
        request = ExitRequest(reason, detail, exit_type)
        try:
            await self._exit(request, None)
        except Exception as exc:  # noqa: BLE001 - reported to the caller; the monitor keeps trying
            self.outcome.note = f"exit failed: {type(exc).__name__}: {exc}"
            await self._record_error(self.outcome.note)
            if not self.outcome.closed:
                self._retry_exit = request  # the running watch loop (if any) tries it again
        return self.outcome

    async def run(self) -> MonitorOutcome:
        ctx, pos = self.ctx, self.position
        now = ctx.clock.now()
        if not await ctx.store.claim_monitor(pos.position_id, pos.symbol, ctx.owner, now, ctx.profile.monitor.lease_seconds):
            self.outcome.note = "another live process holds this position's monitor lease"
            log.info("%s: %s", pos.symbol, self.outcome.note)
            return self.outcome
        self._lease_until = now + timedelta(seconds=ctx.profile.monitor.lease_seconds)
        await self._notify(EventType.MONITOR_STARTED, f"Monitoring {pos.symbol.short}",
                           f"Watching {pos.side.value} {pos.quantity} {pos.symbol} from {pos.entry_price}; "
                           f"stop {pos.stop_price}, target {pos.target_price}, backstop {pos.backstop_status}.",
                           {"owner": ctx.owner})
        subscription = self._subscribe()
        try:
            await self._watch()
        finally:
            if subscription is not None:
                subscription.close()
            await self._release()
        return self.outcome

    # --- the loop ---------------------------------------------------------------------------
    def _subscribe(self) -> Subscription | None:
        if not self.ctx.broker.capabilities.supports_quote_push:
            return None
        try:
            return self.ctx.broker.subscribe_quotes([self.position.symbol], self._quotes.put_nowait)
        except BrokerError as exc:
            log.warning("%s: no quote push (%s); polling", self.position.symbol, exc)
            return None

    async def _watch(self) -> None:
        ctx = self.ctx
        interval = ctx.profile.monitor.check_interval_seconds
        next_full = ctx.clock.now() + timedelta(seconds=interval)
        next_lease = ctx.clock.now()
        while not self.outcome.closed:
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
                quote = await self._next_quote(wait)
                if quote is not None:
                    await self._price_guard(quote)
                    if self.outcome.closed:
                        return
                now = ctx.clock.now()
                if now >= next_full:
                    next_full = now + timedelta(seconds=self._next_check_after(await self._full_check()))
                elif now >= next_lease and not await self._renew_lease(now):
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
        return _backoff(m.retry_delay_seconds, self._failed_checks, m.check_interval_seconds)

    async def _wait_for_session(self, now: datetime, session, state: SessionState) -> bool:
        """Sleep through the lunch break (or until the open); False when the day's trading is over."""
        ctx = self.ctx
        if session is not None and (state is SessionState.LUNCH or now < session.open):
            resume = ctx.calendar.next_open(now)
            # Keep the lease alive while asleep: a lapsed lease lets another run adopt the position
            # and two processes would watch (and sell) it.
            renew_every = ctx.profile.monitor.lease_seconds / 3
            while ctx.clock.now() < resume:
                if not await self._renew_lease(ctx.clock.now()):
                    await self._step_down()
                    return False
                await ctx.clock.sleep(min(renew_every, (resume - ctx.clock.now()).total_seconds()))
            fresh = None
            while not self._quotes.empty():  # quotes from before the break are no price to act on
                quote = self._quotes.get_nowait()
                fresh = quote if quote.time >= resume else fresh
            if fresh is not None:
                self._quotes.put_nowait(fresh)
            return True
        self.outcome.note = "session ended with the position open; the broker backstop (if any) stays in place"
        await self._notify(
            EventType.MONITOR_ENDED, f"Monitor ended: {self.position.symbol.short} still open at the close",
            f"{self.position.symbol} is still open after the session; the next run or heartbeat adopts it.",
            {"still_open": True}, Priority.HIGH,
        )
        return False

    async def _next_quote(self, wait: float) -> Quote | None:
        """The newest quote within ``wait`` seconds: pushed if the broker pushes, else polled."""
        if self.ctx.broker.capabilities.supports_quote_push:
            try:
                quote = await asyncio.wait_for(self._quotes.get(), timeout=wait) if wait > 0 else self._quotes.get_nowait()
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                return None
            while not self._quotes.empty():  # act on the newest price
                quote = self._quotes.get_nowait()
            return quote
        await self.ctx.clock.sleep(wait)
        try:
            snaps = await self.ctx.broker.snapshots([self.position.symbol])
            return snaps[self.position.symbol].quote
        except Exception as exc:  # noqa: BLE001 - any broker failure: no quote this time
            await self._record_error(f"quote poll failed: {type(exc).__name__}: {exc}")
            return None

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
        await self._try_exit(ExitRequest(reason, decision.reasons[0] + "; " + decision.reasons[1], "rule"),
                             trigger_time=quote.time)

    async def _full_check(self) -> bool:
        """One full check; False when it failed (recorded; the caller retries it soon)."""
        ctx, pos = self.ctx, self.position
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
                ExitRequest(decision.exit_reason or ExitReason.SIGNALS, "; ".join(decision.reasons[:2]), "rule")
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
            return decision, ExitRequest(ExitReason.HAIKU, advice.reason, "haiku")
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
        except Exception as exc:  # noqa: BLE001 - keep watching; the loop retries the exit
            await self._record_error(f"exit failed ({request.reason.value}): {type(exc).__name__}: {exc}")
            if not self.outcome.closed:
                self._retry_exit = request
            self._failed_exits += 1
            # Retry soon, backing off (to a minute at most) while the broker keeps refusing.
            await self.ctx.clock.sleep(_backoff(self.ctx.profile.monitor.retry_delay_seconds, self._failed_exits, 60.0))

    async def _exit(self, request: ExitRequest, trigger_time: datetime | None) -> None:
        async with self._exit_lock:
            if self.outcome.closed:
                return
            pos = self.position
            fired = await self._cancel_protective_orders()
            fired_quantity = sum(o.filled_quantity for o in fired)
            earlier = list(self._exit_fills)  # exit sells of earlier attempts that filled in part
            earlier_quantity = sum(o.filled_quantity for o in earlier)
            held = await self._broker_quantity()
            if fired and not earlier and (fired_quantity >= pos.quantity or held <= 0):
                await self._book_fills(fired, ExitReason.BACKSTOP.value, "backstop",
                                       "the broker-side protective order filled")
                return
            if held <= 0:
                if earlier:
                    await self._book_fills(fired + earlier, request.reason.value, request.exit_type, request.detail)
                else:
                    await self._book_vanished(request)
                return
            # What the backstop or earlier attempts sold is part of this exit: sell the rest, book all.
            quantity = min(pos.quantity - fired_quantity - earlier_quantity, held)
            fills: list[Order] = list(fired) + earlier
            remaining = quantity
            attempts = 0
            while remaining > 0 and attempts < MAX_EXIT_ATTEMPTS:
                attempts += 1
                order = await self._place_exit(remaining, trigger_time)
                order = await self._wait_for_fill(order)
                if order.filled_quantity:
                    fills.append(order)
                    self._exit_fills.append(order)
                    remaining -= order.filled_quantity
                elif order.status is OrderStatus.REJECTED:
                    raise ExitFailed(order.reject_reason or "exit order rejected")
            if remaining == quantity:
                raise ExitFailed(f"no fill for the exit of {quantity} {pos.symbol} after {attempts} attempt(s)")
            if remaining > 0:
                # Only part sold: the rest stays open and watched; the next attempt sells it and the
                # exit is booked once, over every fill.
                sold = pos.quantity - remaining
                raise ExitFailed(f"sold {sold} of {pos.quantity}; {remaining} remain open")
            detail = request.detail
            if fired:
                detail += f"; the backstop had sold {fired_quantity} before it was cancelled"
            await self._book_fills(fills, request.reason.value, request.exit_type, detail)

    async def _book_fills(self, orders: list[Order], reason: str, exit_type: str, detail: str) -> None:
        sold = sum(o.filled_quantity for o in orders)
        avg = sum((o.avg_fill_price or Decimal(0)) * o.filled_quantity for o in orders) / sold
        await self._book_exit(avg, sum((o.fees for o in orders), Decimal(0)), reason, exit_type, detail)

    async def _cancel_protective_orders(self) -> list[Order]:
        """Cancel the backstop first (so the exit never sells twice); the backstop orders that had
        filled, wholly or in part, before they could be cancelled."""
        ctx, pos = self.ctx, self.position
        fired: list[Order] = []
        for order_id in pos.backstop_order_ids:
            order = await ctx.broker.get_order(order_id)
            if not order.status.is_final:
                order = await ctx.broker.cancel_order(order_id)
            if order.filled_quantity > 0:
                fired.append(order)
            await ctx.store.record_order(order, trading_day=ctx.calendar.trading_day(ctx.clock.now()),
                                         at=ctx.clock.now(), cycle_id=pos.cycle_id, position_id=pos.position_id)
        if pos.backstop_order_ids:
            await ctx.store.set_backstop(pos.position_id, "cancelled", pos.backstop_order_ids, ctx.clock.now())
        return fired

    async def _broker_quantity(self) -> int:
        pos = self.position
        for held in await self.ctx.broker.positions():
            if held.symbol == pos.symbol and held.side is pos.side:
                return held.quantity
        return 0

    async def _place_exit(self, quantity: int, trigger_time: datetime | None) -> Order:
        ctx, pos = self.ctx, self.position
        # Derived from the entry's own client id (unique at the broker), so a reset database can
        # never pick up an old exit order as this one.
        base = pos.entry_client_order_id or f"{ctx.profile.agent_id[:4]}-p{pos.position_id}-{pos.entry_time:%Y%m%d%H%M%S}"
        prefix = f"{base}-x"
        attempt = await ctx.store.count_orders_with_prefix(prefix) + 1
        order_type, limit = OrderType.MARKET, None
        if ctx.profile.monitor.exit_order_type == "marketable_limit" and self.last_quote is not None:
            day = ctx.calendar.trading_day(ctx.clock.now())
            ticks = ctx.profile.monitor.marketable_limit_ticks
            base = self.last_quote.bid if pos.side.value == "long" else self.last_quote.ask
            limit = ticks_away(pos.symbol.market, base, -ticks if pos.side.value == "long" else ticks, day,
                               ctx.profile.ticks.hk_phase2_date)
            limit = round_to_tick(pos.symbol.market, limit, day, Rounding.NEAREST, ctx.profile.ticks.hk_phase2_date)
            order_type = OrderType.LIMIT
        request = OrderRequest(
            symbol=pos.symbol, side=pos.side.exit_side, quantity=quantity, order_type=order_type,
            client_order_id=f"{prefix}{attempt}", limit_price=limit, purpose=OrderPurpose.EXIT,
        )
        order = await ctx.broker.place_order(request)
        if trigger_time is not None:
            self.outcome.stop_reaction_seconds.append((ctx.clock.now() - trigger_time).total_seconds())
        await self._record_order(order)
        return order

    async def _wait_for_fill(self, order: Order) -> Order:
        ctx = self.ctx
        deadline = ctx.clock.now() + timedelta(seconds=ctx.fill_timeout)
        while not order.status.is_final and ctx.clock.now() < deadline:
            await ctx.clock.sleep(ctx.profile.monitor.fill_poll_seconds)
            order = await ctx.broker.get_order(order.broker_order_id)
        if not order.status.is_final:
            order = await ctx.broker.cancel_order(order.broker_order_id)
        await self._record_order(order)
        return order

    async def _record_order(self, order: Order) -> None:
        ctx = self.ctx
        await ctx.store.record_order(order, trading_day=ctx.calendar.trading_day(ctx.clock.now()), at=ctx.clock.now(),
                                     cycle_id=self.position.cycle_id, position_id=self.position.position_id)

    async def _book_vanished(self, request: ExitRequest) -> None:
        """The broker no longer holds the position: book it from the broker's own fills, never at 0."""
        ctx, pos = self.ctx, self.position
        fills = [f for f in await ctx.broker.fills(pos.entry_time, pos.symbol) if f.side is pos.side.exit_side]
        if fills:
            qty = sum(f.quantity for f in fills)
            avg = sum(f.price * f.quantity for f in fills) / qty
            fired = any(f.broker_order_id in pos.backstop_order_ids for f in fills)
            reason = ExitReason.BACKSTOP if fired else ExitReason.CLOSED_AT_BROKER
            await self._book_exit(avg, sum((f.fees for f in fills), Decimal(0)), reason.value,
                                  "broker", "closed at the broker; booked with the broker's fills")
            return
        await ctx.store.mark_reconciled_missing(pos.position_id, ctx.clock.now(),
                                                "not held at the broker and no exit fill found")
        self.outcome.closed = True
        self.outcome.exit_reason = ExitReason.RECONCILED_MISSING.value
        await self._notify(EventType.RECONCILE, f"{pos.symbol.short} vanished at the broker",
                           f"{pos.symbol} is not held at the broker and no exit fill was found; marked "
                           "reconciled_missing (not booked at any price).", {"action": "reconciled_missing"})

    async def _book_exit(self, price: Decimal, fees: Decimal, reason: str, exit_type: str, detail: str) -> None:
        ctx, pos = self.ctx, self.position
        closed = await ctx.store.close_position(pos.position_id, exit_price=price, exit_time=ctx.clock.now(),
                                                exit_reason=reason, exit_type=exit_type, exit_fees=fees)
        self.outcome.closed = True
        self.outcome.exit_reason = reason
        self.outcome.exit_price = price
        self.outcome.realized_pnl = closed.realized_pnl
        await self._notify(
            EventType.EXIT,
            f"EXIT {pos.symbol.short} {reason}: {pos.symbol.market.currency} {closed.realized_pnl:+,.2f}",
            f"Sold {closed.quantity} {pos.symbol} at {price:.4f} (entry {pos.entry_price}); reason {reason} "
            f"({detail}); fees {fees:.2f}; P&L {closed.realized_pnl:+,.2f} ({closed.realized_pnl_pct:+.2f}%).",
            {"exit_price": price, "entry_price": pos.entry_price, "quantity": closed.quantity, "reason": reason,
             "exit_type": exit_type, "fees": fees, "realized_pnl": closed.realized_pnl,
             "realized_pnl_pct": closed.realized_pnl_pct, "haiku_calls": self.gate.calls},
        )

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

    async def _renew_lease(self, now: datetime) -> bool:
        """Extend this monitor's lease; False when another live process may hold it now.

        Fails closed: when the renewal itself fails (the database does not answer), the monitor goes
        on only while the lease it last renewed is certainly still its own; once that has lapsed,
        another run may have adopted the position, so this one stops rather than risk a second sale."""
        lease_seconds = self.ctx.profile.monitor.lease_seconds
        try:
            held = await self.ctx.store.claim_monitor(self.position.position_id, self.position.symbol, self.ctx.owner,
                                                      now, lease_seconds)
        except Exception as exc:  # noqa: BLE001 - decided below: the lease we know of, or nothing
            if self._lease_until is not None and now < self._lease_until:
                log.warning("%s: lease renewal failed (%s); the lease holds until %s, trying again",
                            self.position.symbol, type(exc).__name__, self._lease_until.isoformat())
                return True
            self._lease_unknown = f"{type(exc).__name__}: {exc}"
            return False
        if held:
            self._lease_until = now + timedelta(seconds=lease_seconds)
        return held

    async def _step_down(self) -> None:
        """Another process took the position over (our lease had lapsed), or may have (the lease
        could not be renewed in time): stop, so that only one monitor ever sells it."""
        pos = self.position
        if self._lease_unknown is not None:
            self.outcome.note = ("the monitor lease could not be renewed and has lapsed "
                                 f"({self._lease_unknown}); stopped watching so that no two processes sell it")
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
        ctx, pos = self.ctx, self.position
        try:
            await ctx.store.release_monitor(pos.position_id, ctx.owner, ctx.clock.now())
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: could not release the monitor lease: %s", pos.symbol, exc)
        if self.outcome.closed:
            await self._notify(EventType.MONITOR_ENDED, f"Monitor ended: {pos.symbol.short} closed",
                               f"{pos.symbol} closed ({self.outcome.exit_reason}) after {self.outcome.checks} full "
                               f"check(s) and {self.gate.calls} Haiku consult(s).",
                               {"checks": self.outcome.checks, "haiku_calls": self.gate.calls,
                                "errors": self.outcome.errors})

    async def _notify(self, kind: EventType, subject: str, body: str, data: dict, priority: Priority | None = None) -> None:
        pos = self.position
        await self.ctx.notifier.send(Event(kind, subject, body, {
            "symbol": str(pos.symbol), "position_id": pos.position_id, **data}, priority))


class MonitorManager:
    """Starts one monitor task per position and knows which are running."""

    def __init__(self, ctx: MonitorContext) -> None:
        self.ctx = ctx
        self.monitors: dict[int, PositionMonitor] = {}
        self.tasks: dict[int, asyncio.Task[MonitorOutcome]] = {}
        self.outcomes: list[MonitorOutcome] = []

    def start(self, position: PositionRecord) -> bool:
        if position.position_id in self.tasks and not self.tasks[position.position_id].done():
            return False
        monitor = PositionMonitor(self.ctx, position)
        self.monitors[position.position_id] = monitor
        task = asyncio.get_running_loop().create_task(monitor.run(), name=f"monitor-{position.symbol}")
        task.add_done_callback(lambda t, pid=position.position_id: self._finished(pid, t))
        self.tasks[position.position_id] = task
        return True

    def _finished(self, position_id: int, task: asyncio.Task[MonitorOutcome]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("monitor %s crashed: %r", position_id, task.exception())
            return
        self.outcomes.append(task.result())

    async def close_now(self, position: PositionRecord, reason: ExitReason, detail: str) -> MonitorOutcome:
        monitor = self.monitors.get(position.position_id)
        task = self.tasks.get(position.position_id)
        if monitor is None or task is None or task.done():
            monitor = PositionMonitor(self.ctx, position)
        return await monitor.exit_now(reason, detail)

    def active(self) -> list[int]:
        return [pid for pid, t in self.tasks.items() if not t.done()]

    def request_exit_all(self, reason: ExitReason, detail: str) -> int:
        count = 0
        for pid in self.active():
            self.monitors[pid].request_exit(reason, detail, "command")
            count += 1
        return count

    async def wait(self) -> list[MonitorOutcome]:
        while self.active():
            await asyncio.gather(*(self.tasks[pid] for pid in self.active()), return_exceptions=True)
        return self.outcomes

    async def cancel(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
