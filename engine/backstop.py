"""The broker-side backstop of a position: placed after the entry fill (a bracket's legs where the
broker takes brackets, a stop order where it takes stops, nothing otherwise, and then Big Bro is told),
and cancelled first at the exit, so that the exit never sells twice."""
from __future__ import annotations

from decimal import Decimal

from brokers.base import BrokerError, Order, OrderPurpose, OrderRequest, OrderType
from consciousness_notify import Event, EventType
from core.instruments import Rounding, Symbol, round_to_tick
from engine.context import MonitorContext
from store.trading import PositionRecord


def backstop_levels(ctx: MonitorContext, symbol: Symbol, price: Decimal) -> tuple[Decimal, Decimal]:
    day = ctx.trading_day()
    phase2 = ctx.profile.ticks.hk_phase2_date
    stop = round_to_tick(symbol.market, price * (1 - ctx.profile.backstop.stop_pct / 100), day, Rounding.DOWN, phase2)
    target = round_to_tick(symbol.market, price * (1 + ctx.profile.backstop.target_pct / 100), day, Rounding.UP, phase2)
    return stop, target


async def place_backstop(ctx: MonitorContext, position: PositionRecord, entry_order: Order, cycle_id: str) -> str:
    """What protects the position at the broker now: "bracket", "stop <price>", "failed" or "none"."""
    caps = ctx.broker.capabilities
    now = ctx.clock.now()
    if caps.supports_bracket and entry_order.legs:
        ids = [leg.broker_order_id for leg in entry_order.legs]
        await ctx.store.set_backstop(position.position_id, "bracket", ids, now)
        return "bracket"
    if caps.supports_stop_orders:
        stop, _ = backstop_levels(ctx, position.symbol, position.entry_price)
        request = OrderRequest(
            symbol=position.symbol, side=position.side.exit_side, quantity=position.quantity, order_type=OrderType.STOP,
            client_order_id=f"{position.entry_client_order_id}-bs", stop_price=stop, purpose=OrderPurpose.BACKSTOP_STOP,
        )
        try:
            await ctx.store.record_intent(request, trading_day=ctx.trading_day(), at=now, cycle_id=cycle_id)
            order = await ctx.broker.find_order(request.client_order_id) or await ctx.broker.place_order(request)
        except BrokerError as exc:
            await ctx.store.set_backstop(position.position_id, "failed", [], now)
            await _no_backstop(ctx, position, f"the stop order was refused: {exc}")
            return "failed"
        await ctx.store.record_order(order, trading_day=ctx.trading_day(), at=now, cycle_id=cycle_id,
                                     position_id=position.position_id)
        await ctx.store.set_backstop(position.position_id, "placed", [order.broker_order_id], now)
        return f"stop {stop}"
    await ctx.store.set_backstop(position.position_id, "none", [], now)
    await _no_backstop(ctx, position, f"{caps.name} accepts no stop orders on this account")
    return "none"


async def cancel_backstop(ctx: MonitorContext, position: PositionRecord) -> list[Order]:
    """Cancel the backstop first (so the exit never sells twice); the backstop orders that had
    filled, wholly or in part, before they could be cancelled."""
    fired: list[Order] = []
    for order_id in position.backstop_order_ids:
        order = await ctx.broker.get_order(order_id)
        if not order.status.is_final:
            order = await ctx.broker.cancel_order(order_id)
        if order.filled_quantity > 0:
            fired.append(order)
        await ctx.store.record_order(order, trading_day=ctx.trading_day(), at=ctx.clock.now(),
                                     cycle_id=position.cycle_id, position_id=position.position_id)
    if position.backstop_order_ids:
        await ctx.store.set_backstop(position.position_id, "cancelled", position.backstop_order_ids, ctx.clock.now())
    return fired


async def _no_backstop(ctx: MonitorContext, position: PositionRecord, why: str) -> None:
    await ctx.notifier.send(Event(
        EventType.NO_BACKSTOP, f"No broker backstop for {position.symbol.short}",
        f"{position.symbol} has no broker-side protective order ({why}); only the in-process monitor protects it.",
        {"symbol": str(position.symbol), "position_id": position.position_id, "why": why},
    ))
