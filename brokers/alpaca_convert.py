"""Alpaca's words and objects in our types, and ours in Alpaca's: explicit vocabulary tables, prices
on the tick grid, whole shares, and SDK orders, positions, fills, snapshots and bars as the
contract's ``Order``-side values, ``BrokerPosition``, ``Fill``, ``Quote`` and bar frames.

* Prices go out on the tick grid (``instruments.round_to_tick``, Decimal): a buy limit rounds
  down, a sell limit (and a take-profit of a long) rounds up, stops round to the nearest tick.
* Position sides come from Alpaca's ``long``/``short`` through an explicit table (the original
  flipped 68 positions by mapping long to SELL); quantities are whole shares.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Sequence
from uuid import UUID

import pandas as pd
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.enums import OrderClass, TimeInForce
from alpaca.trading.enums import OrderSide as AlpacaSide
from alpaca.trading.requests import (
    LimitOrderRequest,
    MarketOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)

from brokers.base import (
    BAR_COLUMNS,
    BrokerError,
    BrokerPosition,
    Fill,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Quote,
    Timeframe,
    UnknownSymbol,
)
from core.instruments import Market, OrderSide, PositionSide, PriceError, Rounding, Symbol, round_to_tick

log = logging.getLogger("brokers.alpaca")

# --- Vocabulary tables: every Alpaca word this adapter understands, mapped explicitly ----------
STATUS: dict[str, OrderStatus] = {
    "new": OrderStatus.SUBMITTED,
    "accepted": OrderStatus.SUBMITTED,
    "pending_new": OrderStatus.SUBMITTED,
    "accepted_for_bidding": OrderStatus.SUBMITTED,
    "held": OrderStatus.SUBMITTED,            # bracket legs waiting for their parent
    "pending_review": OrderStatus.SUBMITTED,
    "stopped": OrderStatus.SUBMITTED,
    "suspended": OrderStatus.SUBMITTED,
    "calculated": OrderStatus.SUBMITTED,      # FILLED when the fill is complete, see order_status
    "done_for_day": OrderStatus.SUBMITTED,
    "pending_cancel": OrderStatus.SUBMITTED,  # still working until Alpaca confirms the cancel
    "pending_replace": OrderStatus.SUBMITTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "replaced": OrderStatus.CANCELLED,        # superseded by another order; this one is finished
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}
ORDER_SIDES = {"buy": OrderSide.BUY, "sell": OrderSide.SELL}
FILL_SIDES = {"buy": OrderSide.BUY, "sell": OrderSide.SELL, "sell_short": OrderSide.SELL}
POSITION_SIDES = {"long": PositionSide.LONG, "short": PositionSide.SHORT}
ORDER_TYPES = {"market": OrderType.MARKET, "limit": OrderType.LIMIT, "stop": OrderType.STOP,
               "stop_limit": OrderType.STOP, "trailing_stop": OrderType.STOP}
TO_ALPACA_SIDE = {OrderSide.BUY: AlpacaSide.BUY, OrderSide.SELL: AlpacaSide.SELL}
TIMEFRAMES = {
    Timeframe.M1: TimeFrame(1, TimeFrameUnit.Minute),
    Timeframe.M5: TimeFrame(5, TimeFrameUnit.Minute),
    Timeframe.M15: TimeFrame(15, TimeFrameUnit.Minute),
    Timeframe.H1: TimeFrame(1, TimeFrameUnit.Hour),
    Timeframe.D1: TimeFrame(1, TimeFrameUnit.Day),
}


# --- Small pure helpers -----------------------------------------------------------------------
def wire_word(value: Any) -> str:
    """An SDK enum or plain string as its lower-case wire word."""
    return str(getattr(value, "value", value)).lower()


def us_ticker(symbol: Symbol) -> str:
    if symbol.market is not Market.US:
        raise UnknownSymbol(f"Alpaca trades US equities only; {symbol} is not one (use the Moomoo broker for HK)")
    return symbol.code


def us_symbol(ticker: str) -> Symbol:
    return Symbol(Market.US, ticker.upper())


def optional_decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def whole_shares(value: Any) -> int:
    """Whole shares; a fractional quantity (bought elsewhere) is truncated and logged."""
    amount = Decimal(str(value or 0))
    whole = int(amount)
    if amount != whole:
        log.warning("Alpaca reported a fractional quantity %s; this agent trades whole shares and counts %d",
                    amount, whole)
    return whole


def tick_price(value: float | Decimal, on: datetime) -> Decimal:
    return round_to_tick(Market.US, value, on.date())


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in BAR_COLUMNS}, index=pd.DatetimeIndex([], tz="UTC"))


def bars_frame(bars: Sequence[Any]) -> pd.DataFrame:
    if not bars:
        return empty_bars()
    index = pd.DatetimeIndex(pd.to_datetime([b.timestamp for b in bars], utc=True))
    frame = pd.DataFrame({c: [float(getattr(b, c)) for b in bars] for c in BAR_COLUMNS}, index=index)
    return frame[~frame.index.duplicated(keep="last")].sort_index()


def limit_rounding(side: OrderSide) -> Rounding:
    """Never pay more than asked on a buy, never sell for less on a sell."""
    return Rounding.DOWN if side is OrderSide.BUY else Rounding.UP


# --- Requests out, answers in -----------------------------------------------------------------
def required_price(request: OrderRequest, name: str) -> Decimal:
    value = getattr(request, name)
    if value is None:
        raise OrderRejected(f"{request.client_order_id}: a {request.order_type.value} order needs {name}")
    return value


def refuse_prices(request: OrderRequest, *names: str) -> None:
    given = [n for n in names if getattr(request, n) is not None]
    if given:
        raise OrderRejected(f"{request.client_order_id}: a {request.order_type.value} order takes no "
                            f"{', '.join(given)}")



def order_request(request: OrderRequest, on: date) -> Any:
    """The alpaca-py request for ``request``, prices on the tick grid of ``on``; ``OrderRejected`` if it cannot be."""
    ticker = us_ticker(request.symbol)
    if not isinstance(request.quantity, int) or request.quantity <= 0:
        raise OrderRejected(f"quantity must be a positive whole number of shares, got {request.quantity!r}")
    common: dict[str, Any] = dict(symbol=ticker, qty=request.quantity, side=TO_ALPACA_SIDE[request.side],
                                  time_in_force=TimeInForce.DAY, client_order_id=request.client_order_id)
    common.update(_bracket_legs(request, on))
    try:
        if request.order_type is OrderType.MARKET:
            refuse_prices(request, "limit_price", "stop_price")
            return MarketOrderRequest(**common)
        if request.order_type is OrderType.LIMIT:
            refuse_prices(request, "stop_price")
            price = round_to_tick(Market.US, required_price(request, "limit_price"), on, limit_rounding(request.side))
            return LimitOrderRequest(limit_price=price, **common)
        if request.order_type is OrderType.STOP:
            refuse_prices(request, "limit_price")
            return StopOrderRequest(stop_price=round_to_tick(Market.US, required_price(request, "stop_price"), on),
                                    **common)
    except PriceError as exc:
        raise OrderRejected(f"{request.client_order_id}: {exc}") from None
    raise OrderRejected(f"order type {request.order_type!r} is not supported by the Alpaca adapter")


def _bracket_legs(request: OrderRequest, on: date) -> dict[str, Any]:
    take, stop = request.take_profit_price, request.stop_loss_price
    if take is None and stop is None:
        return {}
    exit_side = OrderSide.SELL if request.side is OrderSide.BUY else OrderSide.BUY
    try:
        take = None if take is None else round_to_tick(Market.US, take, on, limit_rounding(exit_side))
        stop = None if stop is None else round_to_tick(Market.US, stop, on)
    except PriceError as exc:
        raise OrderRejected(f"{request.client_order_id}: bracket leg: {exc}") from None
    if take is not None and stop is not None:
        wrong = stop >= take if request.side is OrderSide.BUY else stop <= take
        if wrong:
            raise OrderRejected(f"{request.client_order_id}: stop loss {stop} and take profit {take} are on the "
                                f"wrong sides for a {request.side.value} entry")
        order_class = OrderClass.BRACKET
    else:
        order_class = OrderClass.OTO
    legs: dict[str, Any] = {"order_class": order_class}
    if take is not None:
        legs["take_profit"] = TakeProfitRequest(limit_price=take)
    if stop is not None:
        legs["stop_loss"] = StopLossRequest(stop_price=stop)
    return legs

def order_uuid(broker_order_id: str) -> UUID:
    try:
        return UUID(str(broker_order_id))
    except ValueError:
        raise BrokerError(f"'{broker_order_id}' is not an Alpaca order id (they are UUIDs)") from None


def order_status(word: str, filled: int, quantity: int) -> OrderStatus:
    status = STATUS.get(word)
    if status is None:
        log.warning("unknown Alpaca order status %r; treating the order as still working", word)
        status = OrderStatus.SUBMITTED
    if word == "calculated" and quantity and filled >= quantity:
        return OrderStatus.FILLED
    if status is OrderStatus.SUBMITTED and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def position_from(raw: Any) -> BrokerPosition:
    side_word = wire_word(raw.side)
    if side_word not in POSITION_SIDES:
        raise BrokerError(f"Alpaca reported position {raw.symbol} with side {side_word!r}; expected long or short")
    return BrokerPosition(symbol=us_symbol(raw.symbol), side=POSITION_SIDES[side_word], quantity=abs(whole_shares(raw.qty)),
                          avg_cost=Decimal(str(raw.avg_entry_price)), market_price=optional_decimal(raw.current_price))


def fill_from(row: dict) -> Fill:
    side_word = str(row.get("side", "")).lower()
    if side_word not in FILL_SIDES:
        raise BrokerError(f"Alpaca fill {row.get('id')} has side {side_word!r}; expected buy, sell or sell_short")
    return Fill(broker_order_id=str(row["order_id"]), symbol=us_symbol(row["symbol"]), side=FILL_SIDES[side_word],
                quantity=whole_shares(row["qty"]), price=Decimal(str(row["price"])),
                time=pd.Timestamp(row["transaction_time"]).tz_convert("UTC").to_pydatetime(),
                fill_id=str(row["id"]))


def snapshot_quote(symbol: Symbol, snap: Any) -> Quote:
    trade, quote, daily, previous = snap.latest_trade, snap.latest_quote, snap.daily_bar, snap.previous_daily_bar
    times = [x.timestamp for x in (trade, quote) if x is not None]
    when = max(times)
    bid = float(quote.bid_price) if quote and quote.bid_price else None
    ask = float(quote.ask_price) if quote and quote.ask_price else None
    price = float(trade.price) if trade else (bid + ask) / 2 if bid and ask else (bid or ask)
    last = tick_price(price, when)
    # Before the session opens Alpaca's "daily bar" is the previous session's.
    today = daily if daily is not None and when - daily.timestamp < timedelta(hours=24) else None
    prev_close = (previous.close if previous else None) if today is not None else (daily.close if daily else None)
    return Quote(
        symbol=symbol, time=when, price=last,
        bid=tick_price(bid, when) if bid else last, ask=tick_price(ask, when) if ask else last,
        volume=int(today.volume) if today else 0,
        open=tick_price(today.open, when) if today else None,
        high=tick_price(today.high, when) if today else None,
        low=tick_price(today.low, when) if today else None,
        prev_close=tick_price(prev_close, when) if prev_close else None,
    )
