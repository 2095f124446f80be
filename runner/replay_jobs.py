"""``agent.py --replay PATH --jobs N``: one long replay as N date ranges in N processes, one report.

The sessions of the replay are split into N contiguous ranges of (nearly) equal length. Each
range is an ordinary ``--replay PATH --from A --to B`` in its own process: its own simulated
clock and paper exchange, its own agent id (``<agent_id>-replay-<stamp>-<salt>``, the salt
differs per process) and therefore its own lock and its own rows in the database. The parent
waits for them and merges their ``report.json`` into one report, written and printed as a
single replay's.

What a range boundary cuts, and how it is handled:

* Positions: none crosses a boundary. A day-trading replay closes every position by the end of
  its session (the monitor's time exits, ``market_close`` at the latest) and every day order
  expires at the close (``brokers.paper``). Only a position whose monitor failed can stay open
  overnight: a single replay adopts it the next session and exits it then; a split one lists it
  under ``open_positions`` of its range, and ``run.jobs.ranges[].open_at_end`` counts them.
* History: every process loads all the bars, so the first session of a range has the sessions
  before it for its volume baseline and indicators, as in a single replay: it is no warm-up.
* Account: the one thing that is not independent. Each range starts from the profile's starting
  cash, while a single replay carries the previous range's gains and losses into the risk
  budget (``risk.suggested_quantity`` sizes on equity). The merged equity curve chains the
  ranges (each range's curve moved by the equity the ranges before it ended with), so P&L,
  return and drawdown add up; a position size can differ from the single replay's by the lots
  that the carried-over equity would have changed (none while the equity moved less than a
  lot's worth of the risk budget). ``run.jobs.equity_note`` says so in the report.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.clock import WallClock
from config.settings import PROJECT_DIR
from data.bars import BarFileError
from data.calendar import MarketCalendar, Session
from news.replay_news import NewsFileError
from runner.replay_figures import max_drawdown_pct, summarize
from runner.replay_options import RANGE_ENV, ReplayUsageError, parse_day, replay_data_options, unwritable
from runner.replay_report import print_report, write_report
from runner.sessions import NoReplayData, replay_feed

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
REPORTS_ENV = "CATALYST_REPORTS_DIR"
EQUITY_NOTE = ("each range started from the starting cash; the equity curve chains the ranges, and a size can "
               "differ from a single replay's by what the carried-over equity would have changed")


def split_sessions(sessions: Sequence[Session], jobs: int) -> list[list[Session]]:
    """``sessions`` as at most ``jobs`` contiguous, non-empty ranges of (nearly) equal length, in order."""
    jobs = max(1, min(jobs, len(sessions)))
    size, extra = divmod(len(sessions), jobs)
    ranges, start = [], 0
    for k in range(jobs):
        end = start + size + (1 if k < extra else 0)
        ranges.append(list(sessions[start:end]))
        start = end
    return ranges


def run_split_replay(args, settings, calendar: MarketCalendar, *, env: Mapping[str, str],
                     reports_dir: Path | None = None) -> int:
    """Replay each range in its own ``agent.py`` process, then write and print the merged report."""
    profile = settings.profile
    try:
        start, end = parse_day(args.date_from, "--from"), parse_day(args.date_to, "--to")
        if start and end and start > end:
            raise ReplayUsageError(f"--from {start} is after --to {end}; nothing to replay")
        feed = replay_feed(args.replay, profile, calendar, start, end, **replay_data_options(args))
    except (ReplayUsageError, NoReplayData, BarFileError, NewsFileError, OSError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out_root = Path(reports_dir or env.get(REPORTS_ENV) or PROJECT_DIR / "reports").expanduser()
    problem = unwritable(out_root)
    if problem:
        print(f"replay: the reports folder {out_root} cannot be written ({problem}); "
              f"set {REPORTS_ENV} to a folder you can write", file=sys.stderr)
        return EXIT_USAGE
    ranges = split_sessions(feed.sessions, args.jobs)
    print(f"Catalyst replay {profile.market.value}: {len(feed.sessions)} session(s) {feed.sessions[0].day} to "
          f"{feed.sessions[-1].day} from {args.replay} in {len(ranges)} process(es): "
          + ", ".join(f"{r[0].day}..{r[-1].day}" for r in ranges))
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="replay-parts-", dir=out_root) as scratch:
        parts, failure = _run_ranges(args, ranges, env, Path(scratch))
        if failure:
            print(f"replay failed: {failure}", file=sys.stderr)
            return EXIT_FAILED
    report = merge_reports(parts, jobs=len(ranges))
    report["run"].update({"data_path": str(args.replay), "from": start.isoformat() if start else None,
                          "to": end.isoformat() if end else None, "profile_file": str(settings.profile_file),
                          "wall_seconds": round(time.perf_counter() - began, 2)})
    stamp = f"{WallClock().now():%Y%m%dT%H%M%S}"
    folder = write_report(report, feed, calendar, out_root, f"replay-{stamp}-jobs{len(ranges)}")
    print_report(report, folder)
    return EXIT_OK


def _child_argv(args, first: Session, last: Session) -> list[str]:
    argv = [sys.executable, str(PROJECT_DIR / "agent.py"), "--replay", str(args.replay), "--market", args.market,
            "--from", first.day.isoformat(), "--to", last.day.isoformat()]
    for flag, value in (("--config", args.config), ("--brain", args.brain), ("--tz", args.tz),
                        ("--min-coverage", args.min_coverage)):
        if value:
            argv += [flag, str(value)]
    return argv


def _run_ranges(args, ranges: list[list[Session]], env: Mapping[str, str],
                scratch: Path) -> tuple[list[dict[str, Any]], str | None]:
    """Start every range at once, wait for all; their reports in order, or why one failed."""
    children = []
    for k, sessions in enumerate(ranges, 1):
        folder = scratch / f"part-{k}"
        folder.mkdir()
        child_env = {**env, REPORTS_ENV: str(folder), RANGE_ENV: f"{k}/{len(ranges)}"}
        log = (folder / "output.txt").open("w")
        children.append((k, sessions, folder, log, subprocess.Popen(
            _child_argv(args, sessions[0], sessions[-1]), env=child_env, stdout=log, stderr=subprocess.STDOUT,
            cwd=PROJECT_DIR)))
    reports, failure = [], None
    for k, sessions, folder, log, child in children:
        code = child.wait()
        log.close()
        found = sorted(folder.glob("replay-*/report.json"))
        if code != EXIT_OK or not found:
            tail = (folder / "output.txt").read_text(errors="replace").strip().splitlines()[-1:]
            failure = failure or (f"range {k} ({sessions[0].day}..{sessions[-1].day}) exited {code}"
                                  + (f": {tail[0]}" if tail else ""))
            continue
        print(f"  range {k}: {sessions[0].day}..{sessions[-1].day}, {len(sessions)} session(s) done")
        reports.append(json.loads(found[0].read_text()))
    return reports, failure


def merge_reports(parts: list[dict[str, Any]], *, jobs: int) -> dict[str, Any]:
    """One report from the ranges' reports (in date order): trades and sessions joined, every trading
    figure recomputed from the joined trades, the equity curve chained."""
    first = parts[0]
    trades = [t for p in parts for t in p["trades"]]
    open_positions = [t for p in parts for t in p["open_positions"]]
    curve = list(first["equity_curve"])
    for part in parts[1:]:
        shift = curve[-1]["equity"] - part["starting_equity"]
        curve += [{**pt, "equity": round(pt["equity"] + shift, 4), "cash": round(pt["cash"] + shift, 4)}
                  for pt in part["equity_curve"][1:]]
    start_equity, final_equity = curve[0]["equity"], curve[-1]["equity"]
    usage: dict[str, dict[str, float]] = {}
    for part in parts:
        for purpose, u in part["llm_usage"].items():
            row = usage.setdefault(purpose, {"calls": 0, "cost_usd": 0.0})
            row["calls"] += u["calls"]
            row["cost_usd"] = round(row["cost_usd"] + u["cost_usd"], 6)
    days = [d for p in parts for d in p["session_days"]]
    symbols = list(dict.fromkeys(s for p in parts for s in p["symbols"]))
    merged = {
        **first,
        "sessions": sum(p["sessions"] for p in parts),
        "session_days": days,
        "first_session": days[0] if days else None,
        "last_session": days[-1] if days else None,
        "symbols": symbols,
        "synthetic_symbols": list(dict.fromkeys(s for p in parts for s in p["synthetic_symbols"])),
        "bars_replayed": sum(p["bars_replayed"] for p in parts),
        **summarize(trades, open_positions),
        "starting_equity": start_equity,
        "final_equity": final_equity,
        "return_pct": round((final_equity - start_equity) / start_equity * 100, 4) if start_equity else None,
        "max_drawdown_pct": max_drawdown_pct([pt["equity"] for pt in curve]),
        "equity_curve": curve,
        "llm_cost_usd": round(sum(p["llm_cost_usd"] or 0 for p in parts), 6),
        "llm_usage": dict(sorted(usage.items())),
        "cycles": sum(p["cycles"] for p in parts),
        "cycles_by_status": dict(sorted(_added(p["cycles_by_status"] for p in parts).items())),
        "trades": trades,
        "open_positions": open_positions,
        "not_booked": [t for p in parts for t in p["not_booked"]],
        "pass_reasons": dict(sorted(_added(p.get("pass_reasons", {}) for p in parts).items(),
                                    key=lambda kv: (-kv[1], kv[0]))),
        "news": _merged_news([p.get("news") for p in parts]),
        "data": _merged_data([p["data"] for p in parts]),
    }
    merged["run"] = {**first["run"], "agent_id": [p["run"]["agent_id"] for p in parts], "jobs": {
        "processes": jobs,
        "ranges": [{"first_session": p["first_session"], "last_session": p["last_session"],
                    "agent_id": p["run"]["agent_id"], "wall_seconds": p["run"].get("wall_seconds"),
                    "open_at_end": len(p["open_positions"])} for p in parts],
        "equity_note": EQUITY_NOTE,
    }}
    return merged


def _added(counts) -> Counter:
    total: Counter = Counter()
    for c in counts:
        total.update(c)
    return total


def _merged_news(parts: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    present = [n for n in parts if n]
    if not present:
        return None
    return {"headlines_loaded": max(n.get("headlines_loaded", 0) for n in present),  # every range loads them all
            "sources": sorted({s for n in present for s in n.get("sources", [])}),
            "trades_with_catalyst": sum(n.get("trades_with_catalyst", 0) for n in present)}


def _merged_data(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged = dict(parts[0])
    for key in ("coverage", "incomplete_sessions", "skipped_sessions"):
        merged[key] = {d: c for p in parts for d, c in p.get(key, {}).items()}
    return merged
