"""Silent stops an operator meets running the agent from cron (issue 26, items 13-16): a calendar
that runs out, half-set broker keys, a report run before the session, and the faults that still
printed a traceback where one line is promised.

Each case runs ``agent.main`` (or ``agent.py`` as a subprocess where the process matters) as a user
runs it and asserts the exit code and the one line on stderr.
"""
from __future__ import annotations

import json
from datetime import date, time, timedelta
from pathlib import Path

import exchange_calendars
import pytest

import agent
from config.settings import ENV_VARS
from core.clock import SimClock
from core.instruments import Market
from data.calendar import CalendarRangeError, MarketCalendar
from tests.fakes import free_port
from tests.helpers import query
from tests.cli_harness import agent_cli, holding_the_lock_of, migrated

NO_SECRETS = {var: "" for var in ENV_VARS}
HK = MarketCalendar(Market.HK)
# The last day the installed exchange-calendars knows HKEX sessions for (its lunisolar holidays end there).
HK_LIBRARY_END = exchange_calendars.get_calendar("XHKG").bound_max().date()
# A live HK agent (a broker is configured), nothing listening: the modes below never reach the broker.
MOOMOO = {"MOOMOO_HOST": "127.0.0.1", "MOOMOO_PORT": str(free_port())}


def main(tmp_path: Path, *argv: str, clock: SimClock | None = None, **env: str) -> int:
    """``agent.main`` with an explicit environment: a private var, log and reports folder, no keys."""
    base = {**NO_SECRETS, "CATALYST_VAR_DIR": str(tmp_path / "var"), "CATALYST_LOG_DIR": str(tmp_path / "logs"),
            "CATALYST_REPORTS_DIR": str(tmp_path / "reports")}
    return agent.main(list(argv), env={**base, **env}, clock=clock)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def hk(day: date, hh: int, mm: int) -> SimClock:
    return SimClock(HK.at_local(day, time(hh, mm)))


def where_folder(env: dict[str, str]) -> str:
    return next(iter(env.values()))


def file_in_the_way(tmp_path: Path, name: str) -> str:
    """A folder path whose parent is a regular file: it cannot be made, even by root."""
    blocker = tmp_path / f"a-file-not-{name}"
    blocker.write_text("not a folder\n")
    return str(blocker / name)


# --- 13. the calendar runs out ---------------------------------------------------------------------
def test_the_calendar_ends_where_the_installed_library_ends_not_in_2027():
    assert MarketCalendar(Market.HK).end == HK_LIBRARY_END
    assert HK.session(date(2028, 3, 1)) is not None, "a Wednesday in 2028 is a session"


def test_status_warns_sixty_days_before_the_calendar_ends(database_url, tmp_path, capsys, restore_logging):
    code = main(tmp_path, "--mode", "status", clock=hk(HK_LIBRARY_END - timedelta(days=30), 10, 0),
                DATABASE_URL=database_url, **MOOMOO)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (f"WARNING: the installed exchange-calendars knows HK sessions only until {HK_LIBRARY_END} (30 days "
            "from now): upgrade it (pip install -U exchange-calendars) before then, or trading stops that day") in out


def test_past_the_calendars_end_a_trade_run_is_one_line_and_exit_2(tmp_path, capsys, restore_logging):
    code = main(tmp_path, clock=hk(HK_LIBRARY_END, 17, 0), **MOOMOO)   # the next open is past the end
    _, err = capsys.readouterr()
    assert code == 2
    assert one_line(err) == (f"calendar: the installed exchange-calendars knows HK sessions only until "
                             f"{HK_LIBRARY_END}; upgrade it (pip install -U exchange-calendars): nothing was run")


def test_past_the_calendars_end_status_still_shows_the_positions_and_says_why(database_url, tmp_path, capsys,
                                                                             restore_logging):
    code = main(tmp_path, "--mode", "status", clock=hk(HK_LIBRARY_END, 17, 0), DATABASE_URL=database_url, **MOOMOO)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "next open unknown (past the calendar's end)" in out
    assert "Open positions: none" in out and "WARNING: the installed exchange-calendars" in out


