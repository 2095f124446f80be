"""The volume ratio on the real sample bars (SPEC §5): today's volume so far over the usual volume by
the same minute, read through ``MarketData`` over the paper exchange at simulated times."""
from __future__ import annotations

import statistics
from datetime import date

import pytest

from brokers.paper import PaperExchange
from core.clock import SimClock
from config.settings import load_profile, profile_path
from data.bars import load_samples
from data.calendar import MarketCalendar
from data.market import MarketData
from core.instruments import Market
from runner.sessions import full_sessions

WARM_UP = 3                      # sessions of minute history before a ratio is read


def midday_ratios(market: Market) -> dict[str, dict[date, float]]:
    """Each real sample symbol's volume ratio at midday of every session after the warm-up."""
    profile = load_profile(profile_path(market.value.lower()), {})
    calendar = MarketCalendar(market)
    ratios: dict[str, dict[date, float]] = {}
    for symbol, series in load_samples(market).items():
        sessions = full_sessions({symbol: series}, calendar)[WARM_UP:]
        clock = SimClock(sessions[0].open)
        data = MarketData(PaperExchange({symbol: series}, clock, calendar, profile), clock, calendar, profile, [symbol])

        async def read() -> dict[date, float]:
            out = {}
            for session in sessions:
                await clock.sleep_until(session.minute_grid()[session.trading_minutes // 2])  # midday
                out[session.day] = (await data.quote(symbol)).volume_ratio
            return out

        ratios[symbol.short] = clock.run(read())
    return ratios


@pytest.fixture(scope="module")
def real_ratios() -> dict[str, dict[date, float]]:
    return {**midday_ratios(Market.HK), **midday_ratios(Market.US)}


def test_the_volume_ratio_on_real_bars_is_about_one_on_an_ordinary_day(real_ratios):
    assert set(real_ratios) == {"09988", "MSFT", "AAPL"}
    for symbol, by_day in real_ratios.items():
        values = list(by_day.values())
        assert all(v is not None and v > 0 for v in values), f"{symbol}: a day without a ratio: {by_day}"
        assert 0.6 <= statistics.median(values) <= 1.5, f"{symbol}: a typical day is not about 1: {by_day}"
        near_two = [v for v in values if abs(v - 2.0) < 0.1]
        assert len(near_two) <= len(values) // 4, f"{symbol}: the original's constant 2.0 again: {by_day}"


def test_the_volume_ratio_tells_busy_days_from_quiet_ones_and_symbols_apart(real_ratios):
    for symbol in ("09988", "MSFT"):
        values = real_ratios[symbol].values()
        assert min(values) < 0.8 and max(values) > 1.5, f"{symbol}: quiet and busy days look alike"
    hk, us = real_ratios["09988"], real_ratios["MSFT"]
    same_days = sorted(set(hk) & set(us))
    assert len(same_days) >= 10
    apart = [d for d in same_days if abs(hk[d] - us[d]) > 0.3]
    assert len(apart) >= len(same_days) // 3, "two unrelated stocks show the same ratios day after day"


def test_an_ordinary_mornings_volume_decay_does_not_read_as_dying_volume():
    """09988 on every real session after the warm-up: the raw volume rate at 10:45 is well under the rate
    at 09:45 (the U-shape of the day), which the original volume_dying read as a STRONG exit; the pace
    (volume over the usual volume of those minutes) stays of the same order."""
    profile = load_profile(profile_path("hk"), {})
    calendar = MarketCalendar(Market.HK)
    [(symbol, series)] = load_samples(Market.HK).items()
    sessions = full_sessions({symbol: series}, calendar)[WARM_UP:]
    clock = SimClock(sessions[0].open)
    data = MarketData(PaperExchange({symbol: series}, clock, calendar, profile), clock, calendar, profile, [symbol])

    async def read() -> list[tuple[float, float, float, float]]:
        from brokers.base import Timeframe

        out = []
        for session in sessions:
            rows = []
            for hhmm in ("09:45", "10:45"):
                await clock.sleep_until(calendar.at_local(session.day, __import__("datetime").time.fromisoformat(hhmm)))
                bars = await data.bars(symbol, Timeframe.M1, 30)
                rows += [data.recent_volume_rate(bars), await data.volume_pace(symbol, bars)]
            out.append(tuple(rows))
        return out

    readings = clock.run(read())
    raw_falls = [later / early for early, _, later, _ in readings]
    pace_falls = [later / early for _, early, _, later in readings]
    assert statistics.median(raw_falls) < 0.6, raw_falls             # raw: dying every ordinary morning
    assert 0.6 < statistics.median(pace_falls) < 1.6, pace_falls      # pace: usual for the time of day
    assert statistics.median(pace_falls) > statistics.median(raw_falls) * 1.5



def test_what_is_kept_from_day_to_day_reads_the_same_as_the_bars_themselves():
    """A long-running MarketData keeps the finished sessions' volume curves and bars from day to day. On
    every real 09988 session, its volume ratio and its 1- and 5-minute bars are those worked out from
    the bar file directly."""
    import numpy as np
    from datetime import timedelta

    from brokers.base import BAR_COLUMNS, Timeframe
    from data.bars import resample

    profile = load_profile(profile_path("hk"), {})
    calendar = MarketCalendar(Market.HK)
    [(symbol, series)] = load_samples(Market.HK).items()
    minute_bars = series.minute[BAR_COLUMNS]
    sessions = full_sessions({symbol: series}, calendar)[WARM_UP:]
    clock = SimClock(sessions[0].open)
    data = MarketData(PaperExchange({symbol: series}, clock, calendar, profile), clock, calendar, profile, [symbol])

    def expected_ratio(session, minute: int, volume: int) -> float:
        curves = []
        for past in calendar.previous_sessions(session.day, profile.scan.volume_lookback_sessions):
            day = minute_bars[(minute_bars.index >= past.open) & (minute_bars.index < past.close)]
            if len(day) >= past.trading_minutes * 0.9 and day["volume"].sum() > 0:
                curves.append(np.cumsum(day["volume"].to_numpy(dtype=float))[: past.trading_minutes])
        full = [c for c in curves if len(c) == session.trading_minutes]
        return volume / float(np.mean(np.vstack(full), axis=0)[minute - 1])

    async def each_day() -> list[tuple]:
        out = []
        for session in sessions:
            for minute in (45, 200):
                now = session.minute_grid()[minute]
                await clock.sleep_until(now)
                closed = minute_bars[minute_bars.index + timedelta(minutes=1) <= now]
                quote = await data.quote(symbol)
                out.append((session.day, minute, quote.volume_ratio, expected_ratio(session, minute, quote.volume),
                            await data.bars(symbol, Timeframe.M1), closed.tail(120),
                            await data.bars(symbol, Timeframe.M5), resample(closed, Timeframe.M5, calendar).tail(120)))
        return out

    readings = clock.run(each_day())
    assert len(readings) == 2 * len(sessions) >= 20
    for day, minute, ratio, expected, m1, m1_expected, m5, m5_expected in readings:
        assert ratio == pytest.approx(expected, rel=1e-9), f"{day} minute {minute}"
        assert m1.equals(m1_expected) and m5.equals(m5_expected), f"{day} minute {minute}"
