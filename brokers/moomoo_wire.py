"""Moomoo's words and frames in our types: SDK status/side codes, cells, times, and rows of its
DataFrames as ``Quote``, ``Snapshot``, bars, ``Order``, ``Fill`` and ``BrokerPosition``.

* Futu stamps a minute K-line with its END time (the first HK bar is ``09:31:00``) in
  exchange-local time; ``bars_frame`` converts to the bar's open time in UTC, as the contract asks.
* SDK cells hold ``'N/A'`` or NaN for "no value"; those become None, never 0.
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from typing import Any, Mapping
from zoneinfo import ZoneInfo

import pandas as pd

from brokers.base import (
    BAR_COLUMNS,
    BrokerError,
    BrokerPosition,
    Fill,
    HistoryQuota,
    Order,
    OrderPurpose,
    OrderStatus,
    OrderType,
    Quote,
    Snapshot,
    Timeframe,
)
from core.instruments import Market, OrderSide, PositionSide, SymbolError, parse_symbol, tick_size, to_decimal

log = logging.getLogger("catalyst.brokers.moomoo")

EXCHANGE_TZ = {Market.HK: ZoneInfo("Asia/Hong_Kong"), Market.US: ZoneInfo("America/New_York")}
# A daily bar is final after the closing auction (HK CAS ends 16:10) / the close (US).
DAY_BAR_FINAL = {Market.HK: time(16, 10), Market.US: time(16, 0)}
KTYPES = {Timeframe.M1: "K_1M", Timeframe.M5: "K_5M", Timeframe.M15: "K_15M", Timeframe.H1: "K_60M",
          Timeframe.D1: "K_DAY"}
_SDK_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")

# --- Status and side vocabulary --------------------------------------------------------------
_WORKING = {"UNSUBMITTED", "WAITING_SUBMIT", "SUBMITTING", "SUBMITTED", "TIMEOUT", "CANCELLING_ALL",
            "CANCELLING_PART", "FILLED_PART", "N/A", "NONE"}
_STATUS_MAP = {
    "FILLED_ALL": OrderStatus.FILLED,
    "CANCELLED_ALL": OrderStatus.CANCELLED,
    "CANCELLED_PART": OrderStatus.CANCELLED,
    "SUBMIT_FAILED": OrderStatus.REJECTED,
    "FAILED": OrderStatus.REJECTED,
    "DISABLED": OrderStatus.REJECTED,
    "DELETED": OrderStatus.REJECTED,
    "FILL_CANCELLED": OrderStatus.REJECTED,
}
OPEN_SDK_STATUSES = ["UNSUBMITTED", "WAITING_SUBMIT", "SUBMITTING", "SUBMITTED", "FILLED_PART",
                     "CANCELLING_PART", "CANCELLING_ALL", "TIMEOUT"]
_BUY_SIDES = {"BUY", "BUY_BACK"}
_SELL_SIDES = {"SELL", "SELL_SHORT"}


def map_order_status(sdk_status: str, filled_quantity: int) -> OrderStatus:
    """Moomoo's order status (a ``moomoo.OrderStatus`` string) in the contract's vocabulary.

    Working states are SUBMITTED, or PARTIALLY_FILLED once something filled. Cancelled orders keep
    their filled quantity (CANCELLED_PART is CANCELLED with a fill). An order disabled after a
    partial fill is reported CANCELLED so the fill is not lost; failed, deleted and reversed orders
    are REJECTED.
    """
    status = str(sdk_status).upper()
    if status in _WORKING:
        return OrderStatus.PARTIALLY_FILLED if filled_quantity > 0 else OrderStatus.SUBMITTED
    mapped = _STATUS_MAP.get(status)
    if mapped is None:
        log.warning("unknown Moomoo order status %r; treating it as still working", sdk_status)
        return OrderStatus.PARTIALLY_FILLED if filled_quantity > 0 else OrderStatus.SUBMITTED
    if status == "DISABLED" and filled_quantity > 0:
        return OrderStatus.CANCELLED
    return mapped


def map_order_side(sdk_side: str) -> OrderSide:
    side = str(sdk_side).upper()
    if side in _BUY_SIDES:
        return OrderSide.BUY
    if side in _SELL_SIDES:
        return OrderSide.SELL
    raise BrokerError(f"Moomoo reported an order side this agent does not know: {sdk_side!r}")


def map_position_side(sdk_side: str, quantity: float) -> PositionSide:
    side = str(sdk_side).upper()
    if side == "LONG":
        return PositionSide.LONG
    if side == "SHORT":
        return PositionSide.SHORT
    return PositionSide.SHORT if quantity < 0 else PositionSide.LONG


def map_order_type(sdk_type: str) -> OrderType:
    if sdk_type == "MARKET":
        return OrderType.MARKET
    if sdk_type.startswith("STOP") or sdk_type.startswith("TRAILING"):
        return OrderType.STOP
    return OrderType.LIMIT


# --- Cells ---------------------------------------------------------------------------------------
def as_number(value: Any) -> float | None:
    """A float from an SDK cell, or None for the SDK's 'N/A' and NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def as_decimal(value: Any) -> Decimal | None:
    number = as_number(value)
    return None if number is None else to_decimal(number)


