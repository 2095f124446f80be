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


def _replay(market: str, tmp: Path) -> tuple[float, dict]:
    env = {"CATALYST_VAR_DIR": str(tmp / "var"), "CATALYST_REPORTS_DIR": str(tmp / f"reports-{market}"),
           "CATALYST_LOG_DIR": str(tmp / "logs")}
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
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


if __name__ == "__main__":
    main()
