"""SQL for the consciousness MCP server: Big Bro's tables (read and write) and the trading tables
(read only). Rows come back as plain dicts; the tools shape them."""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any, Iterable

from store.db import Database

PRIORITY_RANK = "CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 WHEN 'low' THEN 3 ELSE 4 END"
# Where this server's writes come from, in the tables' source columns.
SOURCE = "consciousness_mcp"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class OversightStore:
    def __init__(self, trading: Database, research: Database) -> None:
        self.trading = trading
        self.research = research

    # --- agents --------------------------------------------------------------------------------
    async def agent_ids(self) -> set[str]:
        ids = {r["agent_id"] for r in await self.research.fetch("SELECT agent_id FROM claude_state")}
        ids |= {r["agent_id"] for r in await self.trading.fetch(
            "SELECT DISTINCT agent_id FROM cycles UNION SELECT DISTINCT agent_id FROM positions")}
        return ids

    async def states(self, agent_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        rows = await self.research.fetch(
            """SELECT agent_id, current_mode, last_wake_at, last_action_at, api_spend_today, api_spend_month, daily_budget,
                      spend_day, status_message, error_count_today, last_error, last_error_at
               FROM claude_state WHERE agent_id = ANY($1::text[])""", list(agent_ids))
        return {r["agent_id"]: dict(r) for r in rows}

    async def pending_counts(self, agent_ids: Iterable[str]) -> dict[str, int]:
        rows = await self.research.fetch(
            "SELECT to_agent, count(*) AS n FROM claude_messages WHERE status='pending' AND to_agent = ANY($1::text[]) "
            "GROUP BY to_agent", list(agent_ids))
        return {r["to_agent"]: r["n"] for r in rows}

    # --- messages ------------------------------------------------------------------------------
    async def messages(self, *, agent: str | None, unread: bool, msg_type: str | None, limit: int,
                       since: datetime | None = None, until: datetime | None = None,
                       priorities: list[str] | None = None, to_agent: str | None = None) -> list[dict[str, Any]]:
        rows = await self.research.fetch(
            """SELECT id, created_at, from_agent, to_agent, msg_type, priority, status, subject, body, data, reply_to_id
               FROM claude_messages
               WHERE ($1::text IS NULL OR from_agent=$1 OR to_agent=$1)
                 AND (NOT $2 OR status='pending')
                 AND ($3::text IS NULL OR lower(msg_type)=lower($3) OR upper(data->>'event')=upper($3))
                 AND ($5::timestamptz IS NULL OR created_at >= $5)
                 AND ($6::timestamptz IS NULL OR created_at < $6)
                 AND ($7::text[] IS NULL OR priority = ANY($7::text[]))
                 AND ($8::text IS NULL OR to_agent=$8)
               ORDER BY id DESC LIMIT $4""",
            agent, unread, msg_type, limit, since, until, priorities, to_agent)
        out = []
        for r in rows:
            row = dict(r)
            row["data"] = _json(row["data"])
            out.append(row)
        return out

    async def message_counts(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        rows = await self.research.fetch(
            """SELECT from_agent, to_agent, msg_type, data->>'event' AS event, count(*) AS n FROM claude_messages
               WHERE created_at >= $1 AND created_at < $2 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4""", since, until)
        return [dict(r) for r in rows]

    async def insert_message(self, *, from_agent: str, to_agent: str, msg_type: str, priority: str, subject: str,
                             body: str, data: dict[str, Any], at: datetime, requires_response: bool) -> int:
        async with self.research.transaction() as conn:
            message_id = await conn.fetchval(
                """INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body, data, status,
                       created_at, requires_response)
                   VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,'pending',$8,$9) RETURNING id""",
                from_agent, to_agent, msg_type, priority, subject, body, json.dumps(data), at, requires_response)
            await conn.execute("SELECT pg_notify('claude_messages', $1)", str(message_id))
        return message_id

    async def mark_read(self, ids: list[int], to_agents: Iterable[str], at: datetime) -> int:
        result = await self.research.execute(
            "UPDATE claude_messages SET status='read', read_at=$2 WHERE id = ANY($1::int[]) AND status='pending' "
            "AND to_agent = ANY($3::text[])", ids, at, list(to_agents))
        return int(result.split()[-1])

    # --- observations, learnings, questions -----------------------------------------------------
    async def observations(self, *, agent: str | None, observation_type: str | None, market: str | None,
                           limit: int) -> list[dict[str, Any]]:
        rows = await self.research.fetch(
            """SELECT id, created_at, agent_id, observation_type, subject, content, confidence, horizon, market, tags,
                      source_db, acted_upon
               FROM claude_observations
               WHERE ($1::text IS NULL OR agent_id=$1) AND ($2::text IS NULL OR observation_type=$2)
                 AND ($3::text IS NULL OR market=$3)
               ORDER BY id DESC LIMIT $4""", agent, observation_type, market, limit)
        return [{**dict(r), "tags": _json(r["tags"])} for r in rows]

    async def insert_observation(self, *, agent_id: str, observation_type: str, subject: str, content: str,
                                 confidence: Decimal | None, horizon: str | None, market: str | None,
                                 tags: dict[str, Any], at: datetime) -> int:
        return await self.research.fetchval(
            """INSERT INTO claude_observations (agent_id, source_db, observation_type, subject, content, confidence,
                   horizon, market, tags, created_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9::jsonb,$10) RETURNING id""",
            agent_id, SOURCE, observation_type, subject, content, confidence, horizon, market, json.dumps(tags), at)

    async def learnings(self, *, agent: str | None, category: str | None, min_confidence: Decimal | None,
                        limit: int) -> list[dict[str, Any]]:
        rows = await self.research.fetch(
            """SELECT id, created_at, agent_id, category, learning, source, context, confidence, times_validated,
                      times_contradicted, applies_to_markets, source_db
               FROM claude_learnings
               WHERE ($1::text IS NULL OR agent_id=$1) AND ($2::text IS NULL OR category=$2)
                 AND ($3::numeric IS NULL OR confidence >= $3)
               ORDER BY confidence DESC NULLS LAST, id DESC LIMIT $4""", agent, category, min_confidence, limit)
        return [{**dict(r), "applies_to_markets": _json(r["applies_to_markets"])} for r in rows]

    async def insert_learning(self, *, agent_id: str, category: str, learning: str, source: str | None,
                              context: str | None, confidence: Decimal | None, markets: list[str] | None,
                              at: datetime) -> int:
        return await self.research.fetchval(
            """INSERT INTO claude_learnings (agent_id, source_db, category, learning, source, context, confidence,
                   applies_to_markets, created_at, updated_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8::jsonb,$9,$9) RETURNING id""",
            agent_id, SOURCE, category, learning, source, context, confidence,
            json.dumps(markets) if markets is not None else None, at)

    async def questions(self, *, agent: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self.research.fetch(
            """SELECT id, created_at, agent_id, question, context, horizon, priority, category, status,
                      current_hypothesis, answer, source_db
               FROM claude_questions
               WHERE ($1::text IS NULL OR agent_id=$1 OR agent_id IS NULL) AND ($2::text IS NULL OR status=$2)
               ORDER BY priority DESC NULLS LAST, id DESC LIMIT $3""", agent, status, limit)
        return [dict(r) for r in rows]

    async def insert_question(self, *, agent_id: str, question: str, context: str | None, horizon: str | None,
                              priority: int, category: str | None, at: datetime) -> int:
        return await self.research.fetchval(
            """INSERT INTO claude_questions (agent_id, source_db, question, context, horizon, priority, category, status,
                   created_at, updated_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,'open',$8,$8) RETURNING id""",
            agent_id, SOURCE, question, context, horizon, priority, category, at)

    async def research_counts(self) -> dict[str, int]:
        row = await self.research.fetchrow(
            """SELECT (SELECT count(*) FROM claude_observations) AS observations,
                      (SELECT count(*) FROM claude_learnings) AS learnings,
                      (SELECT count(*) FROM claude_learnings WHERE confidence >= 0.7) AS validated_learnings,
                      (SELECT count(*) FROM claude_questions WHERE status IN ('open', 'investigating')) AS open_questions""")
        return dict(row)

    # --- trading tables (read only) -------------------------------------------------------------
    async def open_positions(self, agent_ids: list[str], market: str | None, now: datetime) -> list[dict[str, Any]]:
        rows = await self.trading.fetch(
            """SELECT p.position_id, p.agent_id, p.market, p.symbol, p.side, p.quantity, p.entry_price, p.entry_time,
                      p.stop_price, p.target_price, p.tier, p.backstop_status, p.origin,
                      m.status AS monitor_status, m.last_check_at, m.last_price, m.pnl_pct, m.decision,
                      (m.status = 'running' AND m.lease_expires_at > $3) AS monitor_alive
               FROM positions p LEFT JOIN monitor_status m ON m.position_id = p.position_id
               WHERE p.status='open' AND p.agent_id = ANY($1::text[]) AND ($2::text IS NULL OR p.market=$2)
               ORDER BY p.agent_id, p.position_id""", agent_ids, market, now)
        return [dict(r) for r in rows]

    async def day_figures(self, agent_id: str, trading_day, day_start: datetime, day_end: datetime,
                          now: datetime) -> dict[str, Any]:
        """One agent's day in one round trip: what status.py computes, as aggregates."""
        row = await self.trading.fetchrow(
            """SELECT
                 (SELECT count(*) FROM positions WHERE agent_id=$1 AND status='open') AS open_positions,
                 (SELECT count(*) FROM positions p WHERE p.agent_id=$1 AND p.status='open' AND NOT EXISTS (
                      SELECT 1 FROM monitor_status m WHERE m.position_id=p.position_id AND m.status='running'
                      AND m.lease_expires_at > $5)) AS unwatched_positions,
                 (SELECT COALESCE(sum(realized_pnl), 0) FROM positions WHERE agent_id=$1
                      AND status IN ('closed','reconciled_missing') AND exit_time >= $3 AND exit_time < $4) AS realized_pnl,
                 (SELECT count(*) FROM positions WHERE agent_id=$1
                      AND status IN ('closed','reconciled_missing') AND exit_time >= $3 AND exit_time < $4) AS closed_trades,
                 (SELECT count(*) FROM positions WHERE agent_id=$1 AND trading_day=$2 AND origin='agent') AS entries,
                 (SELECT COALESCE(sum(cost_usd), 0) FROM api_usage WHERE agent_id=$1 AND trading_day=$2) AS spend_usd,
                 (SELECT halted FROM risk_day WHERE agent_id=$1 AND trading_day=$2) AS halted,
                 (SELECT halt_reason FROM risk_day WHERE agent_id=$1 AND trading_day=$2) AS halt_reason""",
            agent_id, trading_day, day_start, day_end, now)
        return dict(row)

    async def last_cycle(self, agent_id: str) -> dict[str, Any] | None:
        row = await self.trading.fetchrow(
            """SELECT cycle_id, status, brain, started_at, completed_at, trades_executed, cost_usd, error FROM cycles
               WHERE agent_id=$1 ORDER BY started_at DESC LIMIT 1""", agent_id)
        return dict(row) if row else None

    async def exits_between(self, agent_id: str, start: datetime, end: datetime, limit: int) -> list[dict[str, Any]]:
        rows = await self.trading.fetch(
            """SELECT position_id, symbol, quantity, entry_price, exit_price, exit_time, exit_reason, exit_type,
                      realized_pnl, realized_pnl_pct, status
               FROM positions WHERE agent_id=$1 AND status IN ('closed','reconciled_missing')
                 AND exit_time >= $2 AND exit_time < $3 ORDER BY exit_time LIMIT $4""", agent_id, start, end, limit)
        return [dict(r) for r in rows]
