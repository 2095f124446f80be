"""Replaying the bars a user has: column names, a symbol column, 5-minute bars, time zones, bad rows,
missing bars, gaps in the data, board lots and files of the other market (issue 15)."""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

import agent
from data.bars import SAMPLES_DIR, BarFileError, load_bars
from data.calendar import MarketCalendar
from core.instruments import Market, Symbol

HK, US = Market.HK, Market.US
HK_CAL = MarketCalendar(HK)
ONE_MINUTE = SAMPLES_DIR / "hk" / "09988_1m_2022-05-19_2022-06-15.csv"
FIVE_MINUTE = SAMPLES_DIR / "hk" / "09988_5m_2022-04-19_2022-06-15.csv"


def write(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n")
    return path


# --- Formats ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["time", "timestamp", "Timestamp", "DATETIME", "Date", "TIME"])
def test_any_usual_time_column_name_in_any_case_is_read(tmp_path, column):
    f = write(tmp_path / "MSFT.csv", f"""
{column},Open,High,Low,Close,Volume
2022-06-15 13:30:00+00:00,250,251,249,250.5,100
2022-06-15 13:31:00+00:00,250.5,251,250,250.7,100
""")
    minute = load_bars(f)[Symbol(US, "MSFT")].minute
    assert list(minute.index) == [pd.Timestamp("2022-06-15 13:30", tz="UTC"), pd.Timestamp("2022-06-15 13:31", tz="UTC")]


def test_one_file_with_a_symbol_column_holds_several_symbols(tmp_path):
    write(tmp_path / "export.csv", """
symbol,timestamp,open,high,low,close,volume
HK.00700,2022-06-15 09:30:00,350.2,351,350,350.4,100
HK.09988,2022-06-15 09:30:00,85,85.5,84.9,85.1,200
700,2022-06-15 09:31:00,350.4,351,350.2,350.8,100
""")
    loaded = load_bars(tmp_path, HK)
    assert sorted(loaded) == [Symbol(HK, "00700"), Symbol(HK, "09988")]
    assert len(loaded[Symbol(HK, "00700")].minute) == 2 and len(loaded[Symbol(HK, "09988")].minute) == 1


def test_a_bad_row_of_a_shared_file_is_named_by_its_line_in_the_file(tmp_path):
    f = write(tmp_path / "export.csv", """
symbol,time,open,high,low,close,volume
AAPL,2026-07-29 09:30:00,200,201,199,200.5,100
MSFT,2026-07-29 09:30:00,400,401,399,400.5,100
AAPL,2026-07-29 09:31:00,200,201,199,0,100
""")
    with pytest.raises(BarFileError) as caught:
        load_bars(f, US)
    assert str(caught.value) == f"{f}: row 4: close is 0.0; expected a positive price"


def test_five_minute_bars_say_so_and_count_whole_sessions(tmp_path):
    from runner.sessions import session_coverage

    bars = pd.read_csv(FIVE_MINUTE)
    bars[bars["date"].str[:10].isin(["2022-04-19", "2022-04-20"])].to_csv(tmp_path / "09988.csv", index=False)
    series = load_bars(tmp_path)
    assert series[Symbol(HK, "09988")].resolution_minutes == 5
    assert session_coverage(series, HK_CAL) == {date(2022, 4, 19): 1.0, date(2022, 4, 20): 1.0}


def test_naive_times_are_the_markets_unless_a_zone_is_given(tmp_path):
    f = write(tmp_path / "700_1m.csv", "time,open,high,low,close,volume\n2022-06-15 09:30:00,350,351,350,350.4,100")
    assert load_bars(f)[Symbol(HK, "00700")].minute.index[0] == pd.Timestamp("2022-06-15 01:30", tz="UTC")
    f = write(tmp_path / "700_1m.csv", "time,open,high,low,close,volume\n2022-06-15 01:30:00,350,351,350,350.4,100")
    assert load_bars(f, tz="UTC")[Symbol(HK, "00700")].minute.index[0] == pd.Timestamp("2022-06-15 01:30", tz="UTC")


# --- Bad data: refused with the file and the row -------------------------------------------------------
HEADER = "datetime,open,high,low,close,volume\n"
GOOD = "2022-06-15 09:30:00,85,85.5,84.9,85.1,200\n"


@pytest.mark.parametrize("rows, message", [
    (GOOD + "2022-06-15 09:31:00,85,85.5,84.9,85.1,200\n2022-06-15 09:30:00,85,86,84.9,85.9,300\n",
     "row 2 and row 4: time '2022-06-15 09:30:00' twice; expected one bar per time"),
    (GOOD + "2022-06-15 09:31:00,86,85.5,84.9,85.1,200\n",
     "row 3: open 86.0 is outside low..high 84.9..85.5; expected low <= open <= high"),
    (GOOD + "2022-06-15 09:31:00,85,85.5,84.9,84.8,200\n",
     "row 3: close 84.8 is outside low..high 84.9..85.5; expected low <= close <= high"),
    (GOOD + "2022-06-15 09:31:00,85,85.5,-1,85.1,200\n", "row 3: low is -1.0; expected a positive price"),
    (GOOD + "2022-06-15 09:31:00,0,85.5,84.9,85.1,200\n", "row 3: open is 0.0; expected a positive price"),
])
def test_bad_rows_are_refused_with_the_file_and_the_row(tmp_path, rows, message):
    f = tmp_path / "09988_1m.csv"
    f.write_text(HEADER + rows)
    with pytest.raises(BarFileError) as caught:
        load_bars(f)
    assert str(caught.value) == f"{f}: {message}"


def test_a_day_repeated_in_a_daily_file_is_refused(tmp_path):
    f = write(tmp_path / "00005_1d.csv", "date,open,high,low,close,volume\n2022-06-14,50,51,50,50.5,1\n2022-06-14,50,51,50,50.5,1")
    with pytest.raises(BarFileError) as caught:
        load_bars(f)
    assert str(caught.value) == f"{f}: row 2 and row 3: time '2022-06-14' twice; expected one bar per time"


# --- The feed: coverage, lots, the other market --------------------------------------------------------
def _hk_profile(**env):
    from config.settings import load_profile, profile_path

    return load_profile(profile_path("hk"), env)


def _days(source: Path, days: list[str]) -> pd.DataFrame:
    bars = pd.read_csv(source)
    return bars[bars["date"].str[:10].isin(days)]


def test_a_day_with_missing_bars_is_kept_with_its_coverage_unless_under_min_coverage(tmp_path):
    from runner.sessions import NoReplayData, replay_feed

    bars = _days(ONE_MINUTE, ["2022-05-19", "2022-05-20"])
    bars = bars[~((bars["date"].str[:10] == "2022-05-20") & (bars["date"].str[11:16] >= "04:00"))]  # 20th: 09:30-12:00 only
    bars.to_csv(tmp_path / "09988.csv", index=False)
    feed = replay_feed(tmp_path, _hk_profile(), HK_CAL, None, None)
    assert [s.day for s in feed.sessions] == [date(2022, 5, 19), date(2022, 5, 20)]
    assert feed.coverage == {date(2022, 5, 19): 1.0, date(2022, 5, 20): 150 / 330}
    feed = replay_feed(tmp_path, _hk_profile(), HK_CAL, None, None, min_coverage=0.9)
    assert [s.day for s in feed.sessions] == [date(2022, 5, 19)]
    assert feed.skipped_sessions == {date(2022, 5, 20): 150 / 330}
    with pytest.raises(NoReplayData) as caught:
        replay_feed(tmp_path, _hk_profile(), HK_CAL, date(2022, 5, 20), None, min_coverage=0.9)
    assert str(caught.value) == f"{tmp_path}: no HK session with 90% of its bars between 2022-05-20 and the end"


def test_lots_csv_gives_board_lots_and_is_not_read_as_a_ticker(tmp_path):
    from runner.sessions import replay_feed

    _days(ONE_MINUTE, ["2022-05-19"]).to_csv(tmp_path / "00700.csv", index=False)
    _days(ONE_MINUTE, ["2022-05-19"]).to_csv(tmp_path / "02318.csv", index=False)
    write(tmp_path / "lots.csv", "code,lot_size\n700,100\nHK.02318,500")
    feed = replay_feed(tmp_path, _hk_profile(), HK_CAL, None, None)
    assert feed.series[Symbol(HK, "02318")].lot_size == 500 and feed.assumed_lots == {}
    assert feed.other_market_files == [], "lots.csv is not a US ticker LOTS"
    given = replay_feed(tmp_path, _hk_profile(CATALYST__PAPER__LOT_SIZES='{"2318": 1000}'), HK_CAL, None, None)
    assert given.series[Symbol(HK, "02318")].lot_size == 1000, "the profile's lot wins over lots.csv"
    write(tmp_path / "lots.csv", "code,lot_size\n700,many")
    with pytest.raises(BarFileError) as caught:
        replay_feed(tmp_path, _hk_profile(), HK_CAL, None, None)
    assert str(caught.value) == f"{tmp_path / 'lots.csv'}: row 2: lot_size 'many' is not a whole number of shares >= 1"


def test_files_of_the_other_market_are_named(tmp_path):
    from runner.sessions import replay_feed

    _days(ONE_MINUTE, ["2022-05-19"]).to_csv(tmp_path / "09988.csv", index=False)
    write(tmp_path / "AAPL_1m.csv", "datetime,open,high,low,close,volume\n2026-07-29 09:30:00,200,201,199,200.5,100")
    feed = replay_feed(tmp_path, _hk_profile(), HK_CAL, None, None)
    assert feed.other_market_files == ["AAPL_1m.csv"]


# --- Whole replays ------------------------------------------------------------------------------------
def _env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
            "CATALYST_REPORTS_DIR": str(tmp_path / "reports"), "CATALYST_LOG_DIR": str(tmp_path / "logs")}


