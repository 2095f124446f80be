"""The broker-side backstop of a position: placed after the entry fill (a bracket's legs where the
broker takes brackets, a stop order where it takes stops, nothing otherwise, and then Big Bro is told),
and cancelled first at the exit, so that the exit never sells twice.

A position adopted at reconcile gets one too: the symbol's orders still working at the broker (a
crashed run's bracket legs, a stop placed by hand) are attached as its backstop, and a stop is placed
for whatever they leave unprotected. Working exit orders are what the exit must never sell past:
``offered_quantity`` is the part of the holding they may sell at any moment."""
from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Iterable, Protocol

from brokers.base import Broker, BrokerError, Order, OrderPurpose, OrderRequest, OrderType
from config.settings import Profile
from consciousness_notify import Event, EventType, Notifier
from core.clock import Clock
from core.instruments import Market, PositionSide, Rounding, Symbol, round_to_tick
from engine.context import MonitorContext
from store.protocols import PositionRepository
from store.trading import PositionRecord


class BackstopContext(Protocol):
    """What placing and cancelling a backstop works with (a monitor's context, or the reconciler)."""

    broker: Broker
    store: PositionRepository
    notifier: Notifier
    clock: Clock
    profile: Profile

    def trading_day(self) -> date: ...


def protective_levels(market: Market, side: PositionSide, price: Decimal, stop_pct: Decimal, target_pct: Decimal,
                      day: date, phase2: date | None) -> tuple[Decimal, Decimal]:
    """The stop and target ``stop_pct`` / ``target_pct`` away from ``price``, on the side's losing and
    winning sides (a short's stop is above its price), on the tick grid and never inside the band."""
    down, up = 1 - Decimal(stop_pct) / 100, 1 + Decimal(target_pct) / 100
    if side is PositionSide.LONG:
        return (round_to_tick(market, price * down, day, Rounding.DOWN, phase2),
                round_to_tick(market, price * up, day, Rounding.UP, phase2))
    return (round_to_tick(market, price * (2 - down), day, Rounding.UP, phase2),
            round_to_tick(market, max(price * (2 - up), price / 100), day, Rounding.DOWN, phase2))


def backstop_levels(ctx: BackstopContext, symbol: Symbol, price: Decimal,
                    side: PositionSide = PositionSide.LONG) -> tuple[Decimal, Decimal]:
    b = ctx.profile.backstop
    return protective_levels(symbol.market, side, price, b.stop_pct, b.target_pct, ctx.trading_day(),
                             ctx.profile.ticks.hk_phase2_date)


def order_id_base(ctx: BackstopContext, position: PositionRecord) -> str:
    """The stem of every client order id of a position's own orders (its backstop ``-bs``, its exits
    ``-x<n>``): the entry's client id, unique at the broker, or one made from the position for an
    adopted one, so a reset database can never pick up another position's order as this one's."""
    return (position.entry_client_order_id
            or f"{ctx.profile.agent_id[:4]}-p{position.position_id}-{position.entry_time:%Y%m%d%H%M%S}")


def working_exit_orders(orders: Iterable[Order], side: PositionSide) -> list[Order]:
    """The orders still working at the broker that would reduce a ``side`` holding, bracket legs
    included (a filled parent is listed with its working legs), each once."""
    seen: dict[str, Order] = {}
    for order in orders:
        for leaf in (order, *order.legs):
            if not leaf.status.is_final and leaf.side is side.exit_side and leaf.remaining > 0:
                seen.setdefault(leaf.broker_order_id, leaf)
    return list(seen.values())


def offered_quantity(orders: Iterable[Order]) -> int:
    """How many shares the working exit orders may sell: the legs of one bracket are one-cancels-other,
    so they count once (the larger); every other order counts in full."""
    alone, per_bracket = 0, {}
    for order in orders:
        if order.parent_order_id:
            per_bracket[order.parent_order_id] = max(per_bracket.get(order.parent_order_id, 0), order.remaining)
        else:
            alone += order.remaining
    return alone + sum(per_bracket.values())