def as_quantity(value: Any) -> int:
    number = as_number(value) or 0.0
    rounded = round(number)
    if abs(number - rounded) > 1e-6:
        raise BrokerError(f"Moomoo reported a fractional share quantity {number}; this agent trades whole shares")
    return int(rounded)


def truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def to_utc(text: Any, tz: tzinfo) -> datetime | None:
    """An exchange-local SDK time string as an aware UTC datetime."""
    if not isinstance(text, str) or not text or text == "N/A":
        return None
    for fmt in _SDK_TIME_FORMATS:
        try:
            naive = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return naive.replace(tzinfo=tz).astimezone(timezone.utc)
    log.warning("unparseable Moomoo time %r", text)
    return None


# --- Rows ----------------------------------------------------------------------------------------
def snapshot_from_row(row: dict, tz: tzinfo, now: datetime, hk_phase2_date: Any) -> Snapshot:
    symbol = parse_symbol(row["code"])
    last = as_decimal(row.get("last_price")) or Decimal(0)
    prev_close = as_decimal(row.get("prev_close_price"))
    reference = last if last > 0 else (prev_close or Decimal(0))
    lot_size = int(as_number(row.get("lot_size")) or 0)
    if lot_size <= 0:
        raise BrokerError(f"Moomoo snapshot of {symbol} has no board lot (lot_size={row.get('lot_size')!r})")
    quote = Quote(
        symbol=symbol, time=to_utc(row.get("update_time"), tz) or now, price=reference,
        bid=as_decimal(row.get("bid_price")) or reference, ask=as_decimal(row.get("ask_price")) or reference,
        volume=int(as_number(row.get("volume")) or 0), open=as_decimal(row.get("open_price")),
        high=as_decimal(row.get("high_price")), low=as_decimal(row.get("low_price")), prev_close=prev_close,
    )
    day = now.astimezone(tz).date()
    tick = tick_size(symbol.market, reference if reference > 0 else Decimal("1"), day, hk_phase2_date)
    return Snapshot(quote=quote, lot_size=lot_size, tick=tick, name=str(row.get("name") or symbol.short))


def quote_from_push(row: dict, tz: tzinfo, now: datetime) -> Quote:
    price = as_decimal(row.get("last_price"))
    if price is None:
        raise ValueError(f"no last price in push for {row.get('code')}")
    stamp = to_utc(f"{row.get('data_date')} {row.get('data_time')}", tz) or now
    # Moomoo's basic quote push carries no bid/ask: both are the last price here.
    return Quote(symbol=parse_symbol(row["code"]), time=stamp, price=price, bid=price, ask=price,
                 volume=int(as_number(row.get("volume")) or 0), open=as_decimal(row.get("open_price")),
                 high=as_decimal(row.get("high_price")), low=as_decimal(row.get("low_price")),
                 prev_close=as_decimal(row.get("prev_close_price")))


def order_from_row(row: dict, tz: tzinfo, purposes: Mapping[str, OrderPurpose]) -> Order:
    filled = as_quantity(row.get("dealt_qty"))
    sdk_type = str(row.get("order_type", "")).upper()
    price = as_decimal(row.get("price"))
    aux = as_decimal(row.get("aux_price"))
    status = map_order_status(row.get("order_status", ""), filled)
    broker_id = str(row["order_id"])
    reason = str(row.get("last_err_msg") or "") or None
    return Order(
        broker_order_id=broker_id,
        client_order_id=str(row.get("remark") or ""),
        symbol=parse_symbol(row["code"]),
        side=map_order_side(row.get("trd_side", "")),
        order_type=map_order_type(sdk_type),
        quantity=as_quantity(row.get("qty")),
        status=status,
        filled_quantity=filled,
        avg_fill_price=as_decimal(row.get("dealt_avg_price")) if filled > 0 else None,
        limit_price=price if sdk_type not in ("MARKET", "STOP") and price else None,
        stop_price=aux if sdk_type.startswith("STOP") or sdk_type.startswith("TRAILING") else None,
        created_at=to_utc(row.get("create_time"), tz),
        updated_at=to_utc(row.get("updated_time"), tz),
        reject_reason=reason if status is OrderStatus.REJECTED else None,
        purpose=purposes.get(broker_id, OrderPurpose.ENTRY),
    )