def _reports(tmp_path: Path) -> list[dict]:
    return [json.loads((f / "report.json").read_text()) for f in sorted((tmp_path / "reports").glob("replay-*"))]


def _gap_folder(folder: Path) -> Path:
    """00700: two days in February 2022 (09988's May bars moved back 13 weeks), then nothing until
    2022-05-19 and -20; the 20th has its morning only. A lots.csv and a US file lie beside it."""
    folder.mkdir()
    may = _days(ONE_MINUTE, ["2022-05-19", "2022-05-20"])
    feb = may.copy()
    feb["date"] = (pd.to_datetime(feb["date"]) - pd.Timedelta(weeks=13)).map(lambda t: t.isoformat(sep=" "))
    may = may[~((may["date"].str[:10] == "2022-05-20") & (may["date"].str[11:16] >= "04:00"))]
    pd.concat([feb, may]).to_csv(folder / "00700.csv", index=False)
    write(folder / "lots.csv", "code,lot_size\n700,100")
    write(folder / "AAPL.csv", "datetime,open,high,low,close,volume\n2026-07-29 09:30:00-04:00,200,201,199,200.5,100")
    return folder


def test_a_gap_in_the_data_makes_a_warm_up_and_the_replay_goes_on_reporting_what_the_data_held(
        database_url, tmp_path, capsys):
    folder = _gap_folder(tmp_path / "bars")
    code = agent.main(["--replay", str(folder)], env=_env(database_url, tmp_path))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2022-02-17 Thu: no bars before this session, so no volume ratio: a warm-up session, no cycle" in out
    assert ("2022-05-19 Thu: no bars in the 20 sessions before this one (a gap in the data), so no volume ratio: "
            "a warm-up session, no cycle") in out
    assert "  bars: 1-minute\n" in out
    assert "  1 session(s) with missing bars, replayed as they are: 2022-05-20 45%\n" in out
    assert "  not read (bars of the other market): AAPL.csv\n" in out
    assert "assumed" not in out, "lots.csv gave the lot of 00700"
    [r] = _reports(tmp_path)
    assert r["session_days"] == ["2022-02-17", "2022-02-18", "2022-05-19", "2022-05-20"]
    assert r["cycles_by_status"] == {"completed": 4}, "two sessions after a warm-up each ran their two cycles"
    assert r["data"]["incomplete_sessions"] == {"2022-05-20": round(150 / 330, 4)}
    assert r["data"]["coverage"]["2022-02-17"] == 1.0 and r["data"]["skipped_sessions"] == {}
    assert r["data"]["other_market_files"] == ["AAPL.csv"] and r["data"]["assumed_lots"] == {}
    [md] = [f.read_text() for f in (tmp_path / "reports").glob("replay-*/report.md")]
    assert "- Sessions with bars missing, replayed as they are (coverage): 2022-05-20 45%." in md
    assert "- Bars: 1-minute." in md and "- Not read (bars of the other market): AAPL.csv." in md

    code = agent.main(["--replay", str(folder), "--min-coverage", "90%"], env=_env(database_url, tmp_path))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "  1 session(s) under --min-coverage left out: 2022-05-20 45%\n" in out
    r = _reports(tmp_path)[-1]
    assert r["session_days"] == ["2022-02-17", "2022-02-18", "2022-05-19"]
    assert r["data"]["skipped_sessions"] == {"2022-05-20": round(150 / 330, 4)}


