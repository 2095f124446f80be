"""What a replay is asked to do and what its data held: --from/--to, --tz and --min-coverage checked
before anything runs (a bad value is a usage error, exit 2), the reports folder checked writable, and
the report's "data" part (resolution, sessions with bars missing or left out, lots assumed)."""
from __future__ import annotations

from collections import defaultdict
from datetime import date
from pathlib import Path
from typing import Any, Sequence

from runner.sessions import PaperFeed

REPORTS_ENV = "CATALYST_REPORTS_DIR"
# Set by ``--jobs`` for the processes that replay one range each: their reports are merged, not read.
RANGE_ENV = "CATALYST_REPLAY_RANGE"


class ReplayUsageError(Exception):
    """Bad --from/--to, or no data to replay: exit 2 with this message."""


def replay_data_options(args) -> dict[str, Any]:
    """``--tz`` and ``--min-coverage`` as ``replay_feed`` takes them; a bad value is a usage error."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    tz = getattr(args, "tz", None)
    if tz:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ReplayUsageError(f"--tz {tz!r} is not a time zone; expected a name like Asia/Hong_Kong, "
                                   "America/New_York or UTC") from None
    text = getattr(args, "min_coverage", None)
    share = 0.0
    if text:
        try:
            share = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
        except ValueError:
            share = -1
        if not 0 <= share <= 1:
            raise ReplayUsageError(f"--min-coverage {text!r} is not a share of a session's bars; "
                                   "expected 0..1 or a percent (0.9 or 90%)")
    return {"tz": tz or None, "min_coverage": share}


def data_notes(feed: PaperFeed) -> list[str]:
    """What the replay makes of the data, one line each: resolution, short sessions, skipped ones."""
    by_step: dict[int, list[str]] = defaultdict(list)
    for symbol in feed.real_symbols:
        by_step[feed.series[symbol].resolution_minutes].append(symbol.short)
    steps = "; ".join(f"{step}-minute ({', '.join(names)})" for step, names in sorted(by_step.items()))
    lines = [f"bars: {steps}" if len(by_step) > 1 else f"bars: {next(iter(by_step), 1)}-minute"]
    short = {d: c for d, c in feed.coverage.items() if c < 1}
    if short:
        lines.append(f"{len(short)} session(s) with missing bars, replayed as they are: "
                     + ", ".join(f"{d} {c:.0%}" for d, c in short.items()))
    if feed.skipped_sessions:
        lines.append(f"{len(feed.skipped_sessions)} session(s) under --min-coverage left out: "
                     + ", ".join(f"{d} {c:.0%}" for d, c in feed.skipped_sessions.items()))
    if feed.other_market_files:
        lines.append(f"not read (bars of the other market): {', '.join(feed.other_market_files)}")
    return lines


def data_summary(feed: PaperFeed, session_days: Sequence[str]) -> dict[str, Any]:
    """The report's ``data``: resolution, each replayed session's coverage, skipped sessions, lots assumed."""
    return {
        "resolution_minutes": {str(s): feed.series[s].resolution_minutes for s in feed.real_symbols},
        "coverage": {d: round(feed.coverage[date.fromisoformat(d)], 4) for d in session_days
                     if date.fromisoformat(d) in feed.coverage},
        "incomplete_sessions": {d.isoformat(): round(c, 4) for d, c in feed.coverage.items() if c < 1},
        "skipped_sessions": {d.isoformat(): round(c, 4) for d, c in feed.skipped_sessions.items()},
        "assumed_lots": {str(s): lot for s, lot in sorted(feed.assumed_lots.items())},
        "other_market_files": list(feed.other_market_files),
    }


def unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot take a report, or None when it can."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def parse_day(text: str | None, flag: str) -> date | None:
    if text is None or not str(text).strip():
        return None
    try:
        return date.fromisoformat(str(text).strip())
    except ValueError:
        raise ReplayUsageError(f"{flag} {text!r} is not a date; write it as YYYY-MM-DD") from None