def fill_from_deal(row: dict, tz: tzinfo, now: datetime) -> Fill:
    return Fill(broker_order_id=str(row["order_id"]), symbol=parse_symbol(row["code"]),
                side=map_order_side(row["trd_side"]), quantity=as_quantity(row["qty"]),
                price=as_decimal(row["price"]) or Decimal(0),
                time=to_utc(row.get("create_time"), tz) or now, fill_id=str(row["deal_id"]))


def fill_from_order(order: Order, now: datetime) -> Fill:
    """Paper accounts have no deals: an order's filled quantity at its average price, as one fill."""
    return Fill(broker_order_id=order.broker_order_id, symbol=order.symbol, side=order.side,
                quantity=order.filled_quantity, price=order.avg_fill_price,
                time=order.updated_at or order.created_at or now,
                fill_id=f"{order.broker_order_id}:{order.filled_quantity}")


def position_from_row(row: dict) -> BrokerPosition | None:
    """None for a row with nothing held (OpenD lists positions closed today)."""
    quantity = as_number(row.get("qty")) or 0.0
    if quantity == 0:
        return None
    cost = as_decimal(row.get("average_cost"))
    if cost is None or cost <= 0:
        cost = as_decimal(row.get("cost_price")) or Decimal(0)
    return BrokerPosition(
        symbol=parse_symbol(row["code"]), side=map_position_side(row.get("position_side", ""), quantity),
        quantity=abs(as_quantity(quantity)), avg_cost=cost, market_price=as_decimal(row.get("nominal_price")))


# --- Bars ----------------------------------------------------------------------------------------
def history_window(timeframe: Timeframe, start: datetime, end: datetime, tz: tzinfo) -> tuple[str, str]:
    local_start, local_end = start.astimezone(tz), end.astimezone(tz)
    if timeframe is Timeframe.D1:
        return local_start.strftime("%Y-%m-%d"), local_end.strftime("%Y-%m-%d")
    # Futu's time key is the bar's end: fetch one bar past ``end`` and filter on open time.
    local_end += timedelta(minutes=timeframe.minutes)
    return local_start.strftime("%Y-%m-%d %H:%M:%S"), local_end.strftime("%Y-%m-%d %H:%M:%S")


def bars_frame(raw: pd.DataFrame, timeframe: Timeframe, market: Market, start: datetime, end: datetime,
               now: datetime) -> pd.DataFrame:
    """K-line rows as bars indexed by open time (UTC): those opened in [start, end) and closed by ``now``."""
    if raw.empty:
        return empty_bars()
    tz = EXCHANGE_TZ[market]
    keys = pd.to_datetime(raw["time_key"], format="mixed")
    if timeframe is Timeframe.D1:
        opens = keys
        closes = keys.dt.normalize() + pd.Timedelta(hours=DAY_BAR_FINAL[market].hour,
                                                     minutes=DAY_BAR_FINAL[market].minute)
    else:
        closes = keys
        opens = _bar_opens(keys, timeframe.minutes)
    frame = raw.assign(open_time=opens.dt.tz_localize(tz).dt.tz_convert("UTC"),
                       close_time=closes.dt.tz_localize(tz).dt.tz_convert("UTC"))
    keep = (frame["open_time"] >= start) & (frame["open_time"] < end) & (frame["close_time"] <= now)
    frame = frame[keep].drop_duplicates("open_time").sort_values("open_time")
    bars = frame.set_index("open_time")[BAR_COLUMNS].astype(float)
    bars.index.name = "time"
    return bars


def _bar_opens(keys: pd.Series, minutes: int) -> pd.Series:
    """Open times of end-stamped intraday bars: ``minutes`` earlier, but never before the previous
    bar of the same day (a session's last bar can be short, e.g. the HK 11:30-12:00 hour bar)."""
    opens = keys - pd.Timedelta(minutes=minutes)
    previous = keys.sort_values().shift(1).reindex(keys.index)
    same_day = previous.dt.normalize() == keys.dt.normalize()
    return opens.where(~(same_day & (previous > opens)), previous)


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame(columns=BAR_COLUMNS, dtype=float, index=pd.DatetimeIndex([], tz="UTC", name="time"))


def quota_from(used: Any, remaining: Any, detail: list[dict]) -> HistoryQuota:
    """``get_history_kl_quota(get_detail=True)``: the detail rows name the codes counted this period."""
    counted = set()
    for row in detail:
        try:
            counted.add(parse_symbol(row["code"]))
        except SymbolError:     # a market this agent does not trade (SH, SZ): it counts, but cannot be asked here
            pass
    return HistoryQuota(used=int(used), remaining=int(remaining), counted=frozenset(counted))
