"""Chart patterns with tradeable levels: entry, stop and target on the tick grid.

Every detector is written once, for the bullish shape. The bearish mirror (breakdown, bear flag,
descending triangle ...) is the same detector run on the price series reflected upside down
(``p -> C - p``, highs and lows swapped), its levels reflected back. Volume is not reflected.

Levels are rounded so that the reward:risk a trader reads is never better than the real one:
for a long the entry rounds up and the stop and target round down; for a short the reverse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Callable, Literal

import numpy as np
import pandas as pd

from brokers.base import Timeframe
from data.indicators import check_bar_spacing, ewm_mean, pivot_indices, true_range
from core.instruments import Market, PriceError, Rounding, round_to_tick, ticks_away

Direction = Literal["bullish", "bearish"]

MIN_BARS = 20
ATR_LENGTH = 14
LOOKBACK = 20
BREAKOUT_VOLUME_RATIO = 1.5
NEAR_BREAKOUT_PCT = 1.0  # SPEC section 4: within 1% of the breakout level counts
PIVOT_WING = 2

BEARISH_NAMES = {
    "breakout": "breakdown",
    "near_breakout": "near_breakdown",
    "momentum_continuation": "bearish_momentum",
    "bull_flag": "bear_flag",
    "ascending_triangle": "descending_triangle",
    "cup_handle": "inverted_cup_handle",
    "abcd": "bearish_abcd",
}


@dataclass(frozen=True)
class Pattern:
    name: str
    direction: Direction
    entry: Decimal
    stop: Decimal
    target: Decimal
    confidence: float
    detail: str

    @property
    def reward_risk(self) -> Decimal:
        risk = abs(self.entry - self.stop)
        return (abs(self.target - self.entry) / risk).quantize(Decimal("0.01")) if risk else Decimal(0)

    def to_dict(self) -> dict[str, str | float]:
        return {
            "name": self.name,
            "direction": self.direction,
            "entry": str(self.entry),
            "stop": str(self.stop),
            "target": str(self.target),
            "reward_risk": float(self.reward_risk),
            "confidence": round(self.confidence, 2),
            "detail": self.detail,
        }


# --- The view the detectors see -------------------------------------------------------------------
@dataclass(frozen=True)
class _View:
    """Bars as numpy arrays, possibly reflected; ``real()`` maps a level back to real prices."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    atr: float
    mirror_axis: float | None = None  # C in p -> C - p; None for the real series

    def real(self, level: float) -> float:
        return level if self.mirror_axis is None else self.mirror_axis - level

    @property
    def n(self) -> int:
        return len(self.close)

    def volume_ratio(self, bars: int = 1, lookback: int = LOOKBACK) -> float:
        recent = self.volume[-bars:].mean()
        before = self.volume[-bars - lookback:-bars]
        base = before.mean() if len(before) else 0.0
        return float(recent / base) if base > 0 else 0.0


def _view(bars: pd.DataFrame, atr: float) -> _View:
    arrays = {c: bars[c].to_numpy(dtype=float) for c in ("open", "high", "low", "close", "volume")}
    return _View(**arrays, atr=atr)


def _mirrored(view: _View) -> _View:
    axis = float(view.high.max() + view.low.min())
    return _View(
        open=axis - view.open,
        high=axis - view.low,
        low=axis - view.high,
        close=axis - view.close,
        volume=view.volume,
        atr=view.atr,
        mirror_axis=axis,
    )


@dataclass(frozen=True)
class _Setup:
    """A detector's finding in view space; ``levels`` are prices quoted in ``detail``."""

    name: str
    entry: float
    stop: float
    target: float
    confidence: float
    detail: str
    levels: dict[str, float] = field(default_factory=dict)


# Words that change meaning when the chart is turned upside down.
_WORDS_UP = {"above": "above", "below": "below", "high": "high", "low": "low", "rising": "rising",
             "falling": "falling", "up": "up", "down": "down", "top": "top", "bottom": "bottom"}
_WORDS_DOWN = {"above": "below", "below": "above", "high": "low", "low": "high", "rising": "falling",
               "falling": "rising", "up": "down", "down": "up", "top": "bottom", "bottom": "top"}


# --- Public entry point ---------------------------------------------------------------------------
def detect_patterns(bars: pd.DataFrame, market: Market, on: date, timeframe: Timeframe) -> list[Pattern]:
    """Patterns completed or forming at the last bar of ``bars`` (already at ``timeframe``),
    best first. ``on`` is the trading day whose tick table prices the levels."""
    check_bar_spacing(bars, timeframe)
    bars = bars.sort_index()
    if len(bars) < MIN_BARS:
        return []
    atr = average_true_range(bars)
    if atr is None or atr <= 0:
        return []
    up = _view(bars, atr)
    found: list[Pattern] = []
    for view, direction in ((up, "bullish"), (_mirrored(up), "bearish")):
        for detector in DETECTORS:
            setup = detector(view)
            if setup is None:
                continue
            pattern = _to_pattern(setup, view, direction, market, on, timeframe)
            if pattern is not None:
                found.append(pattern)
    return sorted(found, key=lambda p: p.confidence, reverse=True)