def test_a_replay_of_five_minute_bars_trades_and_says_its_resolution(database_url, tmp_path, capsys):
    folder = tmp_path / "bars"
    folder.mkdir()
    _days(FIVE_MINUTE, ["2022-04-19", "2022-04-20", "2022-04-21"]).to_csv(folder / "00700_5m.csv", index=False)
    code = agent.main(["--replay", str(folder)], env=_env(database_url, tmp_path))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "  bars: 5-minute\n" in out and "missing bars" not in out
    [r] = _reports(tmp_path)
    assert r["session_days"] == ["2022-04-19", "2022-04-20", "2022-04-21"]
    assert r["data"]["resolution_minutes"] == {"HK.00700": 5}
    assert r["cycles_by_status"] == {"completed": 4}


@pytest.mark.parametrize("argv, message", [
    (["--tz", "Mars/Olympus"], "replay: --tz 'Mars/Olympus' is not a time zone; expected a name like Asia/Hong_Kong, "
                               "America/New_York or UTC"),
    (["--min-coverage", "150%"], "replay: --min-coverage '150%' is not a share of a session's bars; "
                                 "expected 0..1 or a percent (0.9 or 90%)"),
])
def test_bad_tz_and_min_coverage_are_one_line_and_exit_2(database_url, tmp_path, capsys, argv, message):
    code = agent.main(["--replay", str(SAMPLES_DIR / "hk"), *argv], env=_env(database_url, tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == message


def test_tz_without_replay_is_refused(tmp_path, capsys):
    code = agent.main(["--tz", "UTC"], env={"CATALYST_LOG_DIR": str(tmp_path / "logs")})
    assert code == 2 and "--tz and --min-coverage only go with --replay PATH" in capsys.readouterr().err


def test_bar_spacing_is_five_minutes_only_when_every_gap_is_a_multiple_of_five():
    from data.market import bar_step_minutes

    def bars(*minutes: int) -> pd.DataFrame:
        index = pd.DatetimeIndex([pd.Timestamp("2022-06-15 01:30", tz="UTC") + pd.Timedelta(minutes=m) for m in minutes])
        return pd.DataFrame({"volume": [1.0] * len(minutes)}, index=index)

    assert bar_step_minutes(bars(0, 5, 10, 20)) == 5
    assert bar_step_minutes(bars(0, 1, 2, 3)) == 1
    assert bar_step_minutes(bars(0, 5, 12)) == 1, "1-minute bars with minutes missing stay 1-minute bars"
