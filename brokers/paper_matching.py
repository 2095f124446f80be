"""The paper exchange's order book: the checks an order must pass to be accepted (refusals raised
with a reason a person can act on), and the matching of working orders against each step of the
tapes (price, liquidity, fees, the account's cash and holdings). The rules are told in
``brokers.paper``; ``PaperExchange`` mixes this in and owns the state it works on: ``_working``,
``_holdings``, ``_cash``, ``_fills``, the tapes, the clock and the calendar."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from brokers.base import Fill, InsufficientFunds, Order, OrderRejected, OrderRequest, OrderStatus, OrderType, UnknownSymbol
from brokers.fees import execution_fees
from brokers.paper_tapes import Tape, with_slippage
from core.instruments import OrderSide, Rounding, Symbol, check_lot_multiple, is_on_tick, round_to_tick, tick_size
from data.calendar import SessionState

AVG_PRICE_PLACES = Decimal("0.0001")


@dataclass
class WorkingOrder:
    order: Order
    session_day: date
    value_filled: Decimal = Decimal(0)
    fills: int = 0
    triggered: bool = False


@dataclass
class Holding:
    quantity: int = 0
    cost: Decimal = Decimal(0)


class OrderMatching:
    """Mixed into ``PaperExchange``: order checks, acceptance and matching."""

    def _symbol_for_order(self, request: OrderRequest) -> Symbol:
        try:
            return self._known(request.symbol)
        except UnknownSymbol as e:
            raise OrderRejected(f"order {request.client_order_id} refused: {e}") from None

    def _check_shape(self, request: OrderRequest, symbol: Symbol, now: datetime) -> None:
        what = f"order {request.client_order_id} ({symbol})"
        if not isinstance(request.side, OrderSide):
            raise OrderRejected(f"{what}: side must be OrderSide.BUY or OrderSide.SELL, got {request.side!r}")
        if not isinstance(request.quantity, int) or isinstance(request.quantity, bool):
            raise OrderRejected(f"{what}: quantity must be a whole number of shares, got {request.quantity!r}")
        lot_problem = check_lot_multiple(request.quantity, self._history[symbol].series.lot_size)
        if lot_problem:
            raise OrderRejected(f"{what}: {lot_problem}")
        if request.take_profit_price is not None or request.stop_loss_price is not None:
            raise OrderRejected(f"{what}: the paper exchange does not hold bracket legs (supports_bracket is False); place the stop as a separate stop order after the fill")
        needed = {OrderType.LIMIT: ("limit", request.limit_price), OrderType.STOP: ("stop", request.stop_price)}
        if request.order_type in needed:
            label, price = needed[request.order_type]
            if price is None:
                raise OrderRejected(f"{what}: a {label} order needs a {label} price")
            self._check_price(what, label, price, now)

    def _check_price(self, what: str, label: str, price: Decimal, now: datetime) -> None:
        if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
            raise OrderRejected(f"{what}: {label} price must be a positive Decimal, got {price!r}")
        day = self._calendar.trading_day(now)
        phase2 = self._profile.ticks.hk_phase2_date
        if not is_on_tick(self._market, price, day, phase2):
            tick = tick_size(self._market, price, day, phase2)
            below = round_to_tick(self._market, price, day, Rounding.DOWN, phase2)
            above = round_to_tick(self._market, price, day, Rounding.UP, phase2)
            raise OrderRejected(f"{what}: {label} price {price} is off the tick grid (tick {tick} at this price); use {below} or {above}")

    def _check_stop_side(self, request: OrderRequest, symbol: Symbol, last: Decimal) -> None:
        if request.order_type is not OrderType.STOP:
            return
        stop = request.stop_price
        assert stop is not None
        if request.side is OrderSide.SELL and stop >= last:
            raise OrderRejected(f"sell stop {stop} for {symbol} is at or above the last price {last} and would trigger at once; put it below the price, or sell with a market or limit order")
        if request.side is OrderSide.BUY and stop <= last:
            raise OrderRejected(f"buy stop {stop} for {symbol} is at or below the last price {last} and would trigger at once; put it above the price, or buy with a market or limit order")

    def _check_sellable(self, request: OrderRequest, symbol: Symbol) -> None:
        held = self._holdings.get(symbol, Holding()).quantity
        offered = sum(w.order.remaining for w in self._working.get(symbol, []) if w.order.side is OrderSide.SELL)
        if request.quantity > held - offered:
            raise OrderRejected(
                f"cannot sell {request.quantity} {symbol}: holding {held}, of which {offered} already in open sell orders; "
                "the paper exchange does not sell short (cancel the other sell orders first)"
            )

    def _check_cash(self, request: OrderRequest, symbol: Symbol, tape: Tape, i: int) -> None:
        price = self._reference_price(request.order_type, request.limit_price, request.stop_price, tape.asks[i])
        cost = self._cost_with_fees(symbol, request.quantity, price)
        reserved = self._reserved_for_buys()
        available = self._cash - reserved
        if cost > available:
            currency = self._market.currency
            raise InsufficientFunds(
                f"buying {request.quantity} {symbol} at about {price} needs {currency} {cost:,.2f} with fees; "
                f"available {currency} {available:,.2f} (cash {self._cash:,.2f} less {reserved:,.2f} reserved for open buy orders)"
            )

    def _reference_price(self, order_type: OrderType, limit: Decimal | None, stop: Decimal | None, ask: Decimal) -> Decimal:
        if order_type is OrderType.LIMIT and limit is not None:
            return limit
        if order_type is OrderType.STOP and stop is not None:
            return max(stop, ask)
        return ask

    def _cost_with_fees(self, symbol: Symbol, quantity: int, price: Decimal) -> Decimal:
        value = price * quantity
        return value + execution_fees(self._market, OrderSide.BUY, quantity, value, self._profile).total

    def _reserved_for_buys(self) -> Decimal:
        reserved = Decimal(0)
        for symbol, working in self._working.items():
            for w in working:
                if w.order.side is OrderSide.BUY and w.order.remaining > 0:
                    step = self._step_at(symbol, self._clock.now())
                    ask = step[0].asks[step[1]] if step else Decimal(0)
                    price = self._reference_price(w.order.order_type, w.order.limit_price, w.order.stop_price, ask)
                    reserved += self._cost_with_fees(symbol, w.order.remaining, price)
        return reserved

    def _closed_reason(self, now: datetime, state: SessionState) -> str:
        next_open = self._calendar.local(self._calendar.next_open(now))
        if state is SessionState.LUNCH:
            return f"market closed (lunch break until {next_open:%H:%M %Z})"
        return f"market closed; next open {next_open:%Y-%m-%d %H:%M %Z}"

    def _accept(self, request: OrderRequest, symbol: Symbol, now: datetime, state: SessionState) -> WorkingOrder:
        broker_id = f"PAPER-{next(self._order_ids):06d}"
        # Outside a session the order is for the next one (and expires at that session's close).
        session_day = self._calendar.trading_day(self._calendar.next_open(now) if state is SessionState.CLOSED else now)
        order = Order(
            broker_order_id=broker_id,
            client_order_id=request.client_order_id,
            symbol=symbol,
            side=request.side,
            order_type=request.order_type,
            quantity=request.quantity,
            status=OrderStatus.SUBMITTED,
            limit_price=request.limit_price if request.order_type is OrderType.LIMIT else None,
            stop_price=request.stop_price if request.order_type is OrderType.STOP else None,
            created_at=now,
            updated_at=now,
            purpose=request.purpose,
        )
        working = WorkingOrder(order, session_day)
        self._orders[broker_id] = working
        self._by_client_id[request.client_order_id] = broker_id
        self._working.setdefault(symbol, []).append(working)
        self._publish(order)
        return working


    # --- Matching -------------------------------------------------------------------------------
    def _try_fill(self, w: WorkingOrder, tape: Tape, i: int) -> None:
        if w.session_day < tape.day:
            # The replay did not pass that session's close: the day order has lapsed all the same.
            self._finish(w, OrderStatus.EXPIRED)
            return
        price = self._execution_price(w, tape, i)
        if price is None:
            return
        quantity = min(w.order.remaining, self._liquidity_left(tape, i))
        if quantity > 0:
            self._take_liquidity(tape, i, quantity)
            self._execute(w, quantity, price)

    def _execution_price(self, w: WorkingOrder, tape: Tape, i: int) -> Decimal | None:
        order = w.order
        buying = order.side is OrderSide.BUY
        if order.order_type is OrderType.LIMIT:
            assert order.limit_price is not None
            if buying:
                return tape.asks[i] if tape.asks[i] <= order.limit_price else None
            return tape.bids[i] if tape.bids[i] >= order.limit_price else None
        if order.order_type is OrderType.STOP and not w.triggered:
            assert order.stop_price is not None
            last = tape.prices[i]
            w.triggered = last >= order.stop_price if buying else last <= order.stop_price
            if not w.triggered:
                return None
        return self._with_slippage(tape.asks[i] if buying else tape.bids[i], buying, tape.day)

    def _with_slippage(self, price: Decimal, buying: bool, day: date) -> Decimal:
        return with_slippage(self._market, price, buying, day, self._profile)

    def _liquidity_left(self, tape: Tape, i: int) -> int:
        step_time = int(tape.times_us[i])
        used_at, used = self._liquidity_used.get(tape.symbol, (None, 0))
        return tape.fillable[i] - (used if used_at == step_time else 0)

    def _take_liquidity(self, tape: Tape, i: int, quantity: int) -> None:
        step_time = int(tape.times_us[i])
        used_at, used = self._liquidity_used.get(tape.symbol, (None, 0))
        self._liquidity_used[tape.symbol] = (step_time, (used if used_at == step_time else 0) + quantity)

    def _execute(self, w: WorkingOrder, quantity: int, price: Decimal) -> None:
        now = self._clock.now()
        order = w.order
        value = price * quantity
        fees = execution_fees(self._market, order.side, quantity, value, self._profile, order_value_before=w.value_filled).total
        self._book(order.symbol, order.side, quantity, value, fees)
        w.value_filled += value
        w.fills += 1
        filled = order.filled_quantity + quantity
        w.order = order.with_(
            filled_quantity=filled,
            avg_fill_price=(w.value_filled / filled).quantize(AVG_PRICE_PLACES),
            fees=order.fees + fees,
            status=OrderStatus.FILLED if filled == order.quantity else OrderStatus.PARTIALLY_FILLED,
            updated_at=now,
        )
        self._fills.append(Fill(
            broker_order_id=order.broker_order_id, symbol=order.symbol, side=order.side, quantity=quantity,
            price=price, time=now, fees=fees, fill_id=f"{order.broker_order_id}-{w.fills}",
        ))
        if w.order.status is OrderStatus.FILLED:
            self._forget_working(w)
        self._publish(w.order)

    def _book(self, symbol: Symbol, side: OrderSide, quantity: int, value: Decimal, fees: Decimal) -> None:
        holding = self._holdings.setdefault(symbol, Holding())
        if side is OrderSide.BUY:
            self._cash -= value + fees
            holding.cost += value
            holding.quantity += quantity
            return
        self._cash += value - fees
        holding.cost -= holding.cost * quantity / holding.quantity
        holding.quantity -= quantity
        if holding.quantity == 0:
            del self._holdings[symbol]

    def _finish(self, w: WorkingOrder, status: OrderStatus) -> None:
        w.order = w.order.with_(status=status, updated_at=self._clock.now())
        self._forget_working(w)
        self._publish(w.order)

    def _forget_working(self, w: WorkingOrder) -> None:
        working = self._working.get(w.order.symbol, [])
        if w in working:
            working.remove(w)
        if not working:
            self._working.pop(w.order.symbol, None)
