"""`agent.py --replay PATH --jobs N`: the sessions split over N processes, one merged report."""
from __future__ import annotations

import json
from pathlib import Path

import agent
from data.bars import SAMPLES_DIR
from tests.helpers import hk_sample_under_three_codes
from runner.replay_jobs import split_sessions

HK_SAMPLES = SAMPLES_DIR / "hk"
RANGE = ["--from", "2022-05-26", "--to", "2022-06-15"]
SAME_TRADE = ("symbol", "quantity", "entry_time", "entry_price", "exit_time", "exit_price", "exit_reason", "net_pnl")


def _replay(argv: list[str], database_url: str, tmp_path: Path, name: str) -> dict:
    reports = tmp_path / name
    env = {"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
           "CATALYST_REPORTS_DIR": str(reports), "CATALYST_LOG_DIR": str(tmp_path / "logs")}
    code = agent.main(argv, env=env)
    assert code == 0
    [report] = reports.glob("replay-*/report.json")
    assert (report.parent / "report.md").is_file() and (report.parent / "report.html").is_file()
    assert not list(reports.glob("replay-parts-*")), "the ranges' own reports are not left behind"
    return json.loads(report.read_text())


def test_two_processes_give_the_single_replays_trades_and_pnl(database_url, tmp_path, capsys):
    folder = hk_sample_under_three_codes(tmp_path / "bars", "09988_1[md]_*.csv")
    single = _replay(["--replay", str(folder), "--brain", "rules", *RANGE], database_url, tmp_path, "single")
    capsys.readouterr()
    split = _replay(["--replay", str(folder), "--brain", "rules", *RANGE, "--jobs", "2"], database_url, tmp_path, "jobs")
    out = capsys.readouterr().out

    assert single["n_trades"] > 0, "the data must trade for the comparison to mean anything"
    days = single["session_days"]
    half = (len(days) + 1) // 2
    assert f"in 2 process(es): {days[0]}..{days[half - 1]}, {days[half]}..{days[-1]}" in out
    assert split["session_days"] == days and split["sessions"] == single["sessions"]
    assert split["bars_replayed"] == single["bars_replayed"]
    assert [[t[k] for k in SAME_TRADE] for t in split["trades"]] == [[t[k] for k in SAME_TRADE] for t in single["trades"]]
    for figure in ("n_trades", "wins", "losses", "gross_pnl", "fees", "net_pnl", "exits_by_reason", "final_equity",
                   "return_pct", "max_drawdown_pct", "cycles_by_status", "pass_reasons"):
        assert split[figure] == single[figure], figure
    assert [p["equity"] for p in split["equity_curve"]] == [p["equity"] for p in single["equity_curve"]]
    assert split["open_positions"] == single["open_positions"] == []
    ranges = split["run"]["jobs"]["ranges"]
    assert [(r["first_session"], r["last_session"]) for r in ranges] == [(days[0], days[half - 1]), (days[half], days[-1])]
    assert len({r["agent_id"] for r in ranges}) == 2, "each range trades under its own agent id"


def test_split_sessions_gives_contiguous_ranges_of_nearly_equal_length():
    sessions = list(range(7))
    assert split_sessions(sessions, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert split_sessions(sessions, 10) == [[s] for s in sessions], "never an empty range"
    assert split_sessions(sessions, 1) == [sessions]


def test_jobs_without_replay_or_with_compare_is_refused(capsys):
    assert agent.main(["--jobs", "2"], env={}) == 2
    assert "--jobs N only goes with --replay PATH" in capsys.readouterr().err
    assert agent.main(["--replay", str(HK_SAMPLES), "--compare", "--jobs", "2"], env={}) == 2
    assert "without --compare" in capsys.readouterr().err
    assert agent.main(["--replay", str(HK_SAMPLES), "--jobs", "0"], env={}) == 2
    assert "--jobs 0: give 1 or more processes" in capsys.readouterr().err
