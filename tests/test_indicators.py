"""Indicators against values worked out by hand, session VWAP, short series, timeframe honesty."""
from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.base import Timeframe
from data.bars import load_samples, resample, session_bars
from data.calendar import MarketCalendar
from data.indicators import compute_technicals, ewm_mean, pivot_indices, session_vwap, true_range, wilder_rsi
from core.instruments import Market, Symbol

HK, US = Market.HK, Market.US
HK_CAL, US_CAL = MarketCalendar(HK), MarketCalendar(US)

CLOSES = [
    44.34, 44.09, 44.15, 43.61, 44.33, 44.83, 45.10, 45.42, 45.84, 46.08, 45.89, 46.03, 45.61, 46.28,
    46.28, 46.00, 46.03, 46.41, 46.22, 45.64, 46.21, 46.25, 45.71, 46.45, 45.78, 45.35, 44.03, 44.18,
    44.22, 44.57, 43.42, 42.66, 43.13, 43.48, 44.02, 44.65, 45.10, 44.80, 45.20, 45.90,
]


def bars_from_closes(closes: list[float], start: str = "2022-06-15 01:30", freq: str = "1min") -> pd.DataFrame:
    index = pd.date_range(start, periods=len(closes), freq=freq, tz="UTC")
    close = pd.Series(closes, index=index, dtype=float)
    return pd.DataFrame({
        "open": close.shift().fillna(close.iloc[0] if closes else 0.0), "high": close + 0.25, "low": close - 0.25,
        "close": close, "volume": 1000.0,
    })


# --- Plain-Python references ----------------------------------------------------------------------
def reference_rsi(closes: list[float], length: int = 14) -> float:
    gains = [max(b - a, 0.0) for a, b in zip(closes, closes[1:])]
    losses = [max(a - b, 0.0) for a, b in zip(closes, closes[1:])]
    avg_gain = sum(gains[:length]) / length
    avg_loss = sum(losses[:length]) / length
    for gain, loss in zip(gains[length:], losses[length:]):
        avg_gain = (avg_gain * (length - 1) + gain) / length
        avg_loss = (avg_loss * (length - 1) + loss) / length
    return 100 - 100 / (1 + avg_gain / avg_loss)


def reference_ema(values: list[float], length: int) -> list[float | None]:
    """EMA seeded with the simple mean of the first ``length`` values (TA-Lib, TradingView)."""
    out: list[float | None] = [None] * (length - 1)
    ema = sum(values[:length]) / length
    out.append(ema)
    k = 2 / (length + 1)
    for v in values[length:]:
        ema = v * k + ema * (1 - k)
        out.append(ema)
    return out


def reference_macd(closes: list[float]) -> tuple[list[float], list[float]]:
    fast, slow = reference_ema(closes, 12), reference_ema(closes, 26)
    line = [f - s for f, s in zip(fast[25:], slow[25:])]  # from the 26th bar on
    signal = reference_ema(line, 9)
    return line, signal


# --- Tests ----------------------------------------------------------------------------------------
def test_rsi_is_wilders_with_a_simple_average_seed():
    technicals = compute_technicals(bars_from_closes(CLOSES[:20]), HK_CAL, Timeframe.M1)
    expected = reference_rsi(CLOSES[:20])
    assert technicals.rsi14 == pytest.approx(expected, abs=1e-9)
    # The classic worked example (Wilder's data): 15 closes give RSI 70.46.
    assert wilder_rsi(np.array(CLOSES[:15])) == pytest.approx(70.46, abs=0.01)


