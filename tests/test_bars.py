"""Loading real bar files: sessions, lunch, holidays, time zones, ticks, resampling, bad files."""
from __future__ import annotations

import shutil
from datetime import date, time
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from brokers.base import BAR_COLUMNS, Timeframe
from data.bars import SAMPLES_DIR, BarFileError, load_bars, load_samples, resample, session_bars
from data.calendar import MarketCalendar
from core.instruments import Market, Symbol, is_on_tick

HK, US = Market.HK, Market.US
BABA = Symbol(HK, "09988")
AAPL, MSFT = Symbol(US, "AAPL"), Symbol(US, "MSFT")
HK_CAL, US_CAL = MarketCalendar(HK), MarketCalendar(US)


@pytest.fixture(scope="module")
def hk():
    return load_samples(HK)


@pytest.fixture(scope="module")
def us():
    return load_samples(US)


def local_times(frame: pd.DataFrame, calendar: MarketCalendar) -> pd.DatetimeIndex:
    return frame.index.tz_convert(calendar.tz)


# --- The real samples -----------------------------------------------------------------------------
def test_hk_session_has_330_minute_bars_and_none_in_the_lunch_break(hk):
    day = session_bars(hk[BABA], date(2022, 6, 15))
    assert len(day) == 330
    assert day.index[0] == pd.Timestamp("2022-06-15 01:30", tz="UTC")   # 09:30 HKT
    assert day.index[-1] == pd.Timestamp("2022-06-15 07:59", tz="UTC")  # 15:59 HKT
    assert not (day.index.hour == 4).any(), "a bar inside 12:00-12:59 HKT (04:xx UTC)"
    assert (pd.Series(day.index).diff().dropna() == pd.Timedelta(minutes=1)).sum() == 328  # one lunch gap


def test_every_hk_session_is_complete_and_the_holiday_is_absent(hk):
    series = hk[BABA]
    days = pd.Index(local_times(series.minute, HK_CAL).date)
    assert date(2022, 6, 3) not in set(days), "2022-06-03 (Tuen Ng) is an HKEX holiday"
    assert pd.Timestamp("2022-06-03") not in series.daily.index
    assert (days.value_counts() == 330).all()
    assert len(days.unique()) == 19


def test_all_prices_sit_on_the_tick_grid_and_float_noise_is_gone(hk, us):
    first = hk[BABA].minute.iloc[0]
    assert first["high"] == 85.4  # file: 85.4000015258789
    assert first["close"] == 85.05  # file: 85.05000305175781
    for market, series in [(HK, hk[BABA]), (US, us[AAPL]), (US, us[MSFT])]:
        for frame, days in [
            (series.minute, local_times(series.minute, MarketCalendar(market)).date),
            (series.daily, series.daily.index.date),
        ]:
            for column in ("open", "high", "low", "close"):
                for price, day in zip(frame[column].to_numpy(), days):
                    assert is_on_tick(market, Decimal(repr(float(price))), day), f"{series.symbol} {column} {price} on {day}"


def test_aapl_new_york_offsets_land_in_utc(us):
    series = us[AAPL]
    # file: "2026-07-29 09:30:00-04:00" (EDT)
    assert series.minute.index[0] == pd.Timestamp("2026-07-29 13:30", tz="UTC")
    assert str(series.minute.index.tz) == "UTC"
    local = local_times(series.minute, US_CAL)
    assert local.time.min() == time(9, 30) and local.time.max() == time(15, 59)
    assert len(session_bars(series, date(2026, 7, 30))) == 390
    assert series.minute["volume"].iloc[-1] == 0  # the real file's last bar: kept as it is


def test_msft_utc_file_and_its_partial_first_day(us):
    series = us[MSFT]
    assert series.minute.index[0] == pd.Timestamp("2022-05-18 16:00", tz="UTC")  # 12:00 EDT
    assert len(session_bars(series, date(2022, 5, 18))) == 240
    assert series.lot_size == 1 and not series.synthetic


