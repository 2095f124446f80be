"""workflow.py: the ten phases of a cycle, as the trader sees them on the terminal and in ``cycles.phases``.

(That a whole run stores the phases in order is checked on real runs in test_agent_run.py.)
"""
from __future__ import annotations

import io
import sys
from datetime import datetime, timedelta, timezone

from core.clock import SimClock
from tests.tool_harness import first_cycle
from tool_executor import tool_schemas
from engine.workflow import TOOL_PHASES, Phase, WorkflowTracker, default_progress_stream


def test_phases_never_go_backwards_and_time_each_phase():
    start = first_cycle()
    clock = SimClock(start)
    tracker = WorkflowTracker(clock)
    steps = [("get_portfolio", 1), ("scan_market", 2), ("get_quote", 3), ("check_risk", 4), ("get_quote", 5),
             ("scan_market", 6), ("get_portfolio", 7), ("log_decision", 8)]
    seen = []
    for name, seconds in steps:
        clock.set(start + timedelta(seconds=seconds))
        tracker.tool_called(name)
        if name == "check_risk":
            tracker.risk_checked()
        seen.append(tracker.current)
    assert seen == [Phase.PORTFOLIO, Phase.SCAN, Phase.ANALYZE, Phase.VALIDATE, Phase.VALIDATE, Phase.VALIDATE,
                    Phase.VALIDATE, Phase.LOG]
    tracker.advance(Phase.SCAN)
    assert tracker.current is Phase.LOG
    clock.set(start + timedelta(seconds=10))
    tracker.advance(Phase.COMPLETE)
    timings = tracker.timings()
    assert list(timings) == ["INIT", "PORTFOLIO", "SCAN", "ANALYZE", "DECIDE", "VALIDATE", "LOG", "COMPLETE"]
    assert [timings[p]["seconds"] for p in timings] == [1, 1, 1, 1, 0, 4, 2, 0]
    assert timings["SCAN"]["started_at"] == (start + timedelta(seconds=2)).isoformat()
    assert tracker.tools == [name for name, _ in steps]


def test_every_tool_claude_can_call_moves_the_cycle_to_its_phase():
    assert {schema["name"] for schema in tool_schemas()} == set(TOOL_PHASES)


def test_an_unknown_tool_is_recorded_but_moves_nothing():
    tracker = WorkflowTracker(SimClock(datetime(2026, 11, 23, 1, 45, tzinfo=timezone.utc)))
    tracker.tool_called("get_portfolio")
    tracker.tool_called("buy_everything")
    assert tracker.current is Phase.PORTFOLIO and tracker.tools == ["get_portfolio", "buy_everything"]


def test_the_terminal_shows_one_line_redrawn_in_place_ending_when_the_cycle_completes():
    out = io.StringIO()
    clock = SimClock(datetime(2026, 11, 23, 1, 45, tzinfo=timezone.utc))
    tracker = WorkflowTracker(clock, out)
    tracker.tool_called("scan_market")
    tracker.advance_monitor()
    tracker.advance(Phase.COMPLETE)
    frames = out.getvalue().split("\r")[1:]
    assert frames[0] == "cycle: [INIT] · · · · · · · · ·"
    assert frames[1] == "cycle: init portfolio [SCAN] · · · · · · ·"   # PORTFOLIO skipped: done, in lower case
    assert frames[2] == "cycle: init portfolio scan analyze decide validate execute [MONITOR] · ·"
    assert frames[3] == "cycle: init portfolio scan analyze decide validate execute monitor log [COMPLETE]\n"
    assert out.getvalue().count("\n") == 1, "one line per cycle, not one per phase"


def test_the_progress_line_only_goes_to_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    assert default_progress_stream() is terminal
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # piped into a file or a log: no \r redraws there
    assert default_progress_stream() is None