def test_macd_line_signal_and_previous_values_match_a_hand_computed_ema_loop():
    technicals = compute_technicals(bars_from_closes(CLOSES), HK_CAL, Timeframe.M1)
    line, signal = reference_macd(CLOSES)
    assert technicals.macd == pytest.approx(line[-1], abs=1e-9)
    assert technicals.macd_signal == pytest.approx(signal[-1], abs=1e-9)
    assert technicals.macd_hist == pytest.approx(line[-1] - signal[-1], abs=1e-9)
    assert technicals.macd_prev == pytest.approx(line[-2], abs=1e-9)
    assert technicals.macd_signal_prev == pytest.approx(signal[-2], abs=1e-9)
    assert technicals.ema9 == pytest.approx(reference_ema(CLOSES, 9)[-1], abs=1e-9)
    assert technicals.ema21 == pytest.approx(reference_ema(CLOSES, 21)[-1], abs=1e-9)
    assert technicals.sma20 == pytest.approx(sum(CLOSES[-20:]) / 20, abs=1e-9)


def test_bollinger_bands_are_the_sma20_plus_and_minus_two_population_deviations_of_the_last_20_closes():
    technicals = compute_technicals(bars_from_closes(CLOSES), HK_CAL, Timeframe.M1)
    last20 = CLOSES[-20:]
    mean = sum(last20) / 20
    deviation = (sum((c - mean) ** 2 for c in last20) / 20) ** 0.5
    assert technicals.bb_mid == pytest.approx(mean, abs=1e-9) and technicals.sma20 == technicals.bb_mid
    assert technicals.bb_upper == pytest.approx(mean + 2 * deviation, abs=1e-9)
    assert technicals.bb_lower == pytest.approx(mean - 2 * deviation, abs=1e-9)


def test_too_short_series_give_none_not_exceptions():
    for n in (0, 1, 10):
        technicals = compute_technicals(bars_from_closes(CLOSES[:n]), HK_CAL, Timeframe.M1)
        assert technicals.rsi14 is None and technicals.macd is None and technicals.sma50 is None
        assert technicals.atr14 is None and technicals.bb_upper is None
        assert technicals.bars_used == n
        json.dumps(technicals.to_dict())
    partial = compute_technicals(bars_from_closes(CLOSES[:30]), HK_CAL, Timeframe.M1)
    assert partial.macd is not None and partial.macd_signal is None  # 26 bars for the line, 34 for the signal
    assert partial.sma50 is None and partial.sma20 is not None and partial.rsi14 is not None


def test_vwap_resets_at_each_session_and_runs_on_over_lunch():
    morning = bars_from_closes([10.0] * 5, start="2022-06-14 01:30")
    yesterday = morning.assign(high=20.25, low=19.75, close=20.0)
    today_am = bars_from_closes([10.0, 10.0], start="2022-06-15 03:58")   # 11:58, 11:59 HKT
    today_pm = bars_from_closes([13.0], start="2022-06-15 05:00")         # 13:00 HKT
    today_am["volume"] = [100.0, 100.0]
    today_pm["volume"] = [200.0]
    bars = pd.concat([yesterday, today_am, today_pm])
    # yesterday's 20.0 bars are ignored; the morning bars count after lunch
    assert session_vwap(bars, HK_CAL) == pytest.approx((10 * 200 + 13 * 200) / 400)
    assert compute_technicals(bars, HK_CAL, Timeframe.M1).vwap == pytest.approx(11.5)


def test_vwap_of_a_real_session_uses_only_that_session():
    baba = load_samples(HK)[Symbol(HK, "09988")]
    two_days = pd.concat([session_bars(baba, date(2022, 6, 14)), session_bars(baba, date(2022, 6, 15))])
    today = session_bars(baba, date(2022, 6, 15))
    typical = (today["high"] + today["low"] + today["close"]) / 3
    expected = (typical * today["volume"]).sum() / today["volume"].sum()
    assert compute_technicals(two_days, HK_CAL, Timeframe.M1).vwap == pytest.approx(expected)


