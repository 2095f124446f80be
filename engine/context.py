"""What every part of a position's life works with: the broker, the store, Big Bro, the clock."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from brokers.base import Broker
from brokers.orders import OrderWaiter
from config.settings import Profile
from consciousness_notify import Event, EventType, Notifier, Priority
from core.clock import Clock
from data.calendar import MarketCalendar
from engine.exit_advisor import ExitAdvisor
from engine.run_lock import RunLock
from engine.spend import SpendLedger
from signals import ExitTechnicals
from store.journal import ExitJournal
from store.protocols import PositionRepository
from store.trading import PositionRecord


class TechnicalsSource(Protocol):
    async def exit_technicals(self, position: PositionRecord) -> ExitTechnicals | None: ...


@dataclass
class MonitorContext:
    broker: Broker
    technicals: TechnicalsSource
    store: PositionRepository
    notifier: Notifier
    clock: Clock
    calendar: MarketCalendar
    profile: Profile
    owner: str
    advisor: ExitAdvisor | None = None
    spend: SpendLedger | None = None
    live: bool = False
    orders: OrderWaiter = field(default=None)  # type: ignore[assignment]  # built from the broker when not given
    journal: ExitJournal = field(default=None)  # type: ignore[assignment]  # in memory when not given
    run_lock: RunLock | None = None  # the run's agent lock, proven before every entry and exit (None: no run)

    def __post_init__(self) -> None:
        if self.orders is None:
            self.orders = OrderWaiter(self.broker, self.clock, self.profile.monitor.fill_poll_seconds)
        if self.journal is None:
            self.journal = ExitJournal(None, self.profile.agent_id, self.clock)

    @property
    def fill_timeout(self) -> float:
        m = self.profile.monitor
        return m.fill_timeout_live_seconds if self.live else m.fill_timeout_paper_seconds

    def trading_day(self):
        return self.calendar.trading_day(self.clock.now())

    async def tell(self, position: PositionRecord, kind: EventType, subject: str, body: str, data: dict,
                   priority: Priority | None = None) -> None:
        """An event about one position for Big Bro (its symbol and id always in the data)."""
        await self.notifier.send(Event(kind, subject, body, {
            "symbol": str(position.symbol), "position_id": position.position_id, **data}, priority))
