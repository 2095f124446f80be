"""The ten phases of a trading cycle, tracked from the tools called; phases never go backwards."""
from __future__ import annotations

import enum
import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from core.clock import Clock


class Phase(str, enum.Enum):
    INIT = "INIT"
    PORTFOLIO = "PORTFOLIO"
    SCAN = "SCAN"
    ANALYZE = "ANALYZE"
    DECIDE = "DECIDE"
    VALIDATE = "VALIDATE"
    EXECUTE = "EXECUTE"
    MONITOR = "MONITOR"
    LOG = "LOG"
    COMPLETE = "COMPLETE"


ORDER = list(Phase)

TOOL_PHASES: dict[str, Phase] = {
    "get_portfolio": Phase.PORTFOLIO,
    "scan_market": Phase.SCAN,
    "get_quote": Phase.ANALYZE,
    "get_technicals": Phase.ANALYZE,
    "detect_patterns": Phase.ANALYZE,
    "get_news": Phase.ANALYZE,
    "check_risk": Phase.DECIDE,
    "execute_trade": Phase.EXECUTE,
    "close_position": Phase.EXECUTE,
    "close_all": Phase.EXECUTE,
    "send_alert": Phase.LOG,
    "log_decision": Phase.LOG,
}


@dataclass
class WorkflowTracker:
    clock: Clock
    out: TextIO | None = None
    current: Phase = Phase.INIT
    entered: dict[str, datetime] = field(default_factory=dict)
    tools: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.entered[Phase.INIT.value] = self.clock.now()
        self._show()

    def advance(self, phase: Phase) -> None:
        if ORDER.index(phase) <= ORDER.index(self.current):
            return
        self.current = phase
        self.entered[phase.value] = self.clock.now()
        self._show()

    def tool_called(self, name: str) -> None:
        self.tools.append(name)
        phase = TOOL_PHASES.get(name)
        if phase is not None:
            self.advance(phase)

    def risk_checked(self) -> None:
        """check_risk is DECIDE, then VALIDATE with its verdict."""
        self.advance(Phase.DECIDE)
        self.advance(Phase.VALIDATE)

    def advance_monitor(self) -> None:
        """A filled entry is handed to its monitor."""
        self.advance(Phase.MONITOR)

    def timings(self) -> dict[str, dict[str, str | float]]:
        """Each phase reached: when it started and how long it lasted (seconds)."""
        reached = [p for p in ORDER if p.value in self.entered]
        out: dict[str, dict[str, str | float]] = {}
        for i, phase in enumerate(reached):
            start = self.entered[phase.value]
            end = self.entered[reached[i + 1].value] if i + 1 < len(reached) else self.clock.now()
            out[phase.value] = {"started_at": start.isoformat(), "seconds": round((end - start).total_seconds(), 3)}
        return out

    def _show(self) -> None:
        if self.out is None:
            return
        marks = " ".join(
            f"[{p.value}]" if p is self.current else (p.value.lower() if ORDER.index(p) < ORDER.index(self.current) else "·")
            for p in ORDER
        )
        end = "\n" if self.current is Phase.COMPLETE else ""
        print(f"\rcycle: {marks}", end=end, file=self.out, flush=True)


def default_progress_stream() -> TextIO | None:
    return sys.stdout if sys.stdout.isatty() else None