def test_the_timeframe_is_honoured_not_ignored():
    baba = load_samples(HK)[Symbol(HK, "09988")]
    minute = baba.minute
    with pytest.raises(ValueError, match="resample"):
        compute_technicals(minute, HK_CAL, Timeframe.M15)
    m1 = compute_technicals(minute, HK_CAL, Timeframe.M1)
    m15 = compute_technicals(resample(minute, Timeframe.M15, HK_CAL), HK_CAL, Timeframe.M15)
    assert m15.bars_used == len(minute) // 15
    assert m15.atr14 > 3 * m1.atr14  # 15-minute bars range wider than 1-minute bars
    daily = compute_technicals(baba.daily, HK_CAL, Timeframe.D1)
    assert daily.vwap is None and daily.sma50 is not None


def test_trend_support_and_resistance_on_clear_shapes():
    rising = compute_technicals(bars_from_closes([10 + 0.1 * i for i in range(60)]), HK_CAL, Timeframe.M1)
    falling = compute_technicals(bars_from_closes([20 - 0.1 * i for i in range(60)]), HK_CAL, Timeframe.M1)
    assert rising.trend == "up" and falling.trend == "down"
    zigzag = [100, 101, 102, 101, 100, 99, 98, 99, 100, 101, 102, 103, 102, 101, 100, 100.5]
    levels = compute_technicals(bars_from_closes(zigzag), HK_CAL, Timeframe.M1)
    # swing highs 102.25 and 103.25, swing low 97.75 (lows are close - 0.25); last close 100.5
    assert levels.support == pytest.approx(97.75)
    assert levels.resistance == pytest.approx(102.25)  # the nearest swing high above, not the highest


def test_atr_uses_the_gap_through_the_previous_close():
    # Each bar gaps 3 below the previous close with a range of 1: true range 4, not 1.
    closes = [100 - 3 * i for i in range(20)]
    bars = bars_from_closes(closes)
    bars["high"], bars["low"] = bars["close"] + 0.5, bars["close"] - 0.5
    assert true_range(bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy())[1:] == pytest.approx([3.5] * 19)
    assert compute_technicals(bars, HK_CAL, Timeframe.M1).atr14 == pytest.approx(3.5, rel=0.05)


def test_to_dict_is_compact_json():
    technicals = compute_technicals(bars_from_closes(CLOSES * 2), HK_CAL, Timeframe.M1)
    out = technicals.to_dict()
    text = json.dumps(out)
    assert len(text) < 700
    assert out["rsi14"] == round(technicals.rsi14, 2)
    assert set(out) >= {"rsi14", "macd", "macd_signal", "vwap", "atr14", "support", "resistance", "trend", "bars_used"}


def test_the_exit_indicators_are_the_technicals_own_numbers():
    """The monitor reads a lean subset at every check; it must not drift from what get_technicals says."""
    from data.indicators import compute_exit_indicators

    minute = load_samples(HK)[Symbol(HK, "09988")].minute.iloc[:200]
    for end in (10, 30, 60, 200):
        bars = minute.iloc[:end]
        full = compute_technicals(bars, HK_CAL, Timeframe.M1)
        lean = compute_exit_indicators(bars, HK_CAL)
        assert (lean.rsi14, lean.macd, lean.macd_signal, lean.macd_prev, lean.macd_signal_prev, lean.ema9, lean.vwap) == (
            full.rsi14, full.macd, full.macd_signal, full.macd_prev, full.macd_signal_prev, full.ema9, full.vwap)


def pandas_ta_technicals(bars: pd.DataFrame) -> dict[str, float | None]:
    """The same indicators from pandas-ta's own functions, the definitions data.indicators follows."""
    import pandas_ta as ta

    close = bars["close"]
    macd = ta.macd(close, fast=12, slow=26, signal=9)
    bands = ta.bbands(close, length=20, std=2.0, ddof=0)

    def last(series: pd.Series | None, back: int = 1) -> float | None:
        return None if series is None or pd.isna(series.iloc[-back]) else float(series.iloc[-back])

    line, hist, signal = (macd.iloc[:, k] if macd is not None else None for k in range(3))
    return {
        "ema9": last(ta.ema(close, length=9)), "ema21": last(ta.ema(close, length=21)),
        "macd": last(line), "macd_signal": last(signal), "macd_hist": last(hist),
        "macd_prev": last(line, 2), "macd_signal_prev": last(signal, 2),
        "atr14": last(ta.atr(bars["high"], bars["low"], close, length=14)),
        "sma20": last(ta.sma(close, length=20)), "sma50": last(ta.sma(close, length=50)),
        "bb_upper": last(bands.iloc[:, 2] if bands is not None else None),
        "bb_lower": last(bands.iloc[:, 0] if bands is not None else None),
    }


