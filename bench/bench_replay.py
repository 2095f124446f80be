"""Replay speed: the whole agent (rules brain) over all bundled sample data; sessions and bars per second."""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import agent
from data.bars import SAMPLES_DIR
from ops.logsetup import restored_logging


def _replay(market: str, tmp: Path) -> tuple[float, dict]:
    env = {"CATALYST_VAR_DIR": str(tmp / "var"), "CATALYST_REPORTS_DIR": str(tmp / f"reports-{market}"),
           "CATALYST_LOG_DIR": str(tmp / "logs")}
    start = time.perf_counter()
    # The run logs into the temporary folder: the later benches of this process must not (a rollover
    # at midnight into the deleted folder printed "Logging error" tracebacks).
    with restored_logging(), contextlib.redirect_stdout(io.StringIO()):
        code = agent.main(["--market", market, "--replay", str(SAMPLES_DIR / market)], env=env)
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"replay {market} exited {code}")
    [report] = (tmp / f"reports-{market}").glob("replay-*/report.json")
    return wall, json.loads(report.read_text())


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="catalyst-bench-replay-") as tmp:
        for market in ("hk", "us"):
            try:
                wall, r = _replay(market, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - a bench prints figures, it never fails
                print(f"replay {market.upper()}: no figures ({type(exc).__name__}: {exc})")
                continue
            print(f"replay {market.upper()}: {r['sessions']} sessions, {r['bars_replayed']:,} bars, {r['n_trades']} trade{'' if r['n_trades'] == 1 else 's'} "
                  f"in {wall:.1f} s wall -> {r['sessions'] / wall:.2f} sessions/s, {r['bars_replayed'] / wall:,.0f} bars/s "
                  "(includes the embedded PostgreSQL start)")
    try:
        dev_compare()
    except Exception as exc:  # noqa: BLE001 - a bench prints figures, it never fails
        print(f"dev HK replay: no figures ({type(exc).__name__}: {exc})")
    try:
        universe_scale()
    except Exception as exc:  # noqa: BLE001 - a bench prints figures, it never fails
        print(f"replay by universe size: no figures ({type(exc).__name__}: {exc})")
    try:
        target_case()
    except Exception as exc:  # noqa: BLE001 - a bench prints figures, it never fails
        print(f"dev HK target case: no figures ({type(exc).__name__}: {exc})")


# --- The dev HK set (../shared/data/dev/hk, never copied into the repository): replay vs --compare ------------
DEV_HK = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev" / "hk"
DEV_RANGE = ("2019-07-22", "2019-08-09")   # the first half: 15 sessions of 50 symbols


def _child_replay(extra: list[str], tmp: Path, tag: str, profile: str = "config/eval/hk.yaml",
                  dates: tuple[str, str] = DEV_RANGE) -> tuple[float, float, dict]:
    """A replay in its own process: (wall seconds, peak RSS in MB, report)."""
    import csv
    import os
    import subprocess
    import sys

    lots = {r["code"]: int(r["lot_size"]) for r in csv.DictReader((DEV_HK / "lots.csv").open())}
    env = {**os.environ, "CATALYST_VAR_DIR": str(tmp / "var"), "CATALYST_REPORTS_DIR": str(tmp / tag),
           "CATALYST_LOG_DIR": str(tmp / "logs"), "CATALYST__PAPER__LOT_SIZES": json.dumps(lots)}
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "agent.py"), "--replay", str(DEV_HK), "--config", str(root / profile),
           "--brain", "rules", "--from", dates[0], "--to", dates[1], *extra]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"replay {' '.join(extra) or '(plain)'} exited {os.waitstatus_to_exitcode(status)}")
    [report] = (tmp / tag).glob("replay-*/report.json")
    return wall, usage.ru_maxrss / 1024, json.loads(report.read_text())


