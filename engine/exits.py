"""The exit of a position: cancel its backstop first (what the backstop already sold, wholly or in part,
is part of the exit), sell what the broker really holds (never more: never short), wait for the fill,
book the exit with the real fill price, fees and realized P&L, and tell Big Bro.

Never short: besides its recorded backstop, every order of this position still working at the broker
(a crashed run's bracket legs) is cancelled before the sale, and the sale is at most what the broker
holds less what other working orders (placed by hand) may still sell.

Never waiting for the database: every record of the exit goes to the exit journal
(``store.journal``) and reaches the trading tables after the broker has acted, so a stop-loss sells
while PostgreSQL is down, and is booked once when it is back.

A sale that fills in part leaves the rest open and watched: the next attempt sells the rest and the
exit is booked once, over every fill. A position the broker no longer holds is booked from the
broker's own fills (their time and fees), never at a made-up price.
"""
from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from brokers.base import Order, OrderPurpose, OrderRequest, OrderStatus, OrderType, Quote
from consciousness_notify import EventType
from core.instruments import PositionSide, Rounding, round_to_tick, ticks_away
from engine.backstop import cancel_backstop, offered_quantity, order_id_base, working_exit_orders
from engine.context import MonitorContext
from signals import ExitReason
from store.trading import PositionRecord, realized_pnl

MAX_EXIT_ATTEMPTS = 5


class CloseType(str, enum.Enum):
    """Who or what closed the position (``positions.exit_type``)."""

    RULE = "rule"          # an exit signal (signals.py)
    HAIKU = "haiku"        # the exit advisor said EXIT
    COMMAND = "command"    # close_position, close_all, a halt
    BACKSTOP = "backstop"  # the broker-side protective order filled
    BROKER = "broker"      # closed at the broker by someone else; booked from the broker's fills


@dataclass(frozen=True)
class ExitRequest:
    reason: ExitReason
    detail: str
    close_type: CloseType


@dataclass(frozen=True)
class Booked:
    """How the position closed. ``price`` and ``realized_pnl`` are None when it vanished at the broker
    with no fill to book it by (``reconciled_missing``)."""

    reason: str
    close_type: CloseType
    price: Decimal | None = None
    realized_pnl: Decimal | None = None


class ExitFailed(Exception):
    pass


class ExitNotFilled(ExitFailed):
    """The market took none or only part of the sale in time (thin minutes): no fault, the rest stays
    open and watched, and the next attempt sells it."""


