"""Technical indicators for one bar series, behind one small function.

``compute_technicals`` takes bars already at the timeframe asked for (``data.bars.resample``
makes them from minute bars; daily bars come from ``BarSeries.daily``) and returns a frozen
``Technicals`` of plain floats. A value that the series is too short for is None, never an
exception and never a number computed from too little data.

The definitions are pandas-ta's (0.4.71b0, without TA-Lib): EMA seeded with the simple average of
its first ``length`` values, MACD 12/26/9 of those EMAs, ATR as the seeded Wilder average of
pandas-ta's true range, Bollinger bands at the population deviation. They are computed here on
numpy arrays, because pandas-ta's wrappers cost 4 to 12 times the arithmetic on the 120 bars a
decision reads (``ta.atr`` 1.75 ms against 0.15 ms), and a 25-session replay of 50 symbols computes
them about 700 times. tests/test_indicators.py holds them to pandas-ta itself: EMA, MACD and ATR equal
to the last bit, the moving average and deviation of the last bars to 1e-9 (pandas-ta takes them
from a running window, these from the window itself).

Computed differently from pandas-ta on purpose:

* RSI: pandas-ta's RMA starts its average at the first change instead of Wilder's 14-bar
  simple average, so on short series it disagrees with Wilder, TA-Lib and TradingView.
* VWAP: the session VWAP must reset at each session and run on through the lunch break;
  ``ta.vwap`` anchors on a calendar period instead.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import time, timedelta
from typing import Literal

import numpy as np
import pandas as pd

from brokers.base import Timeframe
from data.calendar import MarketCalendar

Trend = Literal["up", "down", "sideways"]

RSI_LENGTH = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
ATR_LENGTH = 14
BB_LENGTH, BB_STD = 20, 2.0
LEVELS_LOOKBACK = 50
PIVOT_WING = 2  # a swing high/low is the extreme of itself and this many bars on each side


@dataclass(frozen=True)
class Technicals:
    rsi14: float | None
    macd: float | None
    macd_signal: float | None
    macd_hist: float | None
    macd_prev: float | None
    macd_signal_prev: float | None
    ema9: float | None
    ema21: float | None
    sma20: float | None
    sma50: float | None
    atr14: float | None
    vwap: float | None
    bb_upper: float | None
    bb_mid: float | None
    bb_lower: float | None
    support: float | None
    resistance: float | None
    trend: Trend
    last_close: float | None
    bars_used: int

    def to_dict(self) -> dict[str, float | int | str | None]:
        """Compact and JSON-able: oscillators to 2 decimals, price-like values to 4 significant
        decimals of the price (enough for a 0.001 HK tick without 15 digits of float noise)."""
        out: dict[str, float | int | str | None] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float):
                out[key] = round(value, 2) if key == "rsi14" else _round_price_like(value)
            else:
                out[key] = value
        return out


def _round_price_like(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    # Four significant digits after the leading one of the price scale, at least 2 decimals.
    decimals = max(2, 4 - int(math.floor(math.log10(abs(value)))))
    return round(value, min(decimals, 8))


@dataclass(frozen=True)
class _Columns:
    """Bars in time order as plain arrays, read from the frame once a computation: each read of a
    DataFrame column costs about 30 µs, as much as an EMA of 120 bars."""

    stamps: np.ndarray  # int64 nanoseconds, UTC
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, bars: pd.DataFrame) -> _Columns:
        bars = bars.sort_index()
        return cls(pd.DatetimeIndex(bars.index).as_unit("ns").asi8,
                   *(bars[c].to_numpy(dtype=float) for c in ("high", "low", "close", "volume")))


def compute_technicals(bars: pd.DataFrame, calendar: MarketCalendar, timeframe: Timeframe) -> Technicals:
    """RSI14, MACD 12/26/9, EMA9/21, SMA20/50, ATR14, session VWAP, Bollinger 20/2, swing
    support/resistance and trend of ``bars`` (columns open, high, low, close, volume)."""
    columns = _Columns.of(bars)
    _check_spacing(columns.stamps, timeframe)
    close = columns.close
    macd_now, macd_prev = _macd(close)
    ema9, ema21 = _last(ema(close, 9)), _last(ema(close, 21))
    sma20, sma50 = _sma_last(close, BB_LENGTH), _sma_last(close, 50)
    last_close = _last(close)
    support, resistance = _support_resistance(columns)
    return Technicals(
        rsi14=wilder_rsi(close, RSI_LENGTH),
        macd=macd_now[0],
        macd_signal=macd_now[1],
        macd_hist=macd_now[2],
        macd_prev=macd_prev[0],
        macd_signal_prev=macd_prev[1],
        ema9=ema9,
        ema21=ema21,
        sma20=sma20,
        sma50=sma50,
        atr14=_atr(columns),
        vwap=None if timeframe is Timeframe.D1 else _session_vwap(columns, calendar),
        **_bollinger(close, sma20),
        support=support,
        resistance=resistance,
        trend=classify_trend(last_close, ema9, ema21, sma20, sma50),
        last_close=last_close,
        bars_used=len(bars),
    )


@dataclass(frozen=True)
class ExitIndicators:
    """The few values the exit signals read, without the rest of ``Technicals``: a monitor asks for
    them at every full check of every position, where the whole set cost four times as much."""

    rsi14: float | None
    macd: float | None
    macd_signal: float | None
    macd_prev: float | None
    macd_signal_prev: float | None
    ema9: float | None
    vwap: float | None


def compute_exit_indicators(minute_bars: pd.DataFrame, calendar: MarketCalendar) -> ExitIndicators:
    """RSI14, MACD 12/26/9 with the previous bar's, EMA9 and session VWAP of one-minute bars: the
    same numbers ``compute_technicals`` gives for them."""
    columns = _Columns.of(minute_bars)
    close = columns.close
    macd_now, macd_prev = _macd(close)
    return ExitIndicators(
        rsi14=wilder_rsi(close, RSI_LENGTH),
        macd=macd_now[0], macd_signal=macd_now[1], macd_prev=macd_prev[0], macd_signal_prev=macd_prev[1],
        ema9=_last(ema(close, 9)),
        vwap=_session_vwap(columns, calendar),
    )


def check_bar_spacing(bars: pd.DataFrame, timeframe: Timeframe) -> None:
    """Refuse minute bars passed off as a longer timeframe (the original ignored the timeframe)."""
    _check_spacing(np.sort(pd.DatetimeIndex(bars.index).as_unit("ns").asi8), timeframe)


def _check_spacing(sorted_stamps: np.ndarray, timeframe: Timeframe) -> None:
    if timeframe in (Timeframe.M1, Timeframe.D1) or len(sorted_stamps) < 2:
        return
    gaps = np.diff(sorted_stamps)
    gaps = gaps[gaps > 0]
    if len(gaps) and gaps.min() < timeframe.minutes * 60_000_000_000:
        raise ValueError(
            f"bars are {pd.Timedelta(int(gaps.min()), unit='ns')} apart but the timeframe is {timeframe.value}; "
            "resample minute bars with data.bars.resample() first"
        )


def _last(values: np.ndarray | None) -> float | None:
    if values is None or len(values) == 0:
        return None
    value = float(values[-1])
    return None if math.isnan(value) else value


def ema(values: np.ndarray, length: int) -> np.ndarray | None:
    """pandas-ta's ``ema``: NaN for the first ``length - 1`` values, then the simple average of the
    first ``length`` values, then ``ewm(span=length, adjust=False)``'s step. None if too short."""
    if len(values) < length:
        return None
    return _seeded_ewm(values, length, center_of_mass=(length - 1) / 2)


