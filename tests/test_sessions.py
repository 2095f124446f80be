"""sessions.py: which sessions a run or a replay trades, what it trades in each, and when its cycles run.

On the bundled sample bars (real 09988, AAPL and MSFT minutes) and cut-down copies of them;
coverage and ``--min-coverage`` of user bars are in test_replay_data.py.
"""
from __future__ import annotations

from datetime import date, time
from pathlib import Path

import pandas as pd
import pytest

from config.settings import load_profile, profile_path
from data.bars import SAMPLES_DIR, load_bars, load_samples
from data.calendar import MarketCalendar
from core.instruments import Market, Symbol
from runner.sessions import NoReplayData, full_sessions, replay_feed, sample_feed, scheduled_cycle_times

HK, US = Market.HK, Market.US
CALENDARS = {HK: MarketCalendar(HK), US: MarketCalendar(US)}
ALIBABA, AAPL, MSFT = Symbol(HK, "09988"), Symbol(US, "AAPL"), Symbol(US, "MSFT")
HK_MINUTES = SAMPLES_DIR / "hk" / "09988_1m_2022-05-19_2022-06-15.csv"


def profile(market: Market, **env: str):
    return load_profile(profile_path(market.value.lower()), env)


def minutes_of(day: str) -> pd.DataFrame:
    bars = pd.read_csv(HK_MINUTES)
    return bars[bars["date"].str[:10] == day]


# --- the sample sessions of `make run` -------------------------------------------------------------------
@pytest.mark.parametrize("market, last_day, real", [(HK, date(2022, 6, 15), [ALIBABA]),
                                                    (US, date(2026, 8, 5), [AAPL, MSFT])])
def test_make_run_trades_the_latest_full_sample_session_with_the_real_and_a_seeded_synthetic_universe(
        market, last_day, real):
    feed = sample_feed(profile(market), CALENDARS[market])
    assert [s.day for s in feed.sessions] == [last_day]
    assert feed.real_symbols == real
    assert len(feed.synthetic_symbols) == profile(market).paper.universe_size == 30
    assert feed.universe == real + feed.synthetic_symbols
    again = sample_feed(profile(market), CALENDARS[market])
    assert again.synthetic_symbols == feed.synthetic_symbols, "the same seed, the same universe"
    assert all(again.series[s].minute.equals(feed.series[s].minute) for s in feed.synthetic_symbols)
    other_seed = sample_feed(profile(market, CATALYST__PAPER__UNIVERSE_SEED="99"), CALENDARS[market])
    assert any(not other_seed.series[s].minute.equals(feed.series[s].minute)
               for s in set(other_seed.synthetic_symbols) & set(feed.synthetic_symbols))


def test_a_partial_last_day_in_the_samples_is_not_a_session_to_trade():
    """AAPL's minutes end on 2026-08-06 after 42 of 390 minutes: the latest *full* session is the 5th."""
    bars = load_samples(US)
    assert bars[AAPL].minute.index.max().date() == date(2026, 8, 6)
    assert full_sessions(bars, CALENDARS[US])[-1].day == date(2026, 8, 5)


def test_all_sample_sessions_oldest_first():
    feed = sample_feed(profile(HK), CALENDARS[HK], last_only=False)
    days = [s.day for s in feed.sessions]
    assert len(days) == 19 and days == sorted(days) and (days[0], days[-1]) == (date(2022, 5, 19), date(2022, 6, 15))


def test_a_symbol_without_bars_in_a_session_is_not_scanned_in_it():
    """MSFT's sample minutes stop in 2022: on 2026-08-05 only AAPL (and the synthetic names) can be quoted."""
    feed = sample_feed(profile(US), CALENDARS[US])
    trading = feed.trading_in(feed.sessions[-1])
    assert AAPL in trading and MSFT not in trading
    assert set(trading) == set(feed.universe) - {MSFT}


