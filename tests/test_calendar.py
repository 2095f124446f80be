"""Sessions, lunch, half days, holidays and DST from exchange_calendars."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from data.calendar import CalendarRangeError, MarketCalendar, SessionState
from core.instruments import Market

HKT = ZoneInfo("Asia/Hong_Kong")
ET = ZoneInfo("America/New_York")
HK = MarketCalendar(Market.HK)
US = MarketCalendar(Market.US)


def hkt(d: str, hm: str) -> datetime:
    return datetime.fromisoformat(f"{d}T{hm}").replace(tzinfo=HKT)


def et(d: str, hm: str) -> datetime:
    return datetime.fromisoformat(f"{d}T{hm}").replace(tzinfo=ET)


def test_ordinary_hk_day_with_lunch_break():
    s = HK.session(date(2026, 11, 23))
    assert s.open == hkt("2026-11-23", "09:30") and s.close == hkt("2026-11-23", "16:00")
    assert s.break_start == hkt("2026-11-23", "12:00") and s.break_end == hkt("2026-11-23", "13:00")
    assert HK.state(hkt("2026-11-23", "12:30")) is SessionState.LUNCH
    assert HK.state(hkt("2026-11-23", "09:29")) is SessionState.CLOSED
    assert HK.state(hkt("2026-11-23", "09:30")) is SessionState.OPEN
    assert HK.state(hkt("2026-11-23", "16:00")) is SessionState.CLOSED
    assert len(s.minute_grid()) == 330 and not s.is_half_day


def test_hk_half_day_is_morning_only():
    s = HK.session(date(2026, 12, 24))
    assert s.is_half_day
    assert s.close == hkt("2026-12-24", "12:00")
    assert HK.state(hkt("2026-12-24", "13:30")) is SessionState.CLOSED
    assert HK.minutes_to_close(hkt("2026-12-24", "11:50")) == 10


def test_hk_christmas_holiday_and_next_open():
    assert HK.session(date(2026, 12, 25)) is None
    assert HK.state(hkt("2026-12-25", "10:00")) is SessionState.CLOSED
    assert HK.next_open(hkt("2026-12-24", "12:05")) == hkt("2026-12-28", "09:30")


def test_next_open_after_lunch_is_the_afternoon_session():
    assert HK.next_open(hkt("2026-11-23", "12:10")) == hkt("2026-11-23", "13:00")


def test_minutes_to_close_skip_the_lunch_break():
    assert HK.minutes_to_close(hkt("2026-11-23", "11:00")) == 60 + 180
    assert HK.minutes_to_close(hkt("2026-11-23", "15:30")) == 30
    assert HK.minutes_to_break(hkt("2026-11-23", "11:52")) == 8
    assert HK.minutes_to_break(hkt("2026-11-23", "13:30")) is None
    assert HK.minutes_to_close(hkt("2026-11-23", "12:30")) is None


def test_us_half_day_after_thanksgiving_closes_at_13():
    s = US.session(date(2026, 11, 27))
    assert s.close == et("2026-11-27", "13:00") and s.is_half_day
    assert US.minutes_to_close(et("2026-11-27", "12:30")) == 30
    assert US.session(date(2026, 11, 26)) is None  # Thanksgiving


@pytest.mark.parametrize("before, after", [("2026-03-06", "2026-03-09"), ("2026-10-30", "2026-11-02")])
def test_us_open_stays_0930_eastern_across_both_dst_changes(before, after):
    a, b = US.session(date.fromisoformat(before)), US.session(date.fromisoformat(after))
    assert a.open.astimezone(ET).hour == 9 and b.open.astimezone(ET).hour == 9
    assert a.open.astimezone(ET).minute == 30 and b.open.astimezone(ET).minute == 30
    assert a.open.astimezone(timezone.utc).hour != b.open.astimezone(timezone.utc).hour


def test_trading_day_is_market_local():
    # 01:00 UTC on the 23rd is 20:00 on the 22nd in New York and 09:00 on the 23rd in Hong Kong.
    t = datetime(2026, 11, 23, 1, 0, tzinfo=timezone.utc)
    assert US.trading_day(t) == date(2026, 11, 22)
    assert HK.trading_day(t) == date(2026, 11, 23)


def test_minute_grid_skips_lunch():
    grid = HK.session(date(2026, 11, 23)).minute_grid()
    assert grid[0] == hkt("2026-11-23", "09:30") and grid[-1] == hkt("2026-11-23", "15:59")
    assert all(not (12 <= g.astimezone(HKT).hour < 13) for g in grid)


def test_out_of_range_dates_are_refused_clearly():
    # The end is the installed exchange-calendars' own (XHKG's holidays are tabled to 2049 in 4.x).
    with pytest.raises(CalendarRangeError, match=f"knows HK sessions only until {HK.end}; upgrade it"):
        HK.session(HK.end + timedelta(days=3))


def test_the_calendar_covers_2000_to_the_end_of_next_year_for_both_markets():
    # The dev data's US window (2018) and older recordings must replay: a 2018 session is a session.
    us = US.session(date(2018, 2, 16))
    assert us.open == et("2018-02-16", "09:30") and us.close == et("2018-02-16", "16:00")
    assert US.session(date(2018, 2, 19)) is None  # Presidents' Day 2018
    assert HK.session(date(2019, 7, 22)).open == hkt("2019-07-22", "09:30")
    assert US.session(date(2000, 1, 3)) is not None
    assert HK.session(date(2000, 1, 3)).open == hkt("2000-01-03", "10:00")  # HKEX opened at 10:00 then
    assert US.session(date(2027, 12, 31)) is not None
    with pytest.raises(CalendarRangeError, match="outside"):
        US.session(date(1999, 12, 31))


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="naive"):
        HK.state(datetime(2026, 11, 23, 10, 0))