def average_true_range(bars: pd.DataFrame, length: int = ATR_LENGTH) -> float | None:
    if len(bars) < length + 1:
        return None
    tr = true_range(bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy())
    return float(tr[-length:].mean())


def _to_pattern(setup: _Setup, view: _View, direction: Direction, market: Market, on: date,
                timeframe: Timeframe) -> Pattern | None:
    entry, stop, target = (view.real(x) for x in (setup.entry, setup.stop, setup.target))
    if min(entry, stop, target) <= 0:
        return None
    long = direction == "bullish"
    try:
        entry_d = round_to_tick(market, entry, on, Rounding.UP if long else Rounding.DOWN)
        stop_d = round_to_tick(market, stop, on, Rounding.DOWN if long else Rounding.UP)
        target_d = round_to_tick(market, target, on, Rounding.DOWN if long else Rounding.UP)
        if stop_d == entry_d:
            stop_d = ticks_away(market, entry_d, -1 if long else 1, on)
    except PriceError:
        return None
    ordered = stop_d < entry_d < target_d if long else target_d < entry_d < stop_d
    if not ordered:
        return None
    words = _WORDS_UP if long else _WORDS_DOWN
    quoted = {k: _quote(market, view.real(v), on) for k, v in setup.levels.items()}
    detail = f"{timeframe.value}: " + setup.detail.format(**words, **quoted)
    name = setup.name if long else BEARISH_NAMES[setup.name]
    return Pattern(name, direction, entry_d, stop_d, target_d, round(float(_clamp(setup.confidence)), 2), detail)


def _quote(market: Market, price: float, on: date) -> str:
    try:
        return str(round_to_tick(market, price, on))
    except PriceError:
        return f"{price:.4f}"


def _clamp(x: float, low: float = 0.05, high: float = 0.95) -> float:
    return max(low, min(high, x))


# --- Helpers in view space ------------------------------------------------------------------------
def _slope(values: np.ndarray) -> float:
    if len(values) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(values)), values, 1)[0])


# --- Detectors (bullish shape; the mirror gives the bearish one) ----------------------------------
def breakout(v: _View) -> _Setup | None:
    """Close above the prior 20-bar high on at least 1.5x the average volume."""
    if v.n < LOOKBACK + 1:
        return None
    level = float(v.high[-LOOKBACK - 1:-1].max())
    close = float(v.close[-1])
    ratio = v.volume_ratio()
    if close <= level or ratio < BREAKOUT_VOLUME_RATIO:
        return None
    stretch = (close - level) / v.atr
    stop = level - 0.5 * v.atr
    confidence = 0.45 + min(0.3, 0.1 * (ratio - BREAKOUT_VOLUME_RATIO)) - (0.15 if stretch > 1.5 else 0)
    return _Setup(
        "breakout", close, stop, close + 2 * (close - stop), confidence,
        f"close {{close}} {{above}} the {LOOKBACK}-bar {{high}} {{level}} on {ratio:.1f}x volume",
        {"close": close, "level": level},
    )


def near_breakout(v: _View) -> _Setup | None:
    """Rising into the prior 20-bar high and within 1% of it, not yet through."""
    if v.n < LOOKBACK + 1:
        return None
    window_high = v.high[-LOOKBACK - 1:-1]
    level, floor = float(window_high.max()), float(v.low[-LOOKBACK - 1:-1].min())
    close = float(v.close[-1])
    gap_pct = (level - close) / abs(level) * 100
    rising = close > float(v.close[-LOOKBACK - 1:-1].mean()) and _slope(v.close[-10:]) > 0
    # In the top quarter of the range: in a range narrower than 1% the close is otherwise
    # "near" both the high and the low.
    upper_quarter = level > floor and (close - floor) / (level - floor) >= 0.75
    if close > level or gap_pct > NEAR_BREAKOUT_PCT or not rising or not upper_quarter:
        return None
    entry = level + 0.1 * v.atr
    swing_low = float(v.low[-5:].min())
    stop = swing_low if 0.5 * v.atr <= entry - swing_low <= 3 * v.atr else entry - 1.5 * v.atr
    touches = int((window_high >= level - 0.25 * v.atr).sum())
    confidence = 0.3 + 0.25 * (1 - gap_pct / NEAR_BREAKOUT_PCT) + 0.05 * min(touches - 1, 3)
    return _Setup(
        "near_breakout", entry, stop, entry + 2 * (entry - stop), confidence,
        f"close {{close}} is {gap_pct:.2f}% {{below}} the {LOOKBACK}-bar {{high}} {{level}} "
        f"({touches} touch(es)); entry on a break",
        {"close": close, "level": level},
    )


