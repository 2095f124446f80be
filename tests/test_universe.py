"""The synthetic scanning universe: reproducible, labelled, tradeable, shaped like the real data."""
from __future__ import annotations

import time
from datetime import date
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from data.bars import load_samples
from data.calendar import MarketCalendar
from data.universe import (
    CALIBRATION,
    HISTORY_SESSIONS,
    HK_BOARD_LOTS,
    build_universe,
    is_synthetic_symbol,
    measure_calibration,
    round_prices_to_tick,
)
from core.instruments import Market, is_on_tick, round_to_tick, size_by_lot

HK, US = Market.HK, Market.US
CALENDARS = {HK: MarketCalendar(HK), US: MarketCalendar(US)}
# 20 sessions each; the HK stretch includes the 2022-06-03 holiday, the US one 2026-07-03.
SESSIONS = {
    HK: CALENDARS[HK].sessions_between(date(2022, 5, 19), date(2022, 6, 16)),
    US: CALENDARS[US].sessions_between(date(2026, 6, 30), date(2026, 7, 28)),
}


def build(market: Market, seed: int = 7, size: int = 30):
    return build_universe(market, seed, size, SESSIONS[market], CALENDARS[market])


@pytest.fixture(scope="module")
def universes():
    return {HK: build(HK), US: build(US)}


def test_twenty_sessions_each_of_thirty_symbols():
    assert len(SESSIONS[HK]) == 20 and len(SESSIONS[US]) == 20


def test_same_seed_gives_identical_bars_and_another_seed_different_ones(universes):
    again = build(HK)
    for symbol, series in universes[HK].items():
        pd.testing.assert_frame_equal(series.minute, again[symbol].minute)
        pd.testing.assert_frame_equal(series.daily, again[symbol].daily)
    other = build(HK, seed=8)
    assert set(other) == set(universes[HK])
    differing = [s for s in other if not other[s].minute["close"].equals(universes[HK][s].minute["close"])]
    assert len(differing) == len(other)


def test_every_symbol_is_labelled_synthetic_and_cannot_pass_for_a_listed_one(universes):
    for market, universe in universes.items():
        assert len(universe) == 30
        for symbol, series in universe.items():
            assert series.synthetic is True
            assert series.name.startswith("SYNTH ")
            assert is_synthetic_symbol(symbol)
            assert symbol.market is market
    assert all(int(s.code) >= 99900 for s in universes[HK])
    assert all(s.code.startswith("ZQX") and s.code[3:].isdigit() for s in universes[US])
    assert not any(is_synthetic_symbol(s) for s in [*load_samples(HK), *load_samples(US)])


def test_board_lots_are_real_hk_lots_and_us_trades_whole_shares(universes):
    assert {s.lot_size for s in universes[HK].values()} <= set(HK_BOARD_LOTS)
    assert len({s.lot_size for s in universes[HK].values()}) >= 5
    assert {s.lot_size for s in universes[US].values()} == {1}


def test_some_hk_lots_are_above_the_position_cap_so_sizing_refuses_them(universes):
    cap = Decimal("10000")
    day = SESSIONS[HK][0].day
    sizings = []
    for series in universes[HK].values():
        price = round_to_tick(HK, float(series.minute["close"].iloc[0]), day)
        sizings.append(size_by_lot(cap, price, series.lot_size, "HKD"))
    refused = [s for s in sizings if not s.ok]
    assert len(refused) >= 3
    assert all("above the position cap" in s.refused_reason for s in refused)
    assert len(sizings) - len(refused) >= 15
    prices = [float(s.minute["close"].iloc[0]) for s in universes[HK].values()]
    assert min(prices) < 1 and max(prices) > 500  # spread across the spread-table bands


def test_prices_are_on_the_tick_grid_and_bars_are_consistent(universes):
    for market, universe in universes.items():
        calendar = CALENDARS[market]
        for series in universe.values():
            minute = series.minute
            assert (minute["high"] >= minute[["open", "close"]].max(axis=1)).all()
            assert (minute["low"] <= minute[["open", "close"]].min(axis=1)).all()
            assert (minute["low"] > 0).all() and (minute["volume"] >= 0).all()
            days = minute.index.tz_convert(calendar.tz).date
            for column in ("open", "high", "low", "close"):
                for price, day in set(zip(minute[column].to_numpy(), days)):
                    assert is_on_tick(market, Decimal(repr(float(price))), day), (series.symbol, price, day)


def test_every_session_is_complete_and_the_hk_lunch_break_is_empty(universes):
    for market, universe in universes.items():
        series = next(iter(universe.values()))
        grid = pd.DatetimeIndex([t for s in SESSIONS[market] for t in s.minute_grid()])
        assert series.minute.index.equals(grid)
    hk_times = next(iter(universes[HK].values())).minute.index.tz_convert("Asia/Hong_Kong")
    assert not (hk_times.hour == 12).any()
    assert date(2022, 6, 3) not in set(hk_times.date)


