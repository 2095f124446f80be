"""The store as the engine sees it: the repository protocols a position's life works against.
``store.trading.TradingStore`` (PostgreSQL) is the implementation; tests check that it keeps to them."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Protocol

from brokers.base import Order, OrderRequest
from core.instruments import PositionSide, Symbol
from store.trading import PositionRecord


class PositionRepository(Protocol):
    """Orders, positions, the monitor lease and checks, and the day's risk record of one agent."""

    async def record_order(
        self, order: Order, *, trading_day: date, at: datetime, cycle_id: str | None, position_id: int | None
    ) -> None: ...

    async def record_intent(
        self, request: OrderRequest, *, trading_day: date, at: datetime, cycle_id: str | None
    ) -> None: ...

    async def mark_rejected(self, client_order_id: str, reason: str, at: datetime) -> None: ...

    async def link_order(self, client_order_id: str, position_id: int) -> None: ...

    async def orders(self, trading_day: date | None = None) -> list[dict[str, Any]]: ...

    async def count_orders_with_prefix(self, prefix: str) -> int: ...

    async def open_position(
        self,
        *,
        symbol: Symbol,
        side: PositionSide,
        quantity: int,
        entry_price: Decimal,
        entry_time: datetime,
        trading_day: date,
        stop_price: Decimal | None,
        target_price: Decimal | None,
        tier: int | None = None,
        entry_reason: str | None = None,
        entry_volume_rate: float | None = None,
        entry_fees: Decimal = Decimal(0),
        cycle_id: str | None = None,
        entry_client_order_id: str | None = None,
        origin: str = "agent",
    ) -> PositionRecord: ...

    async def position(self, position_id: int) -> PositionRecord | None: ...

    async def open_positions(self) -> list[PositionRecord]: ...

    async def close_position(
        self,
        position_id: int,
        *,
        exit_price: Decimal,
        exit_time: datetime,
        exit_reason: str,
        exit_type: str,
        exit_fees: Decimal,
        quantity: int | None = None,
    ) -> PositionRecord: ...

    async def mark_reconciled_missing(self, position_id: int, at: datetime, note: str) -> None: ...

    async def set_backstop(self, position_id: int, status: str, order_ids: Iterable[str], at: datetime) -> None: ...

    async def update_high_watermark(self, position_id: int, price: Decimal) -> None: ...

    async def entries_on(self, trading_day: date) -> int: ...

    async def realized_pnl_on(self, trading_day: date, day_start: datetime) -> Decimal: ...

    async def claim_monitor(self, position_id: int, symbol: Symbol, owner: str, now: datetime, lease_seconds: float) -> bool: ...

    async def record_check(
        self,
        position_id: int,
        *,
        owner: str,
        now: datetime,
        lease_seconds: float,
        last_price: Decimal | None,
        pnl_pct: Decimal | None,
        high_watermark: Decimal | None,
        signals: list[dict[str, Any]],
        decision: str | None,
        haiku_calls: int,
        haiku_cost_usd: Decimal,
        error: str | None = None,
        full_check: bool = True,
    ) -> None: ...

    async def release_monitor(self, position_id: int, owner: str, now: datetime, status: str = "stopped") -> None: ...

    async def risk_day(self, trading_day: date) -> dict[str, Any] | None: ...

    async def ensure_risk_day(self, trading_day: date, start_equity: Decimal) -> dict[str, Any]: ...

    async def set_halt(self, trading_day: date, halted: bool, reason: str | None, at: datetime) -> None: ...

    async def set_warned(self, trading_day: date) -> None: ...