async def place_backstop(ctx: BackstopContext, position: PositionRecord, entry_order: Order, cycle_id: str) -> str:
    """What protects the position at the broker now: "bracket", "stop <price>", "failed" or "none"."""
    caps = ctx.broker.capabilities
    now = ctx.clock.now()
    if caps.supports_bracket and entry_order.legs:
        ids = [leg.broker_order_id for leg in entry_order.legs]
        await ctx.store.set_backstop(position.position_id, "bracket", ids, now)
        return "bracket"
    return await _place_stop(ctx, position, position.quantity, cycle_id, [])


async def protect_adopted(ctx: BackstopContext, position: PositionRecord) -> str:
    """The backstop of a position adopted from the broker: its working exit orders where they cover
    the holding (a crashed run's bracket legs), else a stop for the rest; Big Bro hears of none."""
    working = working_exit_orders(await ctx.broker.list_orders(open_only=True, symbol=position.symbol), position.side)
    now = ctx.clock.now()
    for order in working:
        await ctx.store.record_order(order, trading_day=ctx.trading_day(), at=now, cycle_id=position.cycle_id,
                                     position_id=position.position_id)
    ids = [o.broker_order_id for o in working]
    unprotected = position.quantity - offered_quantity(working)
    if unprotected <= 0:
        status = "bracket" if any(o.parent_order_id for o in working) else "placed"
        await ctx.store.set_backstop(position.position_id, status, ids, now)
        return f"{status}: {len(ids)} working order(s) at the broker"
    return await _place_stop(ctx, position, unprotected, position.cycle_id, ids)


async def _place_stop(ctx: BackstopContext, position: PositionRecord, quantity: int, cycle_id: str | None,
                      working_ids: list[str]) -> str:
    caps = ctx.broker.capabilities
    now = ctx.clock.now()
    if not caps.supports_stop_orders:
        await ctx.store.set_backstop(position.position_id, "placed" if working_ids else "none", working_ids, now)
        await _no_backstop(ctx, position, f"{caps.name} accepts no stop orders on this account")
        return "none"
    stop, _ = backstop_levels(ctx, position.symbol, position.entry_price, position.side)
    request = OrderRequest(
        symbol=position.symbol, side=position.side.exit_side, quantity=quantity, order_type=OrderType.STOP,
        client_order_id=f"{order_id_base(ctx, position)}-bs", stop_price=stop, purpose=OrderPurpose.BACKSTOP_STOP,
    )
    try:
        await ctx.store.record_intent(request, trading_day=ctx.trading_day(), at=now, cycle_id=cycle_id)
        order = await ctx.broker.find_order(request.client_order_id) or await ctx.broker.place_order(request)
    except BrokerError as exc:
        await ctx.store.set_backstop(position.position_id, "placed" if working_ids else "failed", working_ids, now)
        await _no_backstop(ctx, position, f"the stop order was refused: {exc}")
        return "failed"
    await ctx.store.record_order(order, trading_day=ctx.trading_day(), at=now, cycle_id=cycle_id,
                                 position_id=position.position_id)
    await ctx.store.set_backstop(position.position_id, "placed", [*working_ids, order.broker_order_id], now)
    return f"stop {stop}"


async def cancel_backstop(ctx: MonitorContext, position: PositionRecord) -> list[Order]:
    """Cancel the backstop first (so the exit never sells twice); the backstop orders that had
    filled, wholly or in part, before they could be cancelled. Recorded through the exit journal: the
    sale that follows never waits for the database."""
    fired: list[Order] = []
    for order_id in position.backstop_order_ids:
        order = await ctx.broker.get_order(order_id)
        if not order.status.is_final:
            order = await ctx.broker.cancel_order(order_id)
        if order.filled_quantity > 0:
            fired.append(order)
        ctx.journal.record_order(order, trading_day=ctx.trading_day(), at=ctx.clock.now(),
                                 cycle_id=position.cycle_id, position_id=position.position_id)
    if position.backstop_order_ids:
        ctx.journal.set_backstop(position.position_id, "cancelled", position.backstop_order_ids, ctx.clock.now())
    return fired


async def _no_backstop(ctx: BackstopContext, position: PositionRecord, why: str) -> None:
    await ctx.notifier.send(Event(
        EventType.NO_BACKSTOP, f"No broker backstop for {position.symbol.short}",
        f"{position.symbol} has no broker-side protective order ({why}); only the in-process monitor protects it.",
        {"symbol": str(position.symbol), "position_id": position.position_id, "why": why},
    ))