def test_a_calendar_with_a_short_end_warns_and_refuses_in_one_sentence():
    end = date(2026, 12, 31)
    us = MarketCalendar(Market.US, end=end)
    assert us.end_warning(us.at_local(date(2026, 10, 1), time(10))) is None, "92 days ahead: not yet"
    assert "only until 2026-12-31 (60 days from now)" in us.end_warning(us.at_local(date(2026, 11, 1), time(10)))
    with pytest.raises(CalendarRangeError) as raised:
        us.next_open(us.at_local(end, time(17)))
    assert str(raised.value) == ("the installed exchange-calendars knows US sessions only until 2026-12-31; "
                                 "upgrade it (pip install -U exchange-calendars)")


def test_the_daily_report_and_big_bro_are_told_the_calendar_ends(database_url, tmp_path, capsys, restore_logging):
    day = HK_LIBRARY_END - timedelta(days=30)
    while HK.session(day) is None:
        day -= timedelta(days=1)
    url = migrated(database_url)
    code = main(tmp_path, "--mode", "report", clock=hk(day, 16, 30), DATABASE_URL=url, **MOOMOO)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "WARNING: the installed exchange-calendars knows HK sessions only until" in out
    text = (tmp_path / "reports" / f"daily-hk-{day}" / "report.md").read_text()
    assert f"only until {HK_LIBRARY_END}" in text
    [event] = query(url, "SELECT priority, subject, data FROM claude_messages WHERE data->>'event'='CALENDAR_ENDING'")
    assert event["priority"] == "high" and str(HK_LIBRARY_END) in event["subject"]
    assert json.loads(event["data"])["calendar_end"] == HK_LIBRARY_END.isoformat()


# --- 14. half-set broker keys ----------------------------------------------------------------------
HALF_SET = {
    "Alpaca key without its secret": ("us", {"ALPACA_API_KEY": "PKHALFSETKEY0001"}, "ALPACA_SECRET_KEY"),
    "Alpaca secret without its key": ("us", {"ALPACA_SECRET_KEY": "half-set-secret-4d2f9"}, "ALPACA_API_KEY"),
    "Moomoo port without a host": ("hk", {"MOOMOO_PORT": "11111"}, "MOOMOO_HOST"),
    "Moomoo password without a host": ("hk", {"MOOMOO_TRADE_PWD": "half-set-pwd-7781"}, "MOOMOO_HOST"),
}


@pytest.mark.parametrize("case", list(HALF_SET))
def test_a_half_configured_broker_is_a_configuration_error_naming_what_is_missing(tmp_path, capsys, restore_logging,
                                                                               case):
    market, env, missing = HALF_SET[case]
    code = main(tmp_path, "--market", market, **env)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    line = one_line(err)
    assert missing in line and "not set" in line, line
    assert out == "" and not any(value in err for value in env.values() if len(value) > 5), "no secret echoed"


# --- 15. a report run before the session --------------------------------------------------------------
def test_a_report_before_the_session_is_the_previous_sessions_and_leaves_todays_post(database_url, tmp_path, capsys,
                                                                                    restore_logging):
    monday, tuesday = date(2026, 11, 23), date(2026, 11, 24)
    url = migrated(database_url)

    early = main(tmp_path, "--mode", "report", clock=hk(tuesday, 7, 52), DATABASE_URL=url, **MOOMOO)
    early_out = capsys.readouterr().out
    before_close = main(tmp_path, "--mode", "report", "--day", str(tuesday), clock=hk(tuesday, 11, 0),
                        DATABASE_URL=url, **MOOMOO)
    midday_out = capsys.readouterr().out
    after_close = main(tmp_path, "--mode", "report", clock=hk(tuesday, 16, 30), DATABASE_URL=url, **MOOMOO)
    late_out = capsys.readouterr().out

    assert (early, before_close, after_close) == (0, 0, 0)
    assert f"daily-hk-{monday}" in early_out and "(posted to Big Bro" in early_out
    assert "not posted to Big Bro: the session has not closed yet" in midday_out
    assert f"daily-hk-{tuesday}" in late_out and "(posted to Big Bro" in late_out, late_out
    posted = query(url, "SELECT data->>'day' AS day FROM claude_messages WHERE data->>'event'='DAILY_REPORT' ORDER BY id")
    assert [p["day"] for p in posted] == [str(monday), str(tuesday)]


