"""Symbols, sides, ticks and board lots: the money vocabulary, as pure values.

* One canonical symbol form inside the program: ``HK.00700``, ``US.AAPL``.
* Sides are enums, never free strings: orders buy/sell, positions long/short.
* Prices are ``Decimal`` on the exchange's tick grid; quantities are integers.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal


class Market(str, enum.Enum):
    HK = "HK"
    US = "US"

    @property
    def currency(self) -> str:
        return {"HK": "HKD", "US": "USD"}[self.value]


class OrderSide(str, enum.Enum):
    BUY = "buy"
    SELL = "sell"


class PositionSide(str, enum.Enum):
    LONG = "long"
    SHORT = "short"

    @property
    def entry_side(self) -> OrderSide:
        return OrderSide.BUY if self is PositionSide.LONG else OrderSide.SELL

    @property
    def exit_side(self) -> OrderSide:
        return OrderSide.SELL if self is PositionSide.LONG else OrderSide.BUY


class SymbolError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Symbol:
    market: Market
    code: str

    def __str__(self) -> str:
        return f"{self.market.value}.{self.code}"

    @property
    def short(self) -> str:
        """The display form: ``00700``, ``AAPL``."""
        return self.code

_HK_FORMS = (
    re.compile(r"^HK\.(\d{1,5})$"),
    re.compile(r"^(\d{1,5})\.HK$"),
    re.compile(r"^(\d{1,5})$"),
)
_US_FORMS = (re.compile(r"^US\.([A-Z][A-Z0-9]{0,5}(?:\.[A-Z])?)$"), re.compile(r"^([A-Z][A-Z0-9]{0,5}(?:\.[A-Z])?)$"))
_ACCEPTED = "HK: 700, 0700, 00700, 0700.HK, HK.00700, hk.700; US: AAPL, aapl, US.AAPL"


def parse_symbol(text: str | Symbol, default_market: Market | None = None) -> Symbol:
    """Parse any accepted spelling into the canonical ``Symbol``.

    A bare number is a Hong Kong code; a bare ticker is a US one. ``default_market`` only
    breaks ties that the text itself cannot (it never turns a number into a US ticker).
    """
    if isinstance(text, Symbol):
        return text
    if not isinstance(text, str):
        raise SymbolError(f"symbol must be text, got {type(text).__name__} {text!r}; accepted forms: {_ACCEPTED}")
    raw = text.strip().upper()
    for form in _HK_FORMS:
        match = form.match(raw)
        if match:
            number = int(match.group(1))
            if number == 0:
                raise SymbolError(f"'{text}' is not a Hong Kong stock code (00000); accepted forms: {_ACCEPTED}")
            return Symbol(Market.HK, f"{number:05d}")
    for form in _US_FORMS:
        match = form.match(raw)
        if match:
            return Symbol(Market.US, match.group(1))
    raise SymbolError(f"'{text}' is not a symbol this agent understands; accepted forms: {_ACCEPTED}")

# --- Ticks ------------------------------------------------------------------------------------
# HKEX spread table: (upper bound of the band, inclusive; tick). Prices from 0.01 to 9,995.
_HK_BANDS_ORIGINAL: tuple[tuple[Decimal, Decimal], ...] = tuple(
    (Decimal(hi), Decimal(tick))
    for hi, tick in (
        ("0.25", "0.001"), ("0.50", "0.005"), ("10.00", "0.01"), ("20.00", "0.02"),
        ("100.00", "0.05"), ("200.00", "0.1"), ("500.00", "0.2"), ("1000.00", "0.5"),
        ("2000.00", "1"), ("5000.00", "2"), ("9995.00", "5"),
    )
)
# Reduction of minimum spreads, phase 1 (in force from 2025-08-04): 10-20 -> 0.01, 20-50 -> 0.02.
HK_SPREAD_PHASE1_DATE = date(2025, 8, 4)
_HK_BANDS_PHASE1 = tuple(
    (Decimal(hi), Decimal(tick))
    for hi, tick in (
        ("0.25", "0.001"), ("0.50", "0.005"), ("10.00", "0.01"), ("20.00", "0.01"),
        ("50.00", "0.02"), ("100.00", "0.05"), ("200.00", "0.1"), ("500.00", "0.2"),
        ("1000.00", "0.5"), ("2000.00", "1"), ("5000.00", "2"), ("9995.00", "5"),
    )
)
# Phase 2 (0.50-10 -> 0.005) has no date yet: the profile sets `ticks.hk_phase2_date` when HKEX
# announces it.
_HK_BANDS_PHASE2 = tuple(
    (hi, Decimal("0.005") if hi == Decimal("10.00") else tick) for hi, tick in _HK_BANDS_PHASE1
)
HK_MAX_PRICE = Decimal("9995")


def _hk_bands(on: date, phase2_date: date | None) -> tuple[tuple[Decimal, Decimal], ...]:
    if phase2_date is not None and on >= phase2_date:
        return _HK_BANDS_PHASE2
    if on >= HK_SPREAD_PHASE1_DATE:
        return _HK_BANDS_PHASE1
    return _HK_BANDS_ORIGINAL


class PriceError(ValueError):
    pass


def to_decimal(value: float | int | str | Decimal) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        # repr() gives the shortest text that round-trips, so 85.4000015258789 stays itself
        # (it is then rounded to the tick) rather than growing 50 binary digits.
        return Decimal(repr(value))
    return Decimal(value)


def tick_size(market: Market, price: float | Decimal, on: date, hk_phase2_date: date | None = None) -> Decimal:
    """The minimum price step for ``price`` on trading day ``on``."""
    p = to_decimal(price)
    if p <= 0:
        raise PriceError(f"price must be positive, got {p}")
    if market is Market.US:
        return Decimal("0.01") if p >= 1 else Decimal("0.0001")
    if p > HK_MAX_PRICE:
        raise PriceError(f"price {p} is above the HKEX spread table (max {HK_MAX_PRICE})")
    for upper, tick in _hk_bands(on, hk_phase2_date):
        if p <= upper:
            return tick
    raise AssertionError("unreachable: bands end at the maximum price")


class Rounding(str, enum.Enum):
    NEAREST = "nearest"
    DOWN = "down"
    UP = "up"


def round_to_tick(
    market: Market,
    price: float | Decimal,
    on: date,
    how: Rounding = Rounding.NEAREST,
    hk_phase2_date: date | None = None,
) -> Decimal:
    """Round ``price`` onto the tick grid.

    Directional rounding is for limit prices: a buy limit rounds DOWN (never pay more than
    asked), a sell limit rounds UP (never sell for less). Float noise from data feeds
    (``85.4000015258789``) is absorbed first, so a price that is on the grid stays put.
    """
    p = to_decimal(price)
    tick = tick_size(market, p, on, hk_phase2_date)
    units = p / tick
    nearest = units.to_integral_value(ROUND_HALF_UP)
    # Data noise is far below a thousandth of a tick: treat it as on-grid.
    if abs(units - nearest) < Decimal("0.001"):
        units = nearest
    mode = {Rounding.NEAREST: ROUND_HALF_UP, Rounding.DOWN: ROUND_FLOOR, Rounding.UP: ROUND_CEILING}[how]
    rounded = units.to_integral_value(mode) * tick
    # A price that crossed into a band with a coarser tick must sit on that band's grid.
    if tick_size(market, rounded, on, hk_phase2_date) != tick:
        return round_to_tick(market, rounded, on, how, hk_phase2_date)
    return rounded.quantize(tick)


def is_on_tick(market: Market, price: Decimal, on: date, hk_phase2_date: date | None = None) -> bool:
    tick = tick_size(market, price, on, hk_phase2_date)
    return (to_decimal(price) % tick) == 0


def ticks_away(market: Market, price: Decimal, n: int, on: date, hk_phase2_date: date | None = None) -> Decimal:
    """``price`` moved by ``n`` ticks (negative: down), band changes respected."""
    p = round_to_tick(market, price, on, Rounding.NEAREST, hk_phase2_date)
    step = 1 if n > 0 else -1
    for _ in range(abs(n)):
        if step > 0:
            p = p + tick_size(market, p + Decimal("0.0000001"), on, hk_phase2_date)
        else:
            p = p - tick_size(market, p, on, hk_phase2_date)
        p = round_to_tick(market, p, on, Rounding.NEAREST, hk_phase2_date)
    return p

# --- Board lots -------------------------------------------------------------------------------
@dataclass(frozen=True)
class LotSizing:
    quantity: int
    lots: int
    position_value: Decimal
    refused_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.refused_reason is None


def size_by_lot(cap_value: Decimal, price: Decimal, board_lot: int, currency: str = "") -> LotSizing:
    """``floor(cap / (price x lot)) x lot``; refuses instead of ever rounding up to one lot."""
    if board_lot <= 0:
        raise ValueError(f"board lot must be a positive integer, got {board_lot}")
    price = to_decimal(price)
    cap_value = to_decimal(cap_value)
    if price <= 0:
        raise PriceError(f"price must be positive, got {price}")
    lot_value = price * board_lot
    lots = int(cap_value // lot_value)
    if lots < 1:
        unit = f" {currency}" if currency else ""
        return LotSizing(
            0, 0, Decimal(0),
            refused_reason=(
                f"one board lot ({board_lot} shares x {price} = {lot_value:,.2f}{unit}) is above "
                f"the position cap of {cap_value:,.2f}{unit}; not buying"
            ),
        )
    quantity = lots * board_lot
    return LotSizing(quantity, lots, price * quantity)


def check_lot_multiple(quantity: int, board_lot: int) -> str | None:
    """A reason when ``quantity`` is not a positive multiple of the board lot, else None."""
    if quantity <= 0:
        return f"quantity must be positive, got {quantity}"
    if quantity % board_lot:
        return f"quantity {quantity} is not a multiple of the board lot {board_lot} (try {quantity // board_lot * board_lot or board_lot})"
    return None
