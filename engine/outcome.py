"""What an executor says of the position it owns: where it is (``ExecutorStatus``) and what its
watch came to (``MonitorOutcome``, one per executor, for the run's summary and reports)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import Decimal


class ExecutorStatus(str, enum.Enum):
    PENDING_ENTRY = "pending_entry"  # the entry order is at the broker
    OPEN = "open"                    # filled, protected by its backstop, watched
    EXITING = "exiting"              # an exit is under way
    CLOSED = "closed"                # the exit is booked
    FAILED = "failed"                # the entry did not fill, or the position could not be opened


@dataclass
class MonitorOutcome:
    position_id: int
    symbol: str
    closed: bool
    exit_reason: str | None = None
    exit_price: Decimal | None = None
    realized_pnl: Decimal | None = None
    checks: int = 0
    haiku_calls: int = 0
    errors: int = 0
    stop_reaction_seconds: list[float] = field(default_factory=list)
    note: str = ""