def test_minute_and_daily_files_of_one_code_merge_into_one_series(hk, us):
    assert set(hk) == {BABA} and set(us) == {AAPL, MSFT}
    baba = hk[BABA]
    assert baba.lot_size == 100 and baba.name == "Alibaba Group"
    assert len(baba.daily) == 628 and baba.daily.index.tz is None
    assert baba.daily.index[-1] == pd.Timestamp("2022-06-15")
    assert list(baba.minute.columns) == BAR_COLUMNS
    assert baba.minute.index.is_monotonic_increasing and baba.minute.index.is_unique


def test_five_minute_file_is_used_only_without_a_one_minute_file(tmp_path):
    shutil.copy(SAMPLES_DIR / "hk" / "09988_5m_2022-04-19_2022-06-15.csv", tmp_path)
    only_5m = load_bars(tmp_path)[BABA].minute
    assert pd.Series(only_5m.index).diff().min() == pd.Timedelta(minutes=5)
    assert only_5m.index[0] == pd.Timestamp("2022-04-19 01:30", tz="UTC")
    shutil.copy(SAMPLES_DIR / "hk" / "09988_1m_2022-05-19_2022-06-15.csv", tmp_path)
    both = load_bars(tmp_path)[BABA].minute
    assert len(both) == 6270


# --- Files written for the test -------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


def test_pre_and_post_market_bars_are_dropped(tmp_path):
    f = write(tmp_path / "ZZZ_1m_x.csv", """
datetime,open,high,low,close,volume
2026-07-29 08:00:00-04:00,10,10,10,10,5
2026-07-29 09:30:00-04:00,10,10.5,9.9,10.2,100
2026-07-29 15:59:00-04:00,10.2,10.3,10.1,10.25,100
2026-07-29 16:00:00-04:00,10.2,10.2,10.2,10.2,7
""")
    series = load_bars(f)[Symbol(US, "ZZZ")]
    assert list(series.minute.index) == [pd.Timestamp("2026-07-29 13:30", tz="UTC"), pd.Timestamp("2026-07-29 19:59", tz="UTC")]


def test_naive_intraday_times_are_exchange_local_and_codes_are_normalised(tmp_path):
    f = write(tmp_path / "700_1m.csv", """
date,open,high,low,close,volume
2022-06-15 09:30:00,350.2,351,350,350.4,100
2022-06-15 12:30:00,350.2,351,350,350.4,100
2022-06-15 13:00:00,350.2,351,350,350.4,100
""")
    series = load_bars(f)[Symbol(HK, "00700")]
    assert list(series.minute.index) == [pd.Timestamp("2022-06-15 01:30", tz="UTC"), pd.Timestamp("2022-06-15 05:00", tz="UTC")]
    assert series.lot_size == 100  # unknown HK code: default until the broker snapshot says otherwise
    assert series.minute["close"].iloc[0] == 350.4


