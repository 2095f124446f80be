"""`agent.py --replay`: the whole agent over the 19 real 09988 sessions, and a report that agrees with itself."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

import agent
from data.bars import SAMPLES_DIR

HK_SAMPLES = SAMPLES_DIR / "hk"


def _env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
            "CATALYST_REPORTS_DIR": str(tmp_path / "reports"), "CATALYST_LOG_DIR": str(tmp_path / "logs")}


def _report(tmp_path: Path) -> tuple[Path, dict]:
    [folder] = list((tmp_path / "reports").glob("replay-*"))
    return folder, json.loads((folder / "report.json").read_text())


def test_replay_of_the_19_sample_sessions_writes_a_report_that_agrees_with_its_trades(database_url, tmp_path, capsys):
    code = agent.main(["--replay", str(HK_SAMPLES)], env=_env(database_url, tmp_path))
    out = capsys.readouterr().out
    assert code == 0, out
    folder, r = _report(tmp_path)
    assert {p.name for p in folder.iterdir()} >= {"report.md", "report.json", "chart.png"}
    assert (folder / "chart.png").stat().st_size > 10_000
    assert r["sessions"] == 19 and r["symbols"] == ["HK.09988"] and r["synthetic_symbols"] == []

    trades = r["trades"]
    assert r["n_trades"] == len(trades) >= 1, "the rules brain trades at least once over 19 sessions"
    wins = [t for t in trades if t["net_pnl"] > 0]
    losses = [t for t in trades if t["net_pnl"] <= 0]
    assert r["win_rate"] == pytest.approx(len(wins) / len(trades), abs=1e-4)  # a fraction: 1.0 is 100 %
    assert r["net_pnl"] == pytest.approx(sum(t["net_pnl"] for t in trades), abs=0.01)
    assert r["fees"] == pytest.approx(sum(t["fees"] for t in trades), abs=0.01)
    assert r["exits_by_reason"] == dict(Counter(t["exit_reason"] for t in trades))
    if wins:
        assert r["avg_win_pct"] == pytest.approx(sum(t["net_pnl_pct"] for t in wins) / len(wins), abs=0.01)
    if losses:
        assert r["avg_loss_pct"] == pytest.approx(sum(t["net_pnl_pct"] for t in losses) / len(losses), abs=0.01)
    for t in trades:
        # Each row agrees with itself: gross from prices, net = gross - fees.
        assert t["gross_pnl"] == pytest.approx((t["exit_price"] - t["entry_price"]) * t["quantity"], abs=0.01)
        assert t["net_pnl"] == pytest.approx(t["gross_pnl"] - t["fees"], abs=0.01)
        assert t["quantity"] % 100 == 0, "whole board lots of 09988"
    assert r["final_equity"] == pytest.approx(r["starting_equity"] + r["net_pnl"], abs=0.01)
    for key in ("max_drawdown_pct", "haiku_calls_per_trade", "llm_cost_usd", "monitor_errors", "stop_reaction_s_p95"):
        assert key in r
    assert "Report:" in out and str(folder) in out


def test_from_and_to_limit_the_sessions(database_url, tmp_path, capsys):
    code = agent.main(["--replay", str(HK_SAMPLES), "--from", "2022-06-06", "--to", "2022-06-10"],
                      env=_env(database_url, tmp_path))
    assert code == 0, capsys.readouterr().out
    _, r = _report(tmp_path)
    assert r["sessions"] == 5 and (r["first_session"], r["last_session"]) == ("2022-06-06", "2022-06-10")


def test_a_path_without_data_exits_2_naming_the_path(database_url, tmp_path, capsys):
    missing = tmp_path / "no-such-bars"
    code = agent.main(["--replay", str(missing)], env=_env(database_url, tmp_path))
    captured = capsys.readouterr()
    assert code == 2
    assert str(missing) in captured.err + captured.out


def test_unparseable_dates_exit_2(database_url, tmp_path, capsys):
    code = agent.main(["--replay", str(HK_SAMPLES), "--from", "June 6"], env=_env(database_url, tmp_path))
    captured = capsys.readouterr()
    assert code == 2 and "--from" in captured.err + captured.out