def momentum_continuation(v: _View) -> _Setup | None:
    """Four of the last five bars closing up, a new 10-bar closing high, above EMA9 > EMA21."""
    if v.n < 30:
        return None
    close = v.close
    ups = int((np.diff(close[-6:]) > 0).sum())
    move = float(close[-1] - close[-6])
    ema9, ema21 = ewm_mean(close, 9)[-1], ewm_mean(close, 21)[-1]
    if ups < 4 or close[-1] < close[-10:].max() or move < 1.5 * v.atr or not (close[-1] > ema9 > ema21):
        return None
    ratio = v.volume_ratio(bars=5)
    if ratio < 1.0:
        return None
    entry = float(close[-1])
    stop = min(float(v.low[-3:].min()), entry - v.atr)
    confidence = 0.4 + 0.1 * (ups - 4) + min(0.2, 0.05 * (move / v.atr - 1.5)) + min(0.15, 0.1 * (ratio - 1))
    return _Setup(
        "momentum_continuation", entry, stop, entry + 2 * (entry - stop), confidence,
        f"{ups}/5 bars closed {{up}}, {move / v.atr:.1f} ATR in 5 bars to {{close}}, "
        f"{{above}} EMA9 and EMA21, volume {ratio:.1f}x",
        {"close": entry},
    )


def bull_flag(v: _View) -> _Setup | None:
    """A sharp pole (>= 3 ATR in 3-8 bars) then 3-12 bars drifting sideways or down, retracing at
    most half the pole on lighter volume."""
    best: _Setup | None = None
    for flag_len in range(3, 13):
        top = v.n - 1 - flag_len  # the pole's last bar
        for pole_len in range(3, 9):
            base = top - pole_len
            if base < 0:
                break
            setup = _flag_at(v, base, top, flag_len)
            if setup and (best is None or setup.confidence > best.confidence):
                best = setup
    return best


def _flag_at(v: _View, base: int, top: int, flag_len: int) -> _Setup | None:
    pole_low, pole_high = float(v.low[base]), float(v.high[base:top + 1].max())
    height = pole_high - pole_low
    if height < 3 * v.atr or v.high[top] < pole_high or v.close[top] <= v.close[base]:
        return None
    flag = slice(top + 1, v.n)
    flag_high, flag_low = float(v.high[flag].max()), float(v.low[flag].min())
    retrace = (pole_high - flag_low) / height
    if flag_high > pole_high or retrace > 0.5 or (flag_high - flag_low) > 0.5 * height:
        return None
    if _slope(v.close[flag]) > 0.1 * v.atr:
        return None
    pole_volume, flag_volume = v.volume[base:top + 1].mean(), v.volume[flag].mean()
    if pole_volume <= 0 or flag_volume >= pole_volume:
        return None
    entry = max(flag_high, float(v.close[-1]))
    confidence = 0.45 + 0.2 * (1 - flag_volume / pole_volume) + 0.15 * (0.5 - retrace) * 2
    return _Setup(
        "bull_flag", entry, flag_low, entry + height, confidence,
        f"pole {{pole_low}}->{{pole_high}} then a {flag_len}-bar flag {{flag_low}}-{{flag_high}} "
        f"retracing {retrace:.0%} on {flag_volume / pole_volume:.0%} of pole volume",
        {"pole_low": pole_low, "pole_high": pole_high, "flag_low": flag_low, "flag_high": flag_high},
    )


def ascending_triangle(v: _View, window: int = 40) -> _Setup | None:
    """Two or more swing highs at one flat level and rising swing lows under it."""
    if v.n < 15:
        return None
    start = max(0, v.n - window)
    high, low = v.high[start:], v.low[start:]
    highs, lows = pivot_indices(high, PIVOT_WING, highs=True), pivot_indices(low, PIVOT_WING, highs=False)
    if len(highs) < 2 or len(lows) < 2:
        return None
    level = float(high[highs].max())
    tolerance = max(0.5 * v.atr, 0.002 * abs(level))
    touches = [i for i in highs if high[i] >= level - tolerance]
    swing_lows = low[lows]
    first_low, last_low = float(swing_lows[0]), float(swing_lows[-1])
    rising = bool((np.diff(swing_lows) > 0).all()) and last_low - first_low >= 0.5 * v.atr
    close = float(v.close[-1])
    if len(touches) < 2 or not rising or lows[-1] < touches[0] or not (last_low < close <= level + 0.5 * v.atr):
        return None
    entry = level + 0.1 * v.atr
    stop = last_low - 0.1 * v.atr
    confidence = 0.45 + 0.05 * min(len(touches) - 2, 3) + 0.05 * min(len(lows) - 2, 3)
    return _Setup(
        "ascending_triangle", entry, stop, entry + (level - first_low), confidence,
        f"{len(touches)} {{high}}s at {{level}} with {len(lows)} {{rising}} {{low}}s "
        f"({{first_low}} -> {{last_low}})",
        {"level": level, "first_low": first_low, "last_low": last_low},
    )