@pytest.mark.parametrize("market", [HK, US])
def test_the_indicators_are_pandas_tas_own_numbers_on_real_bars(market):
    """EMA, MACD and ATR equal pandas-ta's to the last bit (the same recursion in the same order);
    the SMA and the bands within 1e-9 (pandas-ta reads them from a running window); the patterns'
    unseeded EMA equal to pandas' ewm."""
    series = next(iter(load_samples(market).values()))
    calendar = HK_CAL if market is HK else US_CAL
    minute = series.minute.iloc[:3000]
    windows = [(minute.iloc[end - 120:end], Timeframe.M1) for end in range(120, len(minute), 97)]
    five = resample(minute, Timeframe.M5, calendar)
    windows += [(five.iloc[max(0, end - 120):end], Timeframe.M5) for end in range(14, len(five), 23)]
    flat = bars_from_closes([10.0] * 40 + [10.5] * 40)  # bars of no range: pandas-ta's epsilon rule
    flat["high"], flat["low"] = flat["close"], flat["close"]
    windows.append((flat, Timeframe.M1))
    gap = minute.iloc[:120].copy()
    gap.iloc[[3, 60, 61], gap.columns.get_loc("close")] = np.nan  # a missing close ages the averages
    windows.append((gap, Timeframe.M1))
    exact = ("ema9", "ema21", "macd", "macd_signal", "macd_hist", "macd_prev", "macd_signal_prev", "atr14")
    for bars, timeframe in windows:
        ours, theirs = compute_technicals(bars, calendar, timeframe), pandas_ta_technicals(bars)
        for key in exact:
            assert getattr(ours, key) == theirs[key], (key, len(bars))
        for key in ("sma20", "sma50", "bb_upper", "bb_lower"):
            expected = None if theirs[key] is None else pytest.approx(theirs[key], rel=1e-9, abs=1e-12)
            assert getattr(ours, key) == expected, (key, len(bars))
        for span in (9, 21):  # the patterns' EMA: pandas' ewm from the first close
            np.testing.assert_array_equal(ewm_mean(bars["close"].to_numpy(), span),
                                          bars["close"].ewm(span=span, adjust=False).mean().to_numpy())
    assert len(windows) > 40


def reference_pivots(values: list[float], wing: int, highs: bool) -> list[int]:
    out: list[int] = []
    for i in range(wing, len(values) - wing):
        neighbours = values[i - wing:i] + values[i + 1:i + wing + 1]
        if all(values[i] >= v if highs else values[i] <= v for v in neighbours):
            if out and i - out[-1] == 1 and values[i] == values[out[-1]]:
                continue
            out.append(i)
    return out


def test_swing_points_on_a_drawn_shape_count_a_flat_top_once():
    values = [1, 2, 5, 2, 1, 3, 4, 4, 3, 1, 0, 1]
    assert pivot_indices(np.array(values, float), 2, highs=True) == [2, 6]
    assert pivot_indices(np.array(values, float), 2, highs=False) == [4]  # the 0 is too near the end to tell


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=40), st.integers(1, 3), st.booleans())
def test_swing_points_are_those_of_a_bar_by_bar_reading(values, wing, highs):
    # Few distinct values: ties and flat tops everywhere.
    assert pivot_indices(np.array(values, float), wing, highs) == reference_pivots([float(v) for v in values], wing, highs)