# --- 16. one line where the README promises one --------------------------------------------------------
@pytest.mark.parametrize("folder", ["var", "logs"])
def test_a_var_or_logs_folder_that_cannot_be_made_is_one_line_and_exit_2(database_url, tmp_path, folder):
    where = {"CATALYST_VAR_DIR" if folder == "var" else "CATALYST_LOG_DIR": file_in_the_way(tmp_path, folder)}
    for argv in (["--force"], ["--mode", "status"]):
        ran = agent_cli(None, tmp_path, *argv, **where)
        assert ran.code == 2, ran.out + ran.err
        line = one_line(ran.err)
        assert line.startswith(f"{'var' if folder == 'var' else 'log'} folder {where_folder(where)} cannot be "
                               "written (NotADirectoryError: Not a directory); fix it or point CATALYST_") , line


BAD_URLS = {
    "a port that is not a number": "postgresql://cat:hunter2@127.0.0.1:notaport/trading",
    "a broken IPv6 host": "postgresql://cat:hunter2@[::1/trading",
    "an unknown target_session_attrs": "postgresql://cat:hunter2@127.0.0.1:5432/trading?target_session_attrs=bogus",
}


@pytest.mark.parametrize("case", list(BAD_URLS))
@pytest.mark.parametrize("variable", ["DATABASE_URL", "RESEARCH_DATABASE_URL"])
def test_a_malformed_database_url_is_one_line_and_exit_2(tmp_path, capsys, restore_logging, case, variable):
    code = main(tmp_path, "--mode", "status", **{variable: BAD_URLS[case]})
    out, err = capsys.readouterr()
    assert code == 2, out + err
    line = one_line(err)
    assert line.startswith(f"environment variable {variable}: ") and "hunter2" not in line, line


def test_a_full_log_disk_is_said_once_and_trading_goes_on(database_url, tmp_path):
    """logs/agent.log on a full disk (/dev/full: every write fails with ENOSPC)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "agent.log").symlink_to("/dev/full")
    ran = agent_cli(database_url, tmp_path, "--force")
    assert ran.code == 0, ran.err[-2000:]
    assert one_line(ran.err).startswith(f"logging: cannot write {logs / 'agent.log'} (OSError: [Errno 28] No space "
                                        "left on device); the run goes on without its log file")
    assert query(database_url, "SELECT count(*) AS n FROM cycles")[0]["n"] == 2, "the run went on to the end"


def test_a_profile_of_the_other_market_is_refused(tmp_path, capsys, restore_logging):
    code = main(tmp_path, "--market", "us", "--config", "config/hk.yaml", "--mode", "status")
    _, err = capsys.readouterr()
    assert code == 2
    assert one_line(err) == "config/hk.yaml: market: HK does not match --market us"


def test_a_profile_alone_picks_its_market(database_url, tmp_path, capsys, restore_logging):
    code = main(tmp_path, "--config", "config/us.yaml", "--mode", "status", DATABASE_URL=database_url)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("Catalyst public_claude — US")


def test_close_while_another_run_holds_the_lock_is_exit_1_with_one_line(database_url, tmp_path):
    url = migrated(database_url)
    ran = holding_the_lock_of(url, "intl_claude-demo", lambda: agent_cli(url, tmp_path, "--mode", "close"))
    assert ran.code == 1, ran.out + ran.err
    assert one_line(ran.err) == ("close: another Catalyst run for intl_claude-demo is in progress (it holds the "
                                 "agent lock); nothing was closed. Tell that run instead (a close_all task, see "
                                 "README: Closing everything in an emergency)")