def test_daily_history_precedes_the_sessions_and_matches_the_minutes(universes):
    calendar = CALENDARS[HK]
    series = next(iter(universes[HK].values()))
    daily = series.daily
    assert len(daily) == HISTORY_SESSIONS + len(SESSIONS[HK])
    assert all(calendar.is_session(d) for d in daily.index.date)
    assert daily.index[HISTORY_SESSIONS].date() == SESSIONS[HK][0].day
    day = SESSIONS[HK][5].day
    minutes = series.minute[series.minute.index.tz_convert(calendar.tz).date == day]
    row = daily.loc[pd.Timestamp(day)]
    assert row["high"] == minutes["high"].max() and row["low"] == minutes["low"].min()
    assert row["open"] == minutes["open"].iloc[0] and row["close"] == minutes["close"].iloc[-1]
    assert row["volume"] == minutes["volume"].sum()


def bucket_profile(universe, calendar, column_of) -> np.ndarray:
    """Mean of a per-minute statistic by 15-minute bucket of the session, over all symbols."""
    frames = []
    for series in universe.values():
        minute = series.minute
        position = minute.groupby(minute.index.tz_convert(calendar.tz).date).cumcount().to_numpy()
        frames.append(pd.DataFrame({"bucket": position // 15, "value": column_of(minute)}))
    stacked = pd.concat(frames)
    profile = stacked.groupby("bucket")["value"].mean()
    return (profile / profile.mean()).to_numpy()


def test_intraday_volume_and_volatility_are_u_shaped(universes):
    for market, universe in universes.items():
        calendar = CALENDARS[market]
        volume = bucket_profile(universe, calendar, lambda m: (m["volume"] / m["volume"].mean()).to_numpy())
        moves = bucket_profile(universe, calendar, lambda m: np.abs(np.log(m["close"]).diff()).fillna(0).to_numpy())
        middle = len(volume) // 2
        assert volume[0] > 1.8 * volume[middle] and volume[-1] > 1.5 * volume[middle], volume
        assert moves[0] > 1.3 * moves[middle], moves
    hk_volume = bucket_profile(universes[HK], CALENDARS[HK], lambda m: (m["volume"] / m["volume"].mean()).to_numpy())
    assert hk_volume[10] > hk_volume[9]  # the afternoon reopening after lunch is busier


def test_volatility_clusters(universes):
    autocorrelations = []
    for series in universes[US].values():
        moves = np.abs(np.log(series.minute["close"]).diff()).dropna()
        autocorrelations.append(moves.autocorr(5))
    assert np.mean(autocorrelations) > 0.05


def test_each_session_has_a_candidate_for_the_scanner(universes):
    for market, universe in universes.items():
        for session in SESSIONS[market]:
            day = pd.Timestamp(session.day)
            found = []
            for series in universe.values():
                daily = series.daily
                i = daily.index.get_loc(day)
                average = daily["volume"].iloc[i - 20:i].mean()
                change = daily["close"].iloc[i] / daily["close"].iloc[i - 1] - 1
                # SPEC tier 3: volume ratio above 1.3 and a move of a few percent
                if daily["volume"].iloc[i] > 1.3 * average and abs(change) > 0.02:
                    found.append(series.symbol)
            assert found, f"no volume-spike mover on {session.day} ({market.value})"


def test_built_in_well_under_two_seconds():
    started = time.perf_counter()
    build(HK)
    build(US)
    assert time.perf_counter() - started < 2.0


def test_the_calibration_constants_are_what_the_samples_measure():
    for market in (HK, US):
        measured = measure_calibration(list(load_samples(market).values()), CALENDARS[market])
        constant = CALIBRATION[market]
        assert measured.daily_sigma == pytest.approx(constant.daily_sigma, rel=0.02)
        assert measured.gap_share == pytest.approx(constant.gap_share, abs=0.01)
        assert measured.minute_sigma_per_daily == pytest.approx(constant.minute_sigma_per_daily, rel=0.02)
        assert np.allclose(measured.volume_u, constant.volume_u, atol=0.011)
        assert np.allclose(measured.volatility_u, constant.volatility_u, atol=0.011)


def test_refuses_sessions_of_another_market_and_absurd_sizes():
    with pytest.raises(ValueError, match="not HK sessions"):
        build_universe(HK, 1, 5, SESSIONS[US], CALENDARS[HK])
    with pytest.raises(ValueError, match="size"):
        build_universe(HK, 1, 0, SESSIONS[HK], CALENDARS[HK])


@settings(max_examples=300, deadline=None)
@given(
    price=st.floats(min_value=0.01, max_value=9990, allow_nan=False),
    market=st.sampled_from([HK, US]),
    day=st.sampled_from([date(2022, 6, 15), date(2025, 8, 4), date(2026, 1, 5)]),
)
def test_vectorised_rounding_matches_instruments(price, market, day):
    got = round_prices_to_tick(np.array([price]), market, day)[0]
    assert got == float(round_to_tick(market, price, day))