def ewm_mean(values: np.ndarray, span: int) -> np.ndarray:
    """pandas' ``Series(values).ewm(span=span, adjust=False).mean()``: from the first value, with no
    seed average (the patterns' EMA), to the last bit."""
    return _seeded_ewm(values, 1, center_of_mass=(span - 1) / 2)


def _seeded_ewm(values: np.ndarray, length: int, center_of_mass: float) -> np.ndarray:
    """The exponential average from a seed at ``values[length - 1]``: pandas' own adjust=False
    recursion (ignore_na=False: a missing value ages the average's weight), in its order of
    operations, so the floats are pandas' to the last bit."""
    alpha = 1.0 / (1.0 + center_of_mass)
    keep = 1.0 - alpha
    average = float(np.nanmean(values[:length])) if not np.isnan(values[:length]).all() else math.nan
    out = [math.nan] * (length - 1) + [average]
    weight = 1.0
    for value in values[length:].tolist():
        if average == average:
            weight *= keep
            if value == value:
                if average != value:  # pandas skips the step on an equal value, against rounding drift
                    average = (weight * average + alpha * value) / (weight + alpha)
                weight = 1.0
        elif value == value:
            average = value
        out.append(average)
    return np.array(out)


def _sma_last(values: np.ndarray, length: int) -> float | None:
    return float(np.mean(values[-length:])) if len(values) >= length else None


