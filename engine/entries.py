"""The entry of a position: the order (sent once, whatever is retried), its fill, the position opened
from the fill and Big Bro told. The position's executor (``position_monitor.PositionExecutor``) runs
these steps; the tool (``execute_trade``) checked the decision against the risk limits before."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from brokers.base import Order, OrderPurpose, OrderRejected, OrderRequest, OrderType, Timeframe
from consciousness_notify import Event, EventType
from core.instruments import OrderSide, PositionSide, Symbol
from data.market import MarketData
from engine.backstop import backstop_levels
from engine.context import MonitorContext
from store.trading import DuplicateOpenPosition, PositionRecord


@dataclass(frozen=True)
class EntryDecision:
    """What the brain decided and the risk check approved."""

    symbol: Symbol
    side: OrderSide
    quantity: int
    order_type: OrderType
    limit_price: Decimal | None
    stop: Decimal
    target: Decimal
    tier: int
    reason: str
    cycle_id: str


class EntryRefused(Exception):
    """The entry cannot go ahead; the message says why (it goes back to the brain as the tool's error)."""


async def send_entry_order(ctx: MonitorContext, decision: EntryDecision, price: Decimal) -> tuple[Order, str]:
    """Place the entry order, or pick up the one an interrupted attempt of this cycle left at the broker,
    and wait for it to finish: (the final order, its client order id). ``price`` sets the bracket's legs."""
    if ctx.run_lock is not None and not await ctx.run_lock.prove():
        raise EntryRefused(f"no entry: {ctx.run_lock.unproven}")
    symbol, day, now = decision.symbol, ctx.trading_day(), ctx.clock.now()
    prefix = f"{decision.cycle_id}-{symbol.code}-"
    client_order_id = (await unfinished_entry(ctx, prefix, day)
                       or f"{prefix}{await ctx.store.count_orders_with_prefix(prefix) + 1}")
    backstop_stop, backstop_target = backstop_levels(ctx, symbol, price)
    bracket = ctx.broker.capabilities.supports_bracket
    request = OrderRequest(
        symbol=symbol, side=decision.side, quantity=decision.quantity, order_type=decision.order_type,
        client_order_id=client_order_id,
        limit_price=decision.limit_price if decision.order_type is OrderType.LIMIT else None,
        purpose=OrderPurpose.ENTRY,
        take_profit_price=backstop_target if bracket else None, stop_loss_price=backstop_stop if bracket else None,
    )
    await ctx.store.record_intent(request, trading_day=day, at=now, cycle_id=decision.cycle_id)
    try:
        order = await ctx.broker.find_order(client_order_id) or await ctx.broker.place_order(request)
    except OrderRejected as exc:
        await ctx.store.mark_rejected(client_order_id, str(exc), ctx.clock.now())
        raise EntryRefused(f"the broker refused the order: {exc}") from None
    await ctx.store.record_order(order, trading_day=day, at=ctx.clock.now(), cycle_id=decision.cycle_id,
                                 position_id=None)
    order = await ctx.orders.until_final(order, ctx.fill_timeout)
    await ctx.store.record_order(order, trading_day=ctx.trading_day(), at=ctx.clock.now(), cycle_id=decision.cycle_id,
                                 position_id=None)
    return order, client_order_id


async def unfinished_entry(ctx: MonitorContext, prefix: str, day) -> str | None:
    """The client order id of this cycle's entry in the symbol that may be at the broker but has no
    position yet (the broker's answer was lost, or waiting for the fill failed). A retry reuses it:
    ``find_order`` then picks up that order instead of placing a second one."""
    for row in reversed(await ctx.store.orders(day)):
        if (row["client_order_id"].startswith(prefix) and row["purpose"] == OrderPurpose.ENTRY.value
                and row["position_id"] is None
                and row["status"] in ("pending_submit", "submitted", "partially_filled", "filled")):
            return row["client_order_id"]
    return None


async def open_position(ctx: MonitorContext, market: MarketData, decision: EntryDecision, order: Order,
                        client_order_id: str) -> PositionRecord:
    """The position as the fill made it (its quantity and price, not the decision's), linked to its order."""
    symbol = decision.symbol
    bars = await market.bars(symbol, Timeframe.M1, 30)
    try:
        position = await ctx.store.open_position(
            symbol=symbol, side=PositionSide.LONG, quantity=order.filled_quantity, entry_price=order.avg_fill_price,
            entry_time=ctx.clock.now(), trading_day=ctx.trading_day(), stop_price=decision.stop,
            target_price=decision.target, tier=decision.tier, entry_reason=decision.reason,
            entry_volume_rate=await market.volume_pace(symbol, bars), entry_fees=order.fees,
            cycle_id=decision.cycle_id, entry_client_order_id=client_order_id,
        )
    except DuplicateOpenPosition:
        raise EntryRefused(f"{symbol} is already open in the database; not opening a second position") from None
    await ctx.store.link_order(client_order_id, position.position_id)
    await ctx.notifier.send(Event(
        EventType.ENTRY,
        f"ENTRY {symbol.short} {order.filled_quantity} @ {order.avg_fill_price} (tier {decision.tier})",
        f"Bought {order.filled_quantity} of {order.quantity} {symbol} at {order.avg_fill_price}; stop {decision.stop}, "
        f"target {decision.target}; {decision.reason}",
        {"symbol": str(symbol), "position_id": position.position_id, "quantity": order.filled_quantity,
         "requested": order.quantity, "price": order.avg_fill_price, "stop": decision.stop, "target": decision.target,
         "tier": decision.tier, "client_order_id": client_order_id, "cycle_id": decision.cycle_id},
    ))
    return position
