"""The truth with the broker, at every run start and before ``close``.

Named steps, each change recorded and sent to Big Bro (RECONCILE):
1. Orders written down but never confirmed (a crash between submit and record) are looked up at
   the broker by their client order id and recorded as they really are.
2. Phantoms (open in the database, not held at the broker) are closed with the broker's own exit
   fills where they can be found, otherwise marked ``reconciled_missing``; never booked at 0.
3. Strays (held at the broker, not in the database) are adopted with their real average cost, and
   protected at the broker: the symbol's working orders (a crashed run's bracket legs) become the
   backstop, and a stop is placed for what they leave uncovered (else Big Bro hears NO_BACKSTOP).
4. Quantity differences are corrected in place (no close-and-reopen cascades).
Symbols are compared in canonical form.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from brokers.base import Broker, BrokerPosition, OrderPurpose
from core.clock import Clock
from config.settings import Profile
from consciousness_notify import Event, EventType, Notifier, Priority
from data.calendar import MarketCalendar
from core.instruments import PositionSide, Symbol
from engine.backstop import backstop_levels, protect_adopted
from signals import ExitReason
from store.trading import PositionRecord, TradingStore

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    orders_confirmed: list[str] = field(default_factory=list)
    phantoms_closed: list[str] = field(default_factory=list)
    phantoms_missing: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    quantity_fixed: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(len(v) for v in (self.orders_confirmed, self.phantoms_closed, self.phantoms_missing,
                                    self.adopted, self.quantity_fixed))

    def summary(self) -> str:
        parts = [f"{name.replace('_', ' ')}: {', '.join(items)}" for name, items in vars(self).items() if items]
        return "; ".join(parts) or "database and broker agree"


class Reconciler:
    def __init__(self, broker: Broker, store: TradingStore, notifier: Notifier, clock: Clock,
                 calendar: MarketCalendar, profile: Profile) -> None:
        self.broker = broker
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self.calendar = calendar
        self.profile = profile

    def trading_day(self):
        return self.calendar.trading_day(self.clock.now())

    async def run(self) -> ReconcileReport:
        report = ReconcileReport()
        entries = await self._confirm_orders(report)
        held = {p.symbol: p for p in await self.broker.positions()}
        recorded = {p.symbol: p for p in await self.store.open_positions()}
        for symbol, position in recorded.items():
            broker_position = held.get(symbol)
            if broker_position is None:
                await self._phantom(position, report)
            elif broker_position.quantity != position.quantity:
                await self._fix_quantity(position, broker_position, report)
        for symbol, broker_position in held.items():
            if symbol not in recorded:
                await self._adopt(broker_position, report, entries.get(symbol))
        if report.changes:
            log.info("reconcile: %s", report.summary())
        return report

    async def _confirm_orders(self, report: ReconcileReport) -> dict[Symbol, dict]:
        """Record unconfirmed orders as the broker has them; return the filled entries by symbol."""
        entries: dict[Symbol, dict] = {}
        for row in await self.store.pending_intents(entries_since=self.clock.now() - timedelta(days=3)):
            order = await self.broker.find_order(row["client_order_id"])
            now = self.clock.now()
            if order is None:
                if now - row["submitted_at"] > timedelta(minutes=5):
                    await self.store.mark_rejected(row["client_order_id"],
                                                   "never reached the broker (not found by client order id)", now)
                continue
            await self.store.record_order(order, trading_day=row["trading_day"], at=now, cycle_id=row["cycle_id"],
                                          position_id=row["position_id"])
            if (row["status"], row["filled_quantity"]) != (order.status.value, order.filled_quantity):
                report.orders_confirmed.append(f"{row['client_order_id']} {order.status.value} {order.filled_quantity}")
            if order.purpose is OrderPurpose.ENTRY and order.filled_quantity > 0 and row["purpose"] == "entry":
                entries[order.symbol] = row
        return entries

    async def _phantom(self, position: PositionRecord, report: ReconcileReport) -> None:
        fills = [f for f in await self.broker.fills(position.entry_time, position.symbol) if f.side is position.side.exit_side]
        now = self.clock.now()
        if fills:
            qty = sum(f.quantity for f in fills)
            price = sum(f.price * f.quantity for f in fills) / qty
            # "backstop" only when the position's own protective order sold it; otherwise it was sold
            # outside the agent (by hand, say), which is what a trader reading the row must see.
            fired = any(f.broker_order_id in position.backstop_order_ids for f in fills)
            reason = ExitReason.BACKSTOP if fired else ExitReason.CLOSED_AT_BROKER
            closed = await self.store.close_position(
                position.position_id, exit_price=price, exit_time=max(f.time for f in fills), exit_reason=reason.value,
                exit_type="broker", exit_fees=sum((f.fees for f in fills), Decimal(0)),
            )
            report.phantoms_closed.append(str(position.symbol))
            await self._tell(f"{position.symbol.short} closed at the broker: booked at {price:.4f}",
                             f"{position.symbol} was no longer held at the broker; booked with the broker's fills at "
                             f"{price:.4f} ({qty} shares), P&L {closed.realized_pnl:+,.2f}.",
                             {"action": "closed_from_broker_fills", "symbol": position.symbol, "exit_price": price,
                              "realized_pnl": closed.realized_pnl, "position_id": position.position_id})
            return
        await self.store.mark_reconciled_missing(position.position_id, now, "not held at the broker; no exit fill found")
        report.phantoms_missing.append(str(position.symbol))
        await self._tell(f"{position.symbol.short} missing at the broker",
                         f"{position.symbol} ({position.quantity}) is open in the database but not held at the broker, "
                         "and no exit fill was found: marked reconciled_missing, not booked at any price.",
                         {"action": "reconciled_missing", "symbol": position.symbol, "position_id": position.position_id})

    async def _fix_quantity(self, position: PositionRecord, held: BrokerPosition, report: ReconcileReport) -> None:
        await self.store.correct_quantity(position.position_id, held.quantity, self.clock.now())
        report.quantity_fixed.append(f"{position.symbol} {position.quantity}->{held.quantity}")
        await self._tell(f"{position.symbol.short} quantity corrected to {held.quantity}",
                         f"{position.symbol}: database {position.quantity}, broker {held.quantity}; corrected in place.",
                         {"action": "quantity_corrected", "symbol": position.symbol, "from": position.quantity,
                          "to": held.quantity, "position_id": position.position_id})

    async def _adopt(self, held: BrokerPosition, report: ReconcileReport, entry: dict | None = None) -> None:
        """Adopt at the real average cost and protect it at the broker; a crashed run's own entry keeps
        its order, cycle and client order id (so its bracket legs are known as its own)."""
        now = self.clock.now()
        stop, target = backstop_levels(self, held.symbol, held.avg_cost, held.side)
        position = await self.store.open_position(
            symbol=held.symbol, side=held.side, quantity=held.quantity, entry_price=held.avg_cost, entry_time=now,
            trading_day=entry["trading_day"] if entry else self.trading_day(), stop_price=stop, target_price=target,
            entry_reason="recovered from the broker after an interrupted run" if entry else "adopted from the broker",
            origin="agent" if entry else "adopted", cycle_id=entry["cycle_id"] if entry else None,
            entry_client_order_id=entry["client_order_id"] if entry else None,
        )
        if entry:
            await self.store.link_order(entry["client_order_id"], position.position_id)
        backstop = await protect_adopted(self, position)
        report.adopted.append(f"{held.symbol} {held.quantity}@{held.avg_cost}")
        short = held.side is PositionSide.SHORT
        await self.notifier.send(Event(
            EventType.RECONCILE, f"Adopted {held.symbol.short} {'SHORT ' if short else ''}{held.quantity} @ {held.avg_cost}",
            f"{held.symbol} is held at the broker ({held.side.value} {held.quantity}) but was not in the database; "
            f"adopted at its real average cost {held.avg_cost} with stop {stop} and target {target}; backstop "
            f"{backstop}." + (" The agent never sells short: this short was opened outside its plan; look at the "
                              "account now." if short else ""),
            {"action": "adopted", "symbol": held.symbol, "side": held.side.value, "quantity": held.quantity,
             "avg_cost": held.avg_cost, "position_id": position.position_id, "backstop": backstop},
            Priority.URGENT if short else None))

    async def _tell(self, subject: str, body: str, data: dict) -> None:
        await self.notifier.send(Event(EventType.RECONCILE, subject, body, data))