def _macd(close: np.ndarray) -> tuple[tuple[float | None, ...], tuple[float | None, ...]]:
    """(line, signal, histogram) now and one bar before, as ``ta.macd`` computes them."""
    nothing = (None, None, None)
    if len(close) < MACD_SLOW:
        return nothing, nothing
    line = ema(close, MACD_FAST) - ema(close, MACD_SLOW)
    # pandas-ta wants slow + signal - 1 bars for the signal; the MACD line itself exists from bar 26.
    signal = ema(line[MACD_SLOW - 1:], MACD_SIGNAL)
    if signal is None:
        return (_last(line), None, None), (_last(line[:-1]), None, None)
    hist = line[MACD_SLOW - 1:] - signal
    now = (_last(line), _last(signal), _last(hist))
    prev = (_last(line[:-1]), _last(signal[:-1]), _last(hist[:-1]))
    return now, prev


def _bollinger(close: np.ndarray, mid: float | None) -> dict[str, float | None]:
    """The bands now: the SMA20 plus and minus ``BB_STD`` population deviations (ddof=0, as TA-Lib
    and TradingView draw them) of the last 20 closes."""
    if mid is None:
        return {"bb_upper": None, "bb_mid": None, "bb_lower": None}
    deviation = float(np.std(close[-BB_LENGTH:]))
    return {"bb_upper": mid + BB_STD * deviation, "bb_mid": mid, "bb_lower": mid - BB_STD * deviation}


def _atr(columns: _Columns) -> float | None:
    """pandas-ta's ``atr``: the Wilder average (alpha 1/14) of its true range, seeded with the simple
    average of the first 14 ranges."""
    if len(columns.close) < ATR_LENGTH + 1:
        return None
    high, low, close = columns.high, columns.low, columns.close
    ranges = true_range(high, low, close)
    if (high == low).any():  # pandas-ta's non_zero_range: then every high - low gets an epsilon
        ranges = np.maximum(ranges, high - low + np.finfo(float).eps)
    alpha = 1.0 / ATR_LENGTH
    return _last(_seeded_ewm(ranges, ATR_LENGTH, center_of_mass=(1.0 - alpha) / alpha))


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """The largest of high-low, |high-prev close| and |low-prev close| (first bar: high-low).

    ``np.maximum.reduce`` over all three: ``np.maximum(a, b, c)`` would treat ``c`` as the output
    buffer and silently ignore the gap-down leg.
    """
    high, low, close = (np.asarray(x, dtype=float) for x in (high, low, close))
    prev_close = np.concatenate(([np.nan], close[:-1]))
    legs = np.vstack([high - low, np.abs(high - prev_close), np.abs(low - prev_close)])
    return np.nanmax(legs, axis=0)


def wilder_rsi(close: np.ndarray, length: int = RSI_LENGTH) -> float | None:
    """Wilder's RSI: the first averages are plain means of ``length`` changes, then smoothed."""
    close = np.asarray(close, dtype=float)
    if len(close) < length + 1:
        return None
    changes = np.diff(close)
    gains, losses = np.clip(changes, 0, None), np.clip(-changes, 0, None)
    avg_gain, avg_loss = gains[:length].mean(), losses[:length].mean()
    for gain, loss in zip(gains[length:], losses[length:]):
        avg_gain = (avg_gain * (length - 1) + gain) / length
        avg_loss = (avg_loss * (length - 1) + loss) / length
    if avg_loss == 0:
        return 100.0 if avg_gain > 0 else 50.0
    return float(100 - 100 / (1 + avg_gain / avg_loss))