def dev_compare() -> None:
    if not DEV_HK.is_dir():
        print(f"dev HK replay: no figures ({DEV_HK} not found)")
        return
    with tempfile.TemporaryDirectory(prefix="catalyst-bench-dev-") as tmp:
        plain_wall, plain_rss, r = _child_replay([], Path(tmp), "plain")
        compare_wall, compare_rss, _ = _child_replay(["--compare"], Path(tmp), "compare")
    bars = r["bars_replayed"]
    print(f"dev HK replay {DEV_RANGE[0]}..{DEV_RANGE[1]} ({r['sessions']} sessions, {len(r['symbols'])} symbols, "
          f"{bars:,} bars, {r['n_trades']} trades):")
    print(f"  plain      {plain_wall:6.1f} s wall, {bars / plain_wall:8,.0f} bars/s, peak RSS {plain_rss:,.0f} MB")
    print(f"  --compare  {compare_wall:6.1f} s wall, {bars / compare_wall:8,.0f} bars/s, peak RSS {compare_rss:,.0f} MB "
          f"({compare_wall / plain_wall:.2f} x the plain replay; target <= 2)")



# --- The speed target of a replay: 50 HKEX symbols over 25 sessions (412,500 bars) as a new user runs it ----------
TARGET_RANGE = ("2019-07-22", "2019-08-23")


def target_case() -> None:
    """The live HK profile (two cycles a day) over the dev set, as a new user replays it: bars/s and peak RSS."""
    if not DEV_HK.is_dir():
        print(f"dev HK target case: no figures ({DEV_HK} not found)")
        return
    with tempfile.TemporaryDirectory(prefix="catalyst-bench-target-") as tmp:
        wall, rss, r = _child_replay([], Path(tmp), "target", profile="config/hk.yaml", dates=TARGET_RANGE)
    bars = r["bars_replayed"]
    print(f"dev HK target case, config/hk.yaml {TARGET_RANGE[0]}..{TARGET_RANGE[1]} ({r['sessions']} sessions, "
          f"{len(r['symbols'])} symbols, {bars:,} bars, {r['n_trades']} trades): {wall:.1f} s wall, {bars / wall:,.0f} bars/s "
          f"(target >= 40,000), peak RSS {rss:,.0f} MB (target <= 300)")


# --- Growth with the universe: 1, 10 and 50 symbols of the dev HK set (linked, never copied) ----------------
SCALE_RANGE = ("2019-07-22", "2019-08-02")  # 10 sessions


def universe_scale() -> None:
    """bars/s and peak RSS of a plain replay of the first 1, 10 and 50 dev HK symbols, each in its own process."""
    import os
    import subprocess
    import sys

    if not DEV_HK.is_dir():
        print(f"replay by universe size: no figures ({DEV_HK} not found)")
        return
    codes = sorted({p.name.split("_")[0] for p in DEV_HK.glob("*_1m_*.csv")})
    root = Path(__file__).resolve().parents[1]
    print(f"replay by universe size, dev HK {SCALE_RANGE[0]}..{SCALE_RANGE[1]} (rules brain; peak RSS of the largest "
          "process; --jobs 2 splits the dates over two processes):")
    for n, jobs in ((1, 1), (10, 1), (50, 1), (1, 2), (10, 2), (50, 2)):
        with tempfile.TemporaryDirectory(prefix="catalyst-bench-scale-") as tmp:
            folder = Path(tmp) / "bars"
            folder.mkdir()
            for p in DEV_HK.glob("*.csv"):
                if p.name == "lots.csv" or p.name.split("_")[0] in codes[:n]:
                    (folder / p.name).symlink_to(p)
            env = {**os.environ, "CATALYST_VAR_DIR": str(Path(tmp) / "var"), "CATALYST_REPORTS_DIR": str(Path(tmp) / "r"),
                   "CATALYST_LOG_DIR": str(Path(tmp) / "logs")}
            cmd = [sys.executable, str(root / "agent.py"), "--replay", str(folder), "--config",
                   str(root / "config/eval/hk.yaml"), "--brain", "rules", "--from", SCALE_RANGE[0], "--to", SCALE_RANGE[1],
                   "--jobs", str(jobs)]
            start = time.perf_counter()
            child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root)
            _, status, usage = os.wait4(child.pid, 0)
            wall = time.perf_counter() - start
            if os.waitstatus_to_exitcode(status) != 0:
                print(f"  {n:3d} symbols, --jobs {jobs}: no figures (exit {os.waitstatus_to_exitcode(status)})")
                continue
            [report] = (Path(tmp) / "r").glob("replay-*/report.json")
            bars = json.loads(report.read_text())["bars_replayed"]
            print(f"  {n:3d} symbols, --jobs {jobs}: {bars:9,} bars in {wall:6.1f} s wall, {bars / wall:8,.0f} bars/s, "
                  f"peak RSS {usage.ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
