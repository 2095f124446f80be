"""Repositories for the trading tables. Every query is scoped to one agent id."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Iterable

import asyncpg

from brokers.base import Order, OrderRequest
from core.instruments import Market, PositionSide, Symbol, parse_symbol
from store.db import Database


class DuplicateOpenPosition(Exception):
    """A second open position for the same agent and symbol was refused by the database."""


@dataclass(frozen=True)
class PositionRecord:
    position_id: int
    agent_id: str
    market: Market
    symbol: Symbol
    side: PositionSide
    quantity: int
    entry_price: Decimal
    entry_time: datetime
    trading_day: date
    stop_price: Decimal | None
    target_price: Decimal | None
    tier: int | None
    entry_reason: str | None
    entry_volume_rate: float | None
    high_watermark: Decimal | None
    entry_fees: Decimal
    status: str
    exit_price: Decimal | None
    exit_time: datetime | None
    exit_reason: str | None
    exit_type: str | None
    exit_fees: Decimal
    realized_pnl: Decimal | None
    realized_pnl_pct: Decimal | None
    cycle_id: str | None
    entry_client_order_id: str | None
    backstop_status: str
    backstop_order_ids: tuple[str, ...]
    origin: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> "PositionRecord":
        values = dict(row)
        for drop in ("metadata", "created_at", "updated_at"):
            values.pop(drop, None)
        values["market"] = Market(values["market"])
        values["symbol"] = parse_symbol(values["symbol"])
        values["side"] = PositionSide(values["side"])
        values["backstop_order_ids"] = tuple(values["backstop_order_ids"] or ())
        for price in ("entry_price", "stop_price", "target_price", "high_watermark", "exit_price"):
            values[price] = _trimmed(values[price])
        return cls(**values)


def _trimmed(value: Decimal | None) -> Decimal | None:
    """33.150000 (the column's scale) as 33.15, for people reading messages; the value is unchanged."""
    if value is None:
        return None
    trimmed = value.normalize()
    return trimmed.quantize(Decimal(1)) if trimmed == trimmed.to_integral_value() else trimmed


def realized_pnl(side: PositionSide, quantity: int, entry: Decimal, exit_: Decimal, fees: Decimal) -> tuple[Decimal, Decimal]:
    """Net P&L and its percentage of the entry value, side-aware (the original booked shorts as longs)."""
    gross = (exit_ - entry) * quantity if side is PositionSide.LONG else (entry - exit_) * quantity
    net = (gross - fees).quantize(Decimal("0.0001"))
    pct = (net / (entry * quantity) * 100).quantize(Decimal("0.0001"))
    return net, pct


class TradingStore:
    def __init__(self, db: Database, agent_id: str, market: Market) -> None:
        self.db = db
        self.agent_id = agent_id
        self.market = market

    # --- cycles ---------------------------------------------------------------------------
    async def start_cycle(self, cycle_id: str, mode: str, brain: str, started_at: datetime) -> None:
        await self.db.execute(
            "INSERT INTO cycles (cycle_id, agent_id, market, mode, brain, started_at) VALUES ($1,$2,$3,$4,$5,$6)",
            cycle_id, self.agent_id, self.market.value, mode, brain, started_at,
        )

    async def finish_cycle(
        self,
        cycle_id: str,
        *,
        status: str,
        completed_at: datetime,
        phases: dict[str, Any],
        tools_called: list[str],
        iterations: int,
        tokens: dict[str, int],
        cost_usd: Decimal,
        trades_executed: int,
        decisions_made: int,
        summary: str | None,
        error: str | None = None,
    ) -> None:
        await self.db.execute(
            """UPDATE cycles SET status=$3, completed_at=$4, phases=$5::jsonb, tools_called=$6::jsonb, iterations=$7,
                   input_tokens=$8, output_tokens=$9, cache_write_tokens=$10, cache_read_tokens=$11, cost_usd=$12,
                   trades_executed=$13, decisions_made=$14, summary=$15, error=$16
               WHERE cycle_id=$1 AND agent_id=$2""",
            cycle_id, self.agent_id, status, completed_at, json.dumps(phases), json.dumps(tools_called), iterations,
            tokens.get("input", 0), tokens.get("output", 0), tokens.get("cache_write", 0), tokens.get("cache_read", 0),
            cost_usd, trades_executed, decisions_made, summary, error,
        )

    async def recent_cycles(self, limit: int = 5) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            """SELECT cycle_id, mode, brain, status, started_at, completed_at, iterations, trades_executed,
                      decisions_made, cost_usd, input_tokens, output_tokens, error
               FROM cycles WHERE agent_id=$1 ORDER BY started_at DESC LIMIT $2""",
            self.agent_id, limit,
        )
        return [dict(r) for r in rows]

    # --- decisions ------------------------------------------------------------------------
    async def log_decision(
        self,
        *,
        cycle_id: str | None,
        created_at: datetime,
        decision: str,
        reasoning: str,
        source: str,
        symbol: Symbol | None = None,
        tier: int | None = None,
        entry: Decimal | None = None,
        stop: Decimal | None = None,
        target: Decimal | None = None,
        data: dict[str, Any] | None = None,
    ) -> int:
        return await self.db.fetchval(
            """INSERT INTO decisions (agent_id, cycle_id, created_at, decision, symbol, tier, entry_price, stop_price,
                   target_price, reasoning, source, data)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12::jsonb) RETURNING decision_id""",
            self.agent_id, cycle_id, created_at, decision, str(symbol) if symbol else None, tier, entry, stop, target,
            reasoning, source, json.dumps(data or {}, default=str),
        )

    async def decisions(self, cycle_id: str) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT * FROM decisions WHERE agent_id=$1 AND cycle_id=$2 ORDER BY decision_id", self.agent_id, cycle_id
        )
        return [dict(r) for r in rows]

    # --- orders ---------------------------------------------------------------------------
    async def record_order(
        self, order: Order, *, trading_day: date, at: datetime, cycle_id: str | None, position_id: int | None
    ) -> None:
        """Insert or update the order by its client order id (one row per order, ever)."""
        await self.db.execute(
            """INSERT INTO orders (agent_id, cycle_id, position_id, client_order_id, broker_order_id, symbol, side,
                   order_type, purpose, quantity, limit_price, stop_price, status, filled_quantity, avg_fill_price,
                   fees, reject_reason, trading_day, submitted_at, updated_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$19)
               ON CONFLICT (agent_id, client_order_id) DO UPDATE SET
                   broker_order_id=COALESCE(EXCLUDED.broker_order_id, orders.broker_order_id),
                   position_id=COALESCE(EXCLUDED.position_id, orders.position_id),
                   status=EXCLUDED.status, filled_quantity=EXCLUDED.filled_quantity,
                   avg_fill_price=EXCLUDED.avg_fill_price, fees=EXCLUDED.fees,
                   reject_reason=EXCLUDED.reject_reason, updated_at=EXCLUDED.updated_at""",
            self.agent_id, cycle_id, position_id, order.client_order_id, order.broker_order_id or None,
            str(order.symbol), order.side.value, order.order_type.value, order.purpose.value, order.quantity,
            order.limit_price, order.stop_price, order.status.value, order.filled_quantity, order.avg_fill_price,
            order.fees, order.reject_reason, trading_day, at,
        )

    async def record_intent(
        self, request: OrderRequest, *, trading_day: date, at: datetime, cycle_id: str | None
    ) -> None:
        """Write the order down before it is sent, so a crash after sending can be reconciled."""
        await self.db.execute(
            """INSERT INTO orders (agent_id, cycle_id, client_order_id, symbol, side, order_type, purpose, quantity,
                   limit_price, stop_price, status, trading_day, submitted_at, updated_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,'pending_submit',$11,$12,$12)
               ON CONFLICT (agent_id, client_order_id) DO NOTHING""",
            self.agent_id, cycle_id, request.client_order_id, str(request.symbol), request.side.value,
            request.order_type.value, request.purpose.value, request.quantity, request.limit_price,
            request.stop_price, trading_day, at,
        )

    async def mark_rejected(self, client_order_id: str, reason: str, at: datetime) -> None:
        await self.db.execute(
            """UPDATE orders SET status='rejected', reject_reason=$3, updated_at=$4
               WHERE agent_id=$1 AND client_order_id=$2 AND status='pending_submit'""",
            self.agent_id, client_order_id, reason[:1000], at,
        )

    async def pending_intents(self, entries_since: datetime) -> list[dict[str, Any]]:
        """Orders whose outcome the database does not know: written down before sending and never
        confirmed; and entries since ``entries_since`` that reached the broker but have no position (a
        run killed while it awaited or recorded the fill leaves one ``submitted`` or ``filled``)."""
        rows = await self.db.fetch(
            """SELECT * FROM orders WHERE agent_id=$1 AND (status='pending_submit'
                   OR (purpose='entry' AND position_id IS NULL AND submitted_at >= $2
                       AND status IN ('submitted', 'partially_filled', 'filled')))
               ORDER BY order_id""", self.agent_id, entries_since
        )
        return [dict(r) for r in rows]

    async def link_order(self, client_order_id: str, position_id: int) -> None:
        await self.db.execute(
            "UPDATE orders SET position_id=$3 WHERE agent_id=$1 AND client_order_id=$2",
            self.agent_id, client_order_id, position_id,
        )

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchrow(
            "SELECT * FROM orders WHERE agent_id=$1 AND client_order_id=$2", self.agent_id, client_order_id
        )
        return dict(row) if row else None

    async def orders(self, trading_day: date | None = None) -> list[dict[str, Any]]:
        if trading_day is None:
            rows = await self.db.fetch("SELECT * FROM orders WHERE agent_id=$1 ORDER BY order_id", self.agent_id)
        else:
            rows = await self.db.fetch(
                "SELECT * FROM orders WHERE agent_id=$1 AND trading_day=$2 ORDER BY order_id", self.agent_id, trading_day
            )
        return [dict(r) for r in rows]

    async def count_orders_with_prefix(self, prefix: str) -> int:
        return await self.db.fetchval(
            "SELECT count(*) FROM orders WHERE agent_id=$1 AND client_order_id LIKE $2", self.agent_id, prefix + "%"
        )

    # --- positions ------------------------------------------------------------------------
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
    ) -> PositionRecord:
        try:
            row = await self.db.fetchrow(
                """INSERT INTO positions (agent_id, market, symbol, side, quantity, entry_price, entry_time, trading_day,
                       stop_price, target_price, tier, entry_reason, entry_volume_rate, high_watermark, entry_fees,
                       cycle_id, entry_client_order_id, origin)
                   VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$6,$14,$15,$16,$17) RETURNING *""",
                self.agent_id, self.market.value, str(symbol), side.value, quantity, entry_price, entry_time, trading_day,
                stop_price, target_price, tier, entry_reason, entry_volume_rate, entry_fees, cycle_id,
                entry_client_order_id, origin,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateOpenPosition(f"{self.agent_id} already has an open position in {symbol}") from None
        return PositionRecord.from_row(row)

    async def position(self, position_id: int) -> PositionRecord | None:
        row = await self.db.fetchrow("SELECT * FROM positions WHERE agent_id=$1 AND position_id=$2", self.agent_id, position_id)
        return PositionRecord.from_row(row) if row else None

    async def open_positions(self) -> list[PositionRecord]:
        rows = await self.db.fetch(
            "SELECT * FROM positions WHERE agent_id=$1 AND status='open' ORDER BY position_id", self.agent_id
        )
        return [PositionRecord.from_row(r) for r in rows]

    async def open_position_for(self, symbol: Symbol) -> PositionRecord | None:
        row = await self.db.fetchrow(
            "SELECT * FROM positions WHERE agent_id=$1 AND symbol=$2 AND status='open'", self.agent_id, str(symbol)
        )
        return PositionRecord.from_row(row) if row else None

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
    ) -> PositionRecord:
        """Book the exit with the real fill; refuses a non-positive price (never book at 0). ``quantity``:
        what the agent sold when it is less than the position (the rest left to orders placed by hand)."""
        if exit_price <= 0:
            raise ValueError(f"refusing to book position {position_id} at exit price {exit_price}")
        async with self.db.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM positions WHERE agent_id=$1 AND position_id=$2 FOR UPDATE", self.agent_id, position_id
            )
            if row is None:
                raise KeyError(f"no position {position_id} for {self.agent_id}")
            pos = PositionRecord.from_row(row)
            if pos.status != "open":
                return pos
            sold = quantity or pos.quantity
            net, pct = realized_pnl(pos.side, sold, pos.entry_price, exit_price, pos.entry_fees + exit_fees)
            row = await conn.fetchrow(
                """UPDATE positions SET status='closed', exit_price=$3, exit_time=$4, exit_reason=$5, exit_type=$6,
                       exit_fees=$7, realized_pnl=$8, realized_pnl_pct=$9, quantity=$10, updated_at=$4
                   WHERE agent_id=$1 AND position_id=$2 RETURNING *""",
                self.agent_id, position_id, exit_price, exit_time, exit_reason, exit_type, exit_fees, net, pct, sold,
            )
        return PositionRecord.from_row(row)

    async def set_aside_day(self, trading_day: date, day_start: datetime, day_end: datetime,
                            to_agent_id: str, keep_halts_starting: str | None = None) -> tuple[int, int]:
        """Move this agent's records of one trading day (positions and their monitors, orders, cycles
        and their decisions, LLM usage, the risk day) to ``to_agent_id``; nothing is deleted.
        A halt whose reason starts with ``keep_halts_starting`` (a halt from Big Bro) stays with this
        agent: it lasts the trading day, whatever is set aside. Returns the numbers of positions and
        cycles moved."""
        async with self.db.transaction() as conn:
            moved = await conn.fetch(
                "UPDATE positions SET agent_id=$2 WHERE agent_id=$1 AND trading_day=$3 RETURNING position_id",
                self.agent_id, to_agent_id, trading_day)
            ids = [r["position_id"] for r in moved]
            await conn.execute("UPDATE monitor_status SET agent_id=$2 WHERE agent_id=$1 AND position_id = ANY($3::bigint[])",
                               self.agent_id, to_agent_id, ids)
            await conn.execute("UPDATE orders SET agent_id=$2 WHERE agent_id=$1 AND trading_day=$3",
                               self.agent_id, to_agent_id, trading_day)
            cycles = await conn.fetch(
                "UPDATE cycles SET agent_id=$2 WHERE agent_id=$1 AND started_at >= $3 AND started_at < $4 RETURNING cycle_id",
                self.agent_id, to_agent_id, day_start, day_end)
            await conn.execute("UPDATE decisions SET agent_id=$2 WHERE agent_id=$1 AND cycle_id = ANY($3::text[])",
                               self.agent_id, to_agent_id, [r["cycle_id"] for r in cycles])
            await conn.execute("UPDATE api_usage SET agent_id=$2 WHERE agent_id=$1 AND trading_day=$3",
                               self.agent_id, to_agent_id, trading_day)
            day = await conn.fetchrow("UPDATE risk_day SET agent_id=$2 WHERE agent_id=$1 AND trading_day=$3 RETURNING *",
                                      self.agent_id, to_agent_id, trading_day)
            if (day is not None and keep_halts_starting is not None and day["halted"]
                    and (day["halt_reason"] or "").startswith(keep_halts_starting)):
                await conn.execute(
                    """INSERT INTO risk_day (agent_id, trading_day, start_equity, halted, halt_reason, halted_at)
                       VALUES ($1, $2, $3, true, $4, $5)""",
                    self.agent_id, trading_day, day["start_equity"], day["halt_reason"], day["halted_at"])
        return len(ids), len(cycles)

    async def repair_after_stopped_runs(self, now: datetime) -> tuple[list[str], list[int]]:
        """What a killed run of this agent left behind, put right by the next run (which holds the
        agent lock, so no other run of the agent is alive): its cycles still 'running' are closed as
        'interrupted', its monitors whose lease lapsed are marked 'dead' (the run adopts their
        positions). Returns the cycle ids and the position ids concerned."""
        async with self.db.transaction() as conn:
            cycles = await conn.fetch(
                """UPDATE cycles SET status='interrupted', completed_at=$2,
                       error=COALESCE(error, 'the run stopped before the cycle ended; closed by the next run')
                   WHERE agent_id=$1 AND status='running' RETURNING cycle_id""",
                self.agent_id, now)
            monitors = await conn.fetch(
                """UPDATE monitor_status SET status='dead', updated_at=$2
                   WHERE agent_id=$1 AND status='running' AND (lease_expires_at IS NULL OR lease_expires_at < $2)
                   RETURNING position_id""",
                self.agent_id, now)
        return [r["cycle_id"] for r in cycles], [r["position_id"] for r in monitors]

    async def mark_reconciled_missing(self, position_id: int, at: datetime, note: str) -> None:
        await self.db.execute(
            """UPDATE positions SET status='reconciled_missing', exit_time=$3, exit_reason='reconciled_missing',
                   exit_type='reconcile', metadata = metadata || jsonb_build_object('reconcile_note', $4::text), updated_at=$3
               WHERE agent_id=$1 AND position_id=$2 AND status='open'""",
            self.agent_id, position_id, at, note,
        )

    async def correct_quantity(self, position_id: int, quantity: int, at: datetime) -> None:
        await self.db.execute(
            "UPDATE positions SET quantity=$3, updated_at=$4 WHERE agent_id=$1 AND position_id=$2",
            self.agent_id, position_id, quantity, at,
        )

    async def set_backstop(self, position_id: int, status: str, order_ids: Iterable[str], at: datetime) -> None:
        await self.db.execute(
            "UPDATE positions SET backstop_status=$3, backstop_order_ids=$4, updated_at=$5 WHERE agent_id=$1 AND position_id=$2",
            self.agent_id, position_id, status, list(order_ids), at,
        )

    async def update_high_watermark(self, position_id: int, price: Decimal) -> None:
        await self.db.execute(
            """UPDATE positions SET high_watermark=GREATEST(COALESCE(high_watermark, $3), $3)
               WHERE agent_id=$1 AND position_id=$2""",
            self.agent_id, position_id, price,
        )

    # --- today's state (survives restarts: counted here, never in memory) --------------------
    async def entries_on(self, trading_day: date) -> int:
        return await self.db.fetchval(
            "SELECT count(*) FROM positions WHERE agent_id=$1 AND trading_day=$2 AND origin='agent'",
            self.agent_id, trading_day,
        )

    async def realized_pnl_on(self, trading_day: date, day_start: datetime) -> Decimal:
        value = await self.db.fetchval(
            """SELECT COALESCE(sum(realized_pnl), 0) FROM positions
               WHERE agent_id=$1 AND status='closed' AND exit_time >= $2 AND exit_time < $2 + interval '1 day'""",
            self.agent_id, day_start,
        )
        return Decimal(value)

    async def closed_between(self, start: datetime, end: datetime) -> list[PositionRecord]:
        rows = await self.db.fetch(
            """SELECT * FROM positions WHERE agent_id=$1 AND status IN ('closed','reconciled_missing')
               AND exit_time >= $2 AND exit_time < $3 ORDER BY exit_time""",
            self.agent_id, start, end,
        )
        return [PositionRecord.from_row(r) for r in rows]

    # --- monitor status and leases ----------------------------------------------------------
    async def claim_monitor(self, position_id: int, symbol: Symbol, owner: str, now: datetime, lease_seconds: float) -> bool:
        """Take the monitor lease when free, expired or already ours; False when another live owner holds it."""
        expires = now + timedelta(seconds=lease_seconds)
        row = await self.db.fetchrow(
            """INSERT INTO monitor_status (position_id, agent_id, symbol, status, owner, lease_expires_at, started_at, updated_at)
               VALUES ($1,$2,$3,'running',$4,$5,$6,$6)
               ON CONFLICT (position_id) DO UPDATE SET owner=$4, lease_expires_at=$5, status='running', updated_at=$6
                   WHERE monitor_status.owner=$4 OR monitor_status.lease_expires_at IS NULL
                      OR monitor_status.lease_expires_at < $6 OR monitor_status.status <> 'running'
               RETURNING owner""",
            position_id, self.agent_id, str(symbol), owner, expires, now,
        )
        return row is not None

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
    ) -> None:
        await self.db.execute(
            """UPDATE monitor_status SET last_check_at=$3, lease_expires_at=$4, last_price=$5, pnl_pct=$6,
                   high_watermark=$7, signals=$8::jsonb, decision=$9, haiku_calls=$10, haiku_cost_usd=$11,
                   checks_completed = checks_completed + (CASE WHEN $13 THEN 1 ELSE 0 END),
                   error_count = error_count + (CASE WHEN $12::text IS NULL THEN 0 ELSE 1 END),
                   last_error = COALESCE($12, last_error), updated_at=$3
               WHERE position_id=$1 AND owner=$2""",
            position_id, owner, now, now + timedelta(seconds=lease_seconds), last_price, pnl_pct, high_watermark,
            json.dumps(signals, default=str), decision, haiku_calls, haiku_cost_usd, error, full_check,
        )

    async def release_monitor(self, position_id: int, owner: str, now: datetime, status: str = "stopped") -> None:
        await self.db.execute(
            """UPDATE monitor_status SET status=$3, lease_expires_at=NULL, updated_at=$4
               WHERE position_id=$1 AND owner=$2""",
            position_id, owner, status, now,
        )

    async def monitor_rows(self) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT * FROM monitor_status WHERE agent_id=$1 ORDER BY position_id", self.agent_id
        )
        return [dict(r) for r in rows]

    async def unwatched_open_positions(self, now: datetime) -> list[PositionRecord]:
        """Open positions whose monitor lease is missing or expired."""
        rows = await self.db.fetch(
            """SELECT p.* FROM positions p LEFT JOIN monitor_status m ON m.position_id = p.position_id
               WHERE p.agent_id=$1 AND p.status='open'
                 AND (m.position_id IS NULL OR m.status <> 'running' OR m.lease_expires_at IS NULL OR m.lease_expires_at < $2)
               ORDER BY p.position_id""",
            self.agent_id, now,
        )
        return [PositionRecord.from_row(r) for r in rows]

    # --- LLM usage and spend ----------------------------------------------------------------
    async def record_usage(
        self,
        *,
        trading_day: date,
        at: datetime,
        purpose: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cache_write_tokens: int,
        cache_read_tokens: int,
        cost_usd: Decimal,
        cycle_id: str | None = None,
        position_id: int | None = None,
    ) -> None:
        await self.db.execute(
            """INSERT INTO api_usage (agent_id, trading_day, cycle_id, position_id, purpose, model, input_tokens,
                   output_tokens, cache_write_tokens, cache_read_tokens, cost_usd, created_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)""",
            self.agent_id, trading_day, cycle_id, position_id, purpose, model, input_tokens, output_tokens,
            cache_write_tokens, cache_read_tokens, cost_usd, at,
        )

    async def spend_on(self, trading_day: date) -> Decimal:
        value = await self.db.fetchval(
            "SELECT COALESCE(sum(cost_usd), 0) FROM api_usage WHERE agent_id=$1 AND trading_day=$2",
            self.agent_id, trading_day,
        )
        return Decimal(value)

    async def risk_day(self, trading_day: date) -> dict[str, Any] | None:
        row = await self.db.fetchrow(
            "SELECT * FROM risk_day WHERE agent_id=$1 AND trading_day=$2", self.agent_id, trading_day
        )
        return dict(row) if row else None

    async def ensure_risk_day(self, trading_day: date, start_equity: Decimal) -> dict[str, Any]:
        """The day's row; the first run of the day fixes the start-of-day equity."""
        await self.db.execute(
            """INSERT INTO risk_day (agent_id, trading_day, start_equity) VALUES ($1,$2,$3)
               ON CONFLICT (agent_id, trading_day) DO NOTHING""",
            self.agent_id, trading_day, start_equity,
        )
        return await self.risk_day(trading_day)  # type: ignore[return-value]

    async def set_halt(self, trading_day: date, halted: bool, reason: str | None, at: datetime) -> None:
        await self.db.execute(
            "UPDATE risk_day SET halted=$3, halt_reason=$4, halted_at=$5 WHERE agent_id=$1 AND trading_day=$2",
            self.agent_id, trading_day, halted, reason, at,
        )

    async def set_warned(self, trading_day: date) -> None:
        await self.db.execute(
            "UPDATE risk_day SET warned=true WHERE agent_id=$1 AND trading_day=$2", self.agent_id, trading_day
        )