def cup_handle(v: _View, max_window: int = 80) -> _Setup | None:
    """A rounded cup between two rims at about the same height, then a shallow 3-12 bar handle."""
    best: _Setup | None = None
    for handle_len in range(3, 13):
        setup = _cup_with_handle(v, handle_len, max_window)
        if setup and (best is None or setup.confidence > best.confidence):
            best = setup
    return best


def _cup_with_handle(v: _View, handle_len: int, max_window: int) -> _Setup | None:
    end = v.n - handle_len  # the cup is [start, end)
    start = max(0, end - max_window)
    if end - start < 15:
        return None
    high, low = v.high[start:end], v.low[start:end]
    third = len(high) // 3
    left = int(np.argmax(high[:third]))
    right = 2 * third + int(np.argmax(high[2 * third:]))
    bottom = left + int(np.argmin(low[left:right + 1]))
    rim_left, rim_right, floor = float(high[left]), float(high[right]), float(low[bottom])
    depth = min(rim_left, rim_right) - floor
    if depth < 3 * v.atr or abs(rim_left - rim_right) > max(v.atr, 0.15 * depth):
        return None
    if not (left + 0.25 * (right - left) <= bottom <= left + 0.75 * (right - left)):
        return None
    # Rounded, not a V: several bars trade in the lowest third of the cup.
    if int((low[left:right + 1] <= floor + depth / 3).sum()) < 3:
        return None
    handle_high, handle_low = float(v.high[end:].max()), float(v.low[end:].min())
    if handle_high > rim_right + 0.25 * v.atr or handle_low < rim_right - 0.5 * depth:
        return None
    if rim_right - handle_low < 0.5 * v.atr:  # no pullback at all: no handle yet
        return None
    entry = max(rim_right, float(v.close[-1]))
    confidence = 0.5 + 0.15 * (1 - abs(rim_left - rim_right) / max(v.atr, 0.15 * depth)) \
        + 0.1 * (1 - (rim_right - handle_low) / (0.5 * depth))
    return _Setup(
        "cup_handle", entry, handle_low, entry + depth, confidence,
        f"cup {{rim_left}} / {{floor}} / {{rim_right}} over {right - left} bars, "
        f"{handle_len}-bar handle {{down}} to {{handle_low}}",
        {"rim_left": rim_left, "floor": floor, "rim_right": rim_right, "handle_low": handle_low},
    )


def abcd(v: _View, window: int = 60) -> _Setup | None:
    """Swing low A, swing high B, higher low C retracing 38-89% of AB, price now rising from C;
    target D = C + (B - A)."""
    start = max(0, v.n - window)
    high, low = v.high[start:], v.low[start:]
    lows = pivot_indices(low, PIVOT_WING, highs=False)
    highs = pivot_indices(high, PIVOT_WING, highs=True)
    if not lows or not highs:
        return None
    c = lows[-1]
    b_candidates = [i for i in highs if i < c]
    if not b_candidates:
        return None
    b = b_candidates[-1]
    a_candidates = [i for i in lows if i < b]
    if not a_candidates:
        return None
    a = a_candidates[-1]
    A, B, C = float(low[a]), float(high[b]), float(low[c])
    leg = B - A
    if leg < 2 * v.atr or C <= A:
        return None
    retrace = (B - C) / leg
    close = float(v.close[-1])
    if not (0.382 <= retrace <= 0.886) or not (C < close < B):
        return None
    target = C + leg
    entry = close
    stop = C - 0.1 * v.atr
    confidence = 0.4 + (0.2 if abs(retrace - 0.618) <= 0.1 else 0.0) + 0.1 * min(1.0, (close - C) / (0.5 * leg))
    return _Setup(
        "abcd", entry, stop, target, confidence,
        f"A {{A}} B {{B}} C {{C}} (retrace {retrace:.0%}); D target {{D}}",
        {"A": A, "B": B, "C": C, "D": target},
    )


DETECTORS: tuple[Callable[[_View], _Setup | None], ...] = (
    breakout, near_breakout, momentum_continuation, bull_flag, ascending_triangle, cup_handle, abcd,
)