class PositionExit:
    """Selling one position, over as many attempts as it takes; the lock keeps two exits from racing."""

    def __init__(self, ctx: MonitorContext, position: PositionRecord, reaction_seconds: list[float]) -> None:
        self.ctx = ctx
        self.position = position
        self.reaction_seconds = reaction_seconds  # from a price trigger to the exit order, per exit order
        self.booked: Booked | None = None
        self._lock = asyncio.Lock()
        self._fills_so_far: list[Order] = []  # exit sells of earlier attempts that filled in part
        self._exit_orders_sent = 0            # the number of this position's last exit order (its client id)

    async def run(self, request: ExitRequest, *, last_quote: Quote | None, trigger_time: datetime | None,
                  haiku_calls: int) -> Booked | None:
        """Booked once the position is closed; raises ExitFailed (or the broker's error) when not."""
        async with self._lock:
            try:
                if self.booked is None:
                    self.booked = await self._sell(request, last_quote, trigger_time, haiku_calls)
            finally:
                await self.ctx.journal.flush(self.ctx.store)  # after the broker acted, never before
            return self.booked

    # Long: the order of the steps is what keeps the account from going short; split, it would hide that.
    async def _sell(self, request: ExitRequest, last_quote: Quote | None, trigger_time: datetime | None,
                    haiku_calls: int) -> Booked:
        pos = self.position
        fired = await cancel_backstop(self.ctx, pos)
        others = await self._cancel_own_working_orders(fired)
        fired_quantity = sum(o.filled_quantity for o in fired)
        earlier = list(self._fills_so_far)
        earlier_quantity = sum(o.filled_quantity for o in earlier)
        held = await self.broker_quantity()
        if fired and not earlier and (fired_quantity >= pos.quantity or held <= 0):
            return await self._book_fills(fired, ExitReason.BACKSTOP.value, CloseType.BACKSTOP,
                                          "the broker-side protective order filled", haiku_calls)
        if held <= 0:
            if earlier:
                return await self._book_fills(fired + earlier, request.reason.value, request.close_type,
                                              request.detail, haiku_calls)
            return await self._book_vanished(haiku_calls)
        # What the backstop or earlier attempts sold is part of this exit: sell the rest, book all;
        # never what orders placed outside the agent may still sell.
        offered = offered_quantity(others)
        quantity = min(pos.quantity - fired_quantity - earlier_quantity, held - offered)
        if quantity <= 0 < offered:
            raise ExitFailed(f"the broker holds {held} {pos.symbol} and {len(others)} working order(s) placed outside "
                             f"the agent may sell {offered} of them; selling more could leave the account short")
        fills: list[Order] = list(fired) + earlier
        remaining = quantity
        attempts = 0
        while remaining > 0 and attempts < MAX_EXIT_ATTEMPTS:
            attempts += 1
            order = await self._place(remaining, last_quote, trigger_time)
            order = await self.ctx.orders.until_final(order, self.ctx.fill_timeout, while_filling=True)
            self._record_order(order)
            if order.filled_quantity:
                fills.append(order)
                self._fills_so_far.append(order)
                remaining -= order.filled_quantity
            elif order.status is OrderStatus.REJECTED:
                raise ExitFailed(order.reject_reason or "exit order rejected")
        if remaining == quantity:
            raise ExitNotFilled(f"no fill for the exit of {quantity} {pos.symbol} after {attempts} attempt(s)")
        if remaining > 0:
            raise ExitNotFilled(f"sold {pos.quantity - remaining} of {pos.quantity}; {remaining} remain open")
        detail = request.detail
        if fired:
            detail += f"; the backstop had sold {fired_quantity} before it was cancelled"
        sold = sum(o.filled_quantity for o in fills)
        if offered and sold < pos.quantity:  # the rest is left to the orders placed outside the agent
            detail += (f"; {pos.quantity - sold} left to {len(others)} working order(s) placed outside the agent, "
                       "no longer the agent's")
            return await self._book_fills(fills, request.reason.value, request.close_type, detail, haiku_calls, sold)
        return await self._book_fills(fills, request.reason.value, request.close_type, detail, haiku_calls)

    async def _cancel_own_working_orders(self, fired: list[Order]) -> list[Order]:
        """Cancel this position's orders still working at the broker that its backstop record does not
        name (the bracket legs of an entry whose run died before it recorded them); what they had sold
        joins ``fired``. Returns the other working exit orders of the symbol (not the agent's)."""
        ctx, pos = self.ctx, self.position
        listing = await ctx.broker.list_orders(open_only=True, symbol=pos.symbol)
        base = order_id_base(ctx, pos)

        def own(order: Order) -> bool:
            return order.client_order_id == base or order.client_order_id.startswith(base + "-")

        own_parents = {o.broker_order_id for o in listing if own(o)}
        others: list[Order] = []
        for order in working_exit_orders(listing, pos.side):
            if not (own(order) or order.parent_order_id in own_parents):
                others.append(order)
                continue
            order = await ctx.broker.cancel_order(order.broker_order_id)
            self._record_order(order)
            if order.filled_quantity > 0 and order.purpose is not OrderPurpose.EXIT:
                fired.append(order)
        return others

    async def broker_quantity(self) -> int:
        """How much of the position the broker holds (on its side)."""
        pos = self.position
        for held in await self.ctx.broker.positions():
            if held.symbol == pos.symbol and held.side is pos.side:
                return held.quantity
        return 0

    async def _place(self, quantity: int, last_quote: Quote | None, trigger_time: datetime | None) -> Order:
        ctx, pos = self.ctx, self.position
        client_order_id = await self._next_exit_id()
        order_type, limit = OrderType.MARKET, None
        if ctx.profile.monitor.exit_order_type == "marketable_limit" and last_quote is not None:
            day = ctx.trading_day()
            ticks = ctx.profile.monitor.marketable_limit_ticks
            long = pos.side is PositionSide.LONG
            base_price = last_quote.bid if long else last_quote.ask
            limit = ticks_away(pos.symbol.market, base_price, -ticks if long else ticks, day,
                               ctx.profile.ticks.hk_phase2_date)
            limit = round_to_tick(pos.symbol.market, limit, day, Rounding.NEAREST, ctx.profile.ticks.hk_phase2_date)
            order_type = OrderType.LIMIT
        request = OrderRequest(
            symbol=pos.symbol, side=pos.side.exit_side, quantity=quantity, order_type=order_type,
            client_order_id=client_order_id, limit_price=limit, purpose=OrderPurpose.EXIT,
        )
        order = await ctx.broker.place_order(request)
        if trigger_time is not None:
            self.reaction_seconds.append((ctx.clock.now() - trigger_time).total_seconds())
        self._record_order(order)
        return order

    async def _next_exit_id(self) -> str:
        """The client id of the next exit order: derived from the entry's own (unique at the broker), its
        number the first the broker has not seen. Asked of the broker, not the database: the sale never
        waits for PostgreSQL, and a reset database can never pick up an old exit order as this one."""
        prefix = f"{order_id_base(self.ctx, self.position)}-x"
        while True:
            self._exit_orders_sent += 1
            client_order_id = f"{prefix}{self._exit_orders_sent}"
            if await self.ctx.broker.find_order(client_order_id) is None:
                return client_order_id

    def _record_order(self, order: Order) -> None:
        ctx = self.ctx
        ctx.journal.record_order(order, trading_day=ctx.trading_day(), at=ctx.clock.now(),
                                 cycle_id=self.position.cycle_id, position_id=self.position.position_id)

    async def _book_vanished(self, haiku_calls: int) -> Booked:
        """The broker no longer holds the position: book it from the broker's own fills, never at 0."""
        ctx, pos = self.ctx, self.position
        fills = [f for f in await ctx.broker.fills(pos.entry_time, pos.symbol) if f.side is pos.side.exit_side]
        if fills:
            qty = sum(f.quantity for f in fills)
            avg = sum(f.price * f.quantity for f in fills) / qty
            fired = any(f.broker_order_id in pos.backstop_order_ids for f in fills)
            reason = ExitReason.BACKSTOP if fired else ExitReason.CLOSED_AT_BROKER
            return await self._book(avg, sum((f.fees for f in fills), Decimal(0)), reason.value, CloseType.BROKER,
                                    "closed at the broker; booked with the broker's fills", haiku_calls,
                                    at=max(f.time for f in fills))
        ctx.journal.mark_reconciled_missing(pos.position_id, ctx.clock.now(),
                                            "not held at the broker and no exit fill found")
        await ctx.journal.flush(ctx.store)
        await ctx.tell(pos, EventType.RECONCILE, f"{pos.symbol.short} vanished at the broker",
                       f"{pos.symbol} is not held at the broker and no exit fill was found; marked "
                       "reconciled_missing (not booked at any price).", {"action": "reconciled_missing"})
        return Booked(ExitReason.RECONCILED_MISSING.value, CloseType.BROKER)

    async def _book_fills(self, orders: list[Order], reason: str, close_type: CloseType, detail: str,
                          haiku_calls: int, quantity: int | None = None) -> Booked:
        sold = sum(o.filled_quantity for o in orders)
        avg = sum((o.avg_fill_price or Decimal(0)) * o.filled_quantity for o in orders) / sold
        return await self._book(avg, sum((o.fees for o in orders), Decimal(0)), reason, close_type, detail,
                                haiku_calls, quantity=quantity)

    async def _book(self, price: Decimal, fees: Decimal, reason: str, close_type: CloseType, detail: str,
                    haiku_calls: int, at: datetime | None = None, quantity: int | None = None) -> Booked:
        """Book the exit: journaled first (the P&L worked out here, as the store does), then written to the
        database if it answers; Big Bro hears of it either way."""
        ctx, pos = self.ctx, self.position
        sold = quantity or pos.quantity
        net, pct = realized_pnl(pos.side, sold, pos.entry_price, price, pos.entry_fees + fees)
        ctx.journal.close_position(pos.position_id, exit_price=price, exit_time=at or ctx.clock.now(),
                                   exit_reason=reason, exit_type=close_type.value, exit_fees=fees, quantity=quantity)
        self.booked = Booked(reason, close_type, price, net)
        await ctx.journal.flush(ctx.store)
        await ctx.tell(
            pos, EventType.EXIT,
            f"EXIT {pos.symbol.short} {reason}: {pos.symbol.market.currency} {net:+,.2f}",
            f"Sold {sold} {pos.symbol} at {price:.4f} (entry {pos.entry_price}); reason {reason} "
            f"({detail}); fees {fees:.2f}; P&L {net:+,.2f} ({pct:+.2f}%).",
            {"exit_price": price, "entry_price": pos.entry_price, "quantity": sold, "reason": reason,
             "exit_type": close_type.value, "fees": fees, "realized_pnl": net, "realized_pnl_pct": pct,
             "haiku_calls": haiku_calls},
        )
        return self.booked