# --- full sessions: 90% of the minutes ---------------------------------------------------------------
def test_a_session_counts_as_full_from_ninety_percent_of_its_minutes(tmp_path):
    day = minutes_of("2022-06-14")  # a complete session: 330 minutes
    assert len(day) == 330
    day.iloc[:297].to_csv(tmp_path / "09988.csv", index=False)            # 297 = 90%
    assert [s.day for s in full_sessions(load_bars(tmp_path), CALENDARS[HK])] == [date(2022, 6, 14)]
    day.iloc[:296].to_csv(tmp_path / "09988.csv", index=False)            # one minute fewer
    assert full_sessions(load_bars(tmp_path), CALENDARS[HK]) == []


# --- replays: the data's own sessions and symbols --------------------------------------------------------
def test_a_replay_trades_the_datas_sessions_between_from_and_to_and_only_the_datas_symbols():
    feed = replay_feed(SAMPLES_DIR / "hk", profile(HK), CALENDARS[HK], date(2022, 5, 30), date(2022, 6, 7))
    assert [s.day for s in feed.sessions] == [date(2022, 5, 30), date(2022, 5, 31), date(2022, 6, 1),
                                              date(2022, 6, 2), date(2022, 6, 6), date(2022, 6, 7)]  # 3 June: holiday
    assert feed.universe == [ALIBABA] and feed.synthetic_symbols == []
    assert set(feed.coverage) == {s.day for s in feed.sessions} and set(feed.coverage.values()) == {1.0}


def test_a_replay_knows_when_there_is_no_history_to_rank_volume_against(tmp_path):
    two_days = pd.concat([minutes_of("2022-06-13"), minutes_of("2022-06-14")])
    two_days.to_csv(tmp_path / "09988.csv", index=False)
    feed = replay_feed(tmp_path, profile(HK), CALENDARS[HK], None, None)
    first, second = feed.sessions
    assert not feed.has_history_before(first), "the first day of the data is a warm-up"
    assert feed.has_history_before(second) and feed.has_history_in([first])
    long_ago = CALENDARS[HK].previous_sessions(date(2022, 5, 3), 5)
    assert not feed.has_history_in(long_ago) and not feed.has_history_in([])


def test_a_window_without_sessions_is_refused_naming_it(tmp_path):
    with pytest.raises(NoReplayData) as refused:
        replay_feed(SAMPLES_DIR / "hk", profile(HK), CALENDARS[HK], date(2023, 1, 2), date(2023, 1, 31))
    assert str(refused.value) == f"{SAMPLES_DIR / 'hk'}: no HK session between 2023-01-02 and 2023-01-31"


# --- when the cycles run ------------------------------------------------------------------------------
def local_times(market: Market, day: date, **env: str) -> list[time]:
    calendar = CALENDARS[market]
    return [calendar.local(t).time() for t in scheduled_cycle_times(profile(market, **env), calendar, calendar.session(day))]


def test_cycles_wait_for_the_opening_range_of_their_part_of_the_session():
    assert local_times(HK, date(2022, 6, 15)) == [time(9, 45), time(13, 15)]   # 09:30 and 13:00, 15-minute range
    assert local_times(US, date(2026, 8, 5)) == [time(9, 45)]
    assert local_times(HK, date(2022, 6, 15), CATALYST__SCHEDULE__CYCLE_TIMES='["15:59", "09:00", "10:30"]') == [
        time(9, 45), time(10, 30), time(15, 59)]


def test_no_cycle_at_or_after_the_close_so_a_half_day_has_only_the_morning():
    assert local_times(HK, date(2022, 6, 15), CATALYST__SCHEDULE__CYCLE_TIMES='["16:00", "11:00"]') == [time(11, 0)]
    assert CALENDARS[HK].local(CALENDARS[HK].session(date(2025, 12, 24)).close).time() == time(12, 0)
    assert local_times(HK, date(2025, 12, 24)) == [time(9, 45)]                # Christmas Eve closes at noon
