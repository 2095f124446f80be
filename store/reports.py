"""Read-only figures of one agent's records, for the replay's report and the daily report: every query
the reports make is here, none in the runner."""
from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Sequence

from store.db import Database
from store.trading import PositionRecord


class RunFigures:
    def __init__(self, db: Database, agent_id: str) -> None:
        self.db = db
        self.agent_id = agent_id

    async def positions(self) -> list[PositionRecord]:
        rows = await self.db.fetch(
            "SELECT * FROM positions WHERE agent_id=$1 ORDER BY entry_time, position_id", self.agent_id)
        return [PositionRecord.from_row(r) for r in rows]

    async def positions_with_monitors(self, days: Sequence[date]) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            """SELECT p.*, m.haiku_calls, m.error_count FROM positions p
               LEFT JOIN monitor_status m ON m.position_id = p.position_id
               WHERE p.agent_id=$1 AND p.trading_day = ANY($2::date[]) ORDER BY p.entry_time, p.position_id""",
            self.agent_id, list(days))
        return [dict(r) for r in rows]

    async def usage_by_purpose(self) -> dict[str, dict[str, Any]]:
        rows = await self.db.fetch(
            """SELECT purpose, count(*) AS calls, COALESCE(sum(cost_usd), 0) AS cost_usd
               FROM api_usage WHERE agent_id=$1 GROUP BY purpose""", self.agent_id)
        return {r["purpose"]: {"calls": int(r["calls"]), "cost_usd": Decimal(r["cost_usd"])} for r in rows}

    async def usage_by_day_and_purpose(self, days: Sequence[date]) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            """SELECT trading_day, purpose, count(*) AS calls, COALESCE(sum(cost_usd), 0) AS cost_usd FROM api_usage
               WHERE agent_id=$1 AND trading_day = ANY($2::date[]) GROUP BY 1, 2""", self.agent_id, list(days))
        return [dict(r) for r in rows]

    async def pass_reasons(self, start: datetime | None = None, end: datetime | None = None) -> dict[str, int]:
        """How often candidates were turned down, per reason (``PassReason``; 'unspecified' when not given),
        most frequent first; within [start, end) when given."""
        rows = await self.db.fetch(
            """SELECT COALESCE(data->>'pass_reason', 'unspecified') AS reason, count(*) AS n FROM decisions
               WHERE agent_id=$1 AND decision='skip'
                 AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)
               GROUP BY 1 ORDER BY 2 DESC, 1""", self.agent_id, start, end)
        return {r["reason"]: int(r["n"]) for r in rows}

    async def cycle_counts(self, start: datetime | None = None, end: datetime | None = None) -> dict[str, int]:
        rows = await self.db.fetch(
            """SELECT status, count(*) AS n FROM cycles WHERE agent_id=$1
                 AND ($2::timestamptz IS NULL OR started_at >= $2) AND ($3::timestamptz IS NULL OR started_at < $3)
               GROUP BY 1 ORDER BY 1""", self.agent_id, start, end)
        return {r["status"]: int(r["n"]) for r in rows}

    async def entries_by_cycle_start(self) -> list[tuple[datetime, int]]:
        rows = await self.db.fetch(
            """SELECT c.started_at, count(*) AS n FROM positions p JOIN cycles c ON c.cycle_id = p.cycle_id
               WHERE p.agent_id=$1 GROUP BY c.started_at""", self.agent_id)
        return [(r["started_at"], int(r["n"])) for r in rows]

    async def risk_day(self, day: date) -> dict[str, Any] | None:
        row = await self.db.fetchrow("SELECT * FROM risk_day WHERE agent_id=$1 AND trading_day=$2", self.agent_id, day)
        return dict(row) if row else None

    async def first_risk_day(self, days: Sequence[date]) -> dict[str, Any] | None:
        row = await self.db.fetchrow(
            "SELECT * FROM risk_day WHERE agent_id=$1 AND trading_day = ANY($2::date[]) ORDER BY trading_day LIMIT 1",
            self.agent_id, list(days))
        return dict(row) if row else None

    async def latest_trading_day(self) -> date | None:
        return await self.db.fetchval("SELECT max(trading_day) FROM positions WHERE agent_id=$1", self.agent_id)