def test_frequency_is_inferred_without_a_marker(tmp_path):
    write(tmp_path / "00005.csv", """
date,open,high,low,close,volume
2022-06-14,50.1,51,50,50.5,1000
2022-06-15,50.5,51.2,50.2,51.0,1200
""")
    write(tmp_path / "MSFT.csv", """
date,open,high,low,close,volume
2022-06-15 13:30:00+00:00,250,251,249,250.5,100
2022-06-15 13:31:00+00:00,250.5,251,250,250.7,100
""")
    loaded = load_bars(tmp_path)
    assert len(loaded[Symbol(HK, "00005")].daily) == 2 and loaded[Symbol(HK, "00005")].minute.empty
    assert len(loaded[MSFT].minute) == 2 and loaded[MSFT].daily.empty
    assert set(load_bars(tmp_path, HK)) == {Symbol(HK, "00005")}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("date,open,high,low,close\n2022-06-15,1,1,1,1\n", ["missing column", "volume"]),
        ("when,open,high,low,close,volume\n2022-06-15,1,1,1,1,1\n", ["missing column", "date or datetime"]),
        ("date,open,high,low,close,volume\n2022-06-15 01:30:00+00:00,1,1,1,1,1\nsoon,1,1,1,1,1\n",
         ["row 3", "'soon'", "not a timestamp"]),
        ("date,open,high,low,close,volume\n2022-06-15 01:30:00+00:00,1,1,1,1,1\n2022-06-15 01:31:00+00:00,1,1,-2,1,1\n",
         ["row 3", "low is -2.0", "positive price"]),
        ("date,open,high,low,close,volume\n2022-06-15 01:30:00+00:00,1,abc,1,1,1\n", ["row 2", "high is 'abc'", "number"]),
        ("date,open,high,low,close,volume\n2022-06-15 01:30:00+00:00,1,1,1,1,-5\n", ["row 2", "volume", "zero or more"]),
        ("date,open,high,low,close,volume\n2022-06-15 01:30:00+00:00,1,0.9,1.1,1,5\n", ["row 2", "high 0.9 is below low 1.1"]),
    ],
)
def test_bad_files_name_the_file_the_row_and_what_is_expected(tmp_path, text, expected):
    f = tmp_path / "09988_1m_bad.csv"
    f.write_text(text)
    with pytest.raises(BarFileError) as caught:
        load_bars(f)
    message = str(caught.value)
    assert str(f) in message
    for part in expected:
        assert part in message


def test_a_file_of_the_wrong_market_is_refused(tmp_path):
    f = write(tmp_path / "AAPL_1d.csv", "date,open,high,low,close,volume\n2022-06-15,1,1,1,1,1")
    with pytest.raises(BarFileError, match="not a HK symbol"):
        load_bars(f, HK)


# --- Resampling -----------------------------------------------------------------------------------
def test_hourly_bars_are_anchored_on_each_session_part_and_never_cross_lunch(hk):
    minute = session_bars(hk[BABA], date(2022, 6, 15))
    hourly = resample(minute, Timeframe.H1, HK_CAL)
    local = [t.strftime("%H:%M") for t in local_times(hourly, HK_CAL)]
    assert local == ["09:30", "10:30", "11:30", "13:00", "14:00", "15:00"]
    short = minute.between_time("03:30", "03:59")  # 11:30-11:59 HKT: the half-hour before lunch
    assert hourly.loc["2022-06-15 03:30+00:00", "volume"] == short["volume"].sum()
    assert hourly.loc["2022-06-15 03:30+00:00", "close"] == minute.loc["2022-06-15 03:59+00:00", "close"]
    assert hourly.loc["2022-06-15 05:00+00:00", "open"] == minute.loc["2022-06-15 05:00+00:00", "open"]
    assert hourly["volume"].sum() == minute["volume"].sum()


def test_bar_counts_per_session_for_each_timeframe(hk, us):
    baba = session_bars(hk[BABA], date(2022, 6, 15))
    assert len(resample(baba, Timeframe.M5, HK_CAL)) == 66
    assert len(resample(baba, Timeframe.M15, HK_CAL)) == 22
    aapl = session_bars(us[AAPL], date(2026, 7, 30))
    hourly = resample(aapl, Timeframe.H1, US_CAL)
    assert [t.strftime("%H:%M") for t in local_times(hourly, US_CAL)][-1] == "15:30"  # 15:30-16:00, shorter
    assert len(resample(aapl, Timeframe.M15, US_CAL)) == 26


