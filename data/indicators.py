"""Technical indicators for one bar series, behind one small function.

``compute_technicals`` takes bars already at the timeframe asked for (``data.bars.resample``
makes them from minute bars; daily bars come from ``BarSeries.daily``) and returns a frozen
``Technicals`` of plain floats. A value that the series is too short for is None, never an
exception and never a number computed from too little data.

pandas-ta 0.4.71b0 (checked with pandas 3.1.1, no TA-Lib installed) provides MACD, EMA, SMA,
ATR and Bollinger Bands. Computed here by hand instead:

* RSI: pandas-ta's RMA starts its average at the first change instead of Wilder's 14-bar
  simple average, so on short series it disagrees with Wilder, TA-Lib and TradingView.
* VWAP: the session VWAP must reset at each session and run on through the lunch break;
  ``ta.vwap`` anchors on a calendar period instead.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Literal

import numba
import numpy as np
import pandas as pd

# pandas-ta compiles some helpers with numba on first use: about 40 MB and a quarter of a second a
# process, for series of a few hundred bars where plain Python is as fast (7.2 vs 6.9 ms a
# compute_technicals). Read when pandas-ta decorates them, so before it is imported;
# NUMBA_DISABLE_JIT=0 in the environment compiles them again.
numba.config.DISABLE_JIT = os.environ.get("NUMBA_DISABLE_JIT", "1") != "0"
import pandas_ta as ta  # noqa: E402

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


def compute_technicals(bars: pd.DataFrame, calendar: MarketCalendar, timeframe: Timeframe) -> Technicals:
    """RSI14, MACD 12/26/9, EMA9/21, SMA20/50, ATR14, session VWAP, Bollinger 20/2, swing
    support/resistance and trend of ``bars`` (columns open, high, low, close, volume)."""
    check_bar_spacing(bars, timeframe)
    bars = bars.sort_index()
    close = bars["close"].astype(float)
    macd_now, macd_prev = _macd(close)
    sma20_line = _sma(close, BB_LENGTH)
    bb = _bollinger(close, sma20_line)
    ema9, ema21 = _last(_ema(close, 9)), _last(_ema(close, 21))
    sma20, sma50 = _last(sma20_line), _last(_sma(close, 50))
    last_close = _last(close)
    support, resistance = support_resistance(bars)
    return Technicals(
        rsi14=wilder_rsi(close.to_numpy(), RSI_LENGTH),
        macd=macd_now[0],
        macd_signal=macd_now[1],
        macd_hist=macd_now[2],
        macd_prev=macd_prev[0],
        macd_signal_prev=macd_prev[1],
        ema9=ema9,
        ema21=ema21,
        sma20=sma20,
        sma50=sma50,
        atr14=_atr(bars),
        vwap=None if timeframe is Timeframe.D1 else session_vwap(bars, calendar),
        bb_upper=bb[0],
        bb_mid=bb[1],
        bb_lower=bb[2],
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
    bars = minute_bars.sort_index()
    close = bars["close"].astype(float)
    macd_now, macd_prev = _macd(close)
    return ExitIndicators(
        rsi14=wilder_rsi(close.to_numpy(), RSI_LENGTH),
        macd=macd_now[0], macd_signal=macd_now[1], macd_prev=macd_prev[0], macd_signal_prev=macd_prev[1],
        ema9=_last(_ema(close, 9)),
        vwap=session_vwap(bars, calendar),
    )


def check_bar_spacing(bars: pd.DataFrame, timeframe: Timeframe) -> None:
    """Refuse minute bars passed off as a longer timeframe (the original ignored the timeframe)."""
    if timeframe in (Timeframe.M1, Timeframe.D1) or len(bars) < 2:
        return
    times = np.sort(pd.DatetimeIndex(bars.index).as_unit("ns").asi8)
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    if len(gaps) and gaps.min() < timeframe.minutes * 60_000_000_000:
        raise ValueError(
            f"bars are {pd.Timedelta(int(gaps.min()), unit='ns')} apart but the timeframe is {timeframe.value}; "
            "resample minute bars with data.bars.resample() first"
        )


def _last(series: pd.Series | None) -> float | None:
    if series is None or len(series) == 0:
        return None
    value = series.iloc[-1]
    return None if pd.isna(value) else float(value)


def _ema(close: pd.Series, length: int) -> pd.Series | None:
    return ta.ema(close, length=length) if len(close) >= length else None


def _sma(close: pd.Series, length: int) -> pd.Series | None:
    return ta.sma(close, length=length) if len(close) >= length else None


def _macd(close: pd.Series) -> tuple[tuple[float | None, ...], tuple[float | None, ...]]:
    """(line, signal, histogram) now and one bar before: ``ta.macd``'s own steps, without the frame it
    builds around them (half its time; a monitor asks at every full check of every position)."""
    nothing = (None, None, None)
    if len(close) < MACD_SLOW:
        return nothing, nothing
    line = _ema(close, MACD_FAST) - _ema(close, MACD_SLOW)
    # pandas-ta wants slow + signal - 1 bars for the signal; the MACD line itself exists from bar 26.
    signal = _ema(line.loc[line.first_valid_index():], MACD_SIGNAL)
    if signal is None:
        return (_last(line), None, None), (_last(line.iloc[:-1]), None, None)
    hist = line - signal
    now = (_last(line), _last(signal), _last(hist))
    prev = (_last(line.iloc[:-1]), _last(signal.iloc[:-1]), _last(hist.iloc[:-1]))
    return now, prev


def _bollinger(close: pd.Series, mid: pd.Series | None) -> tuple[float | None, float | None, float | None]:
    """Upper, middle and lower band now: ``ta.bbands``' own steps (its SMA, here the SMA20 already
    computed, plus and minus ``BB_STD`` deviations) without the frame it builds around them."""
    if len(close) < BB_LENGTH or mid is None:
        return None, None, None
    # ddof=0: the population deviation, as TA-Lib and TradingView draw the bands.
    deviation = ta.stdev(close, length=BB_LENGTH, ddof=0)
    if deviation is None:
        return None, None, None
    return _last(mid + BB_STD * deviation), _last(mid), _last(mid - BB_STD * deviation)


def _atr(bars: pd.DataFrame) -> float | None:
    if len(bars) < ATR_LENGTH + 1:
        return None
    return _last(ta.atr(bars["high"], bars["low"], bars["close"], length=ATR_LENGTH))


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
    if bars.empty:
        return None
    local_days = bars.index.tz_convert(calendar.tz).date
    today = bars[local_days == local_days[-1]]
    volume = today["volume"].to_numpy(dtype=float)
    if volume.sum() <= 0:
        return None
    typical = (today["high"] + today["low"] + today["close"]).to_numpy(dtype=float) / 3
    return float((typical * volume).sum() / volume.sum())


def support_resistance(bars: pd.DataFrame, lookback: int = LEVELS_LOOKBACK) -> tuple[float | None, float | None]:
    """Nearest swing low below and swing high above the last close; the window's extremes when
    no swing point qualifies."""
    if len(bars) < 2:
        return None, None
    window = bars.iloc[-lookback:]
    last_close = float(window["close"].iloc[-1])
    lows, highs = swing_lows(window["low"].to_numpy()), swing_highs(window["high"].to_numpy())
    below = [p for p in lows if p < last_close]
    above = [p for p in highs if p > last_close]
    support = max(below) if below else float(window["low"].min())
    resistance = min(above) if above else float(window["high"].max())
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