def session_vwap(bars: pd.DataFrame, calendar: MarketCalendar) -> float | None:
    """VWAP of the latest session's bars: resets at each session open, runs on over lunch."""
    return _session_vwap(_Columns.of(bars), calendar)


def _session_vwap(columns: _Columns, calendar: MarketCalendar) -> float | None:
    if len(columns.stamps) == 0:
        return None
    day = calendar.trading_day(pd.Timestamp(int(columns.stamps[-1]), tz="UTC"))  # the last bar's local day
    start, end = (pd.Timestamp(calendar.at_local(d, time(0))).value for d in (day, day + timedelta(days=1)))
    today = (columns.stamps >= start) & (columns.stamps < end)
    volume = columns.volume[today]
    if volume.sum() <= 0:
        return None
    typical = (columns.high[today] + columns.low[today] + columns.close[today]) / 3
    return float((typical * volume).sum() / volume.sum())


def _support_resistance(columns: _Columns, lookback: int = LEVELS_LOOKBACK) -> tuple[float | None, float | None]:
    """Nearest swing low below and swing high above the last close; the window's extremes when
    no swing point qualifies."""
    if len(columns.close) < 2:
        return None, None
    low, high = columns.low[-lookback:], columns.high[-lookback:]
    last_close = float(columns.close[-1])
    below = [p for p in swing_lows(low) if p < last_close]
    above = [p for p in swing_highs(high) if p > last_close]
    support = max(below) if below else float(low.min())
    resistance = min(above) if above else float(high.max())
    return support, resistance


def swing_highs(high: np.ndarray, wing: int = PIVOT_WING) -> list[float]:
    return [float(high[i]) for i in pivot_indices(high, wing, highs=True)]


def swing_lows(low: np.ndarray, wing: int = PIVOT_WING) -> list[float]:
    return [float(low[i]) for i in pivot_indices(low, wing, highs=False)]


def pivot_indices(values: np.ndarray, wing: int, highs: bool) -> list[int]:
    """Where ``values`` has a swing high (``highs``) or low: at least as high (low) as each of the
    ``wing`` values on either side. A flat top or bottom is one swing point, not two."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2 * wing + 1:
        return []
    beats = np.greater_equal if highs else np.less_equal
    centre = values[wing:n - wing]
    holds = np.ones(len(centre), dtype=bool)
    for k in range(1, wing + 1):
        holds &= beats(centre, values[wing - k:n - wing - k]) & beats(centre, values[wing + k:n - wing + k])
    out: list[int] = []
    for i in (np.flatnonzero(holds) + wing).tolist():
        if out and i - out[-1] == 1 and values[i] == values[out[-1]]:
            continue
        out.append(i)
    return out


def classify_trend(
    close: float | None, ema9: float | None, ema21: float | None, sma20: float | None, sma50: float | None
) -> Trend:
    if close is None or ema9 is None or ema21 is None:
        return "sideways"
    slow = sma50 if sma50 is not None else sma20
    if close > ema9 > ema21 and (slow is None or close > slow):
        return "up"
    if close < ema9 < ema21 and (slow is None or close < slow):
        return "down"
    return "sideways"


# Consecutive minute bars more than this far apart (the lunch break, the night) are not one move.
_MAX_STEP_GAP = pd.Timedelta(minutes=2)


def minute_volatility_pct(minute_bars: pd.DataFrame, min_returns: int = 60) -> float | None:
    """The standard deviation of one-minute close-to-close returns, in percent.

    Only returns between bars at most two minutes apart count, so overnight gaps and the lunch
    break do not pass for minute-to-minute noise. None with fewer than ``min_returns`` returns.
    """
    if minute_bars is None or len(minute_bars) < 2:
        return None
    close = minute_bars["close"].to_numpy(dtype=float)
    gaps = np.diff(pd.DatetimeIndex(minute_bars.index).as_unit("ns").asi8) <= _MAX_STEP_GAP.value
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.diff(np.log(close))[gaps]
    returns = returns[np.isfinite(returns)]
    if len(returns) < min_returns:
        return None
    return float(np.std(returns, ddof=1) * 100)