def test_daily_resample_groups_by_market_local_date(us):
    minute = us[AAPL].minute
    daily = resample(minute, Timeframe.D1, US_CAL)
    assert daily.index.tz is None
    assert list(daily.index.date) == sorted(set(local_times(minute, US_CAL).date))
    day = session_bars(us[AAPL], date(2026, 7, 30))
    row = daily.loc[pd.Timestamp("2026-07-30")]
    assert row["high"] == day["high"].max() and row["low"] == day["low"].min()
    assert row["open"] == day["open"].iloc[0] and row["close"] == day["close"].iloc[-1]


@settings(max_examples=25, deadline=None)
@given(
    timeframe=st.sampled_from([Timeframe.M5, Timeframe.M15, Timeframe.H1]),
    start=st.integers(0, 5000),
    length=st.integers(1, 1200),
)
def test_resampled_bars_agree_with_the_minutes_they_hold(hk, timeframe, start, length):
    minute = hk[BABA].minute.iloc[start:start + length]
    out = resample(minute, timeframe, HK_CAL)
    assert out["volume"].sum() == pytest.approx(minute["volume"].sum())
    width = pd.Timedelta(minutes=timeframe.minutes)
    for label, bar in out.iterrows():
        held = minute[(minute.index >= label) & (minute.index < label + width)]
        assert not held.empty
        session = HK_CAL.session_at(label.to_pydatetime())
        part = next(p for p in session.parts if p[0] <= label.to_pydatetime() < p[1])
        assert held.index[-1].to_pydatetime() < part[1], "a bar spans the lunch break"
        assert bar["high"] == held["high"].max() and bar["low"] == held["low"].min()



def _grouped_by_bar(minute: pd.DataFrame, bars: pd.DataFrame, width: pd.Timedelta) -> pd.DataFrame:
    """The reference: each minute grouped under the bar label it falls in, aggregated by pandas."""
    labels = pd.Series(bars.index, index=bars.index).reindex(minute.index, method="ffill")
    labels = labels[(minute.index - pd.DatetimeIndex(labels)) < width]
    return minute.loc[labels.index].groupby(pd.DatetimeIndex(labels.to_numpy())).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})


@pytest.mark.parametrize("timeframe", [Timeframe.M5, Timeframe.M15, Timeframe.H1])
def test_resampled_bars_are_the_open_high_low_close_and_volume_of_their_minutes(hk, us, timeframe):
    """Every bar of every real sample minute file, both markets: the first open, the highest high,
    the lowest low, the last close and the summed volume of the minutes it holds, also where a
    minute's value is missing (skipped, as pandas skips it)."""
    width = pd.Timedelta(minutes=timeframe.minutes)
    for minute, calendar in ((hk[BABA].minute, HK_CAL), (us[MSFT].minute, US_CAL), (us[AAPL].minute, US_CAL)):
        minute = minute[BAR_COLUMNS]
        gappy = minute.copy()
        gappy.iloc[2, gappy.columns.get_loc("high")] = float("nan")
        gappy.iloc[3, gappy.columns.get_loc("close")] = float("nan")
        for frame in (minute, gappy):
            out = resample(frame, timeframe, calendar)
            pd.testing.assert_frame_equal(out, _grouped_by_bar(frame, out, width), check_names=False, check_freq=False)


def test_hk_ticks_follow_the_table_in_force_on_the_bar_date(tmp_path):
    f = write(tmp_path / "00005_1d.csv", """
date,open,high,low,close,volume
2025-08-01,15.01,15.04,15.0,15.02,100
2025-08-04,15.01,15.04,15.0,15.02,100
2026-03-02,5.005,5.01,5.0,5.01,100
""")
    opens = list(load_bars(f)[Symbol(HK, "00005")].daily["open"])
    # 10-20 ticked 0.02 until 2025-08-03, 0.01 from 2025-08-04; 0.005 below 10 not yet in force
    assert opens == [15.02, 15.01, 5.01]
    with_phase2 = load_bars(f, hk_phase2_date=date(2026, 1, 1))[Symbol(HK, "00005")].daily
    assert list(with_phase2["open"]) == [15.02, 15.01, 5.005]
