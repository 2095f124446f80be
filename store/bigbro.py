"""Big Bro's tables, the agent's side: ``claude_messages`` (events out, the inbox in), ``claude_observations``
and ``claude_state``. Every statement against them is here; ``consciousness_notify`` decides what is
sent and when, this module only how it is written and read."""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from store.db import Database

MESSAGES, OBSERVATIONS = "claude_messages", "claude_observations"


def json_default(value: Any) -> Any:
    if isinstance(value, (Decimal,)):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return str(value)


async def insert_record(db: Database, record: dict[str, Any]) -> bool:
    """One outbox record into its table, once: a record already there (same idempotency key) is skipped;
    a new message is announced with ``pg_notify('claude_messages', id)``. True when this call wrote it."""
    if record.get("table", MESSAGES) == OBSERVATIONS:
        status = await db.execute(
            """INSERT INTO claude_observations (agent_id, observation_type, subject, content, market, tags,
                   created_at, idempotency_key)
               VALUES ($1,$2,$3,$4,$5,$6::jsonb,$7,$8) ON CONFLICT (idempotency_key) DO NOTHING""",
            record["agent_id"], record["observation_type"], record["subject"], record["content"], record["market"],
            json.dumps(record["tags"], default=json_default), datetime.fromisoformat(record["created_at"]),
            record["idempotency_key"],
        )
        return status == "INSERT 0 1"
    async with db.transaction() as conn:
        message_id = await conn.fetchval(
            """INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body, data,
                   reply_to_id, status, created_at, idempotency_key)
               VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8,'pending',$9,$10)
               ON CONFLICT (idempotency_key) DO NOTHING RETURNING id""",
            record["from_agent"], record["to_agent"], record["msg_type"], record["priority"], record["subject"],
            record["body"], json.dumps(record["data"]), record["reply_to_id"],
            datetime.fromisoformat(record["created_at"]), record["idempotency_key"],
        )
        if message_id is not None:
            await conn.execute("SELECT pg_notify('claude_messages', $1)", str(message_id))
    return message_id is not None


@dataclass(frozen=True)
class InboxMessage:
    id: int
    from_agent: str
    msg_type: str
    priority: str
    subject: str | None
    body: str | None
    data: dict[str, Any] | None
    created_at: datetime

    @property
    def control(self) -> str | None:
        """``halt``, ``resume`` or ``close_all`` when this is a control task from Big Bro."""
        if self.msg_type != "task":
            return None
        command = (self.data or {}).get("command") or (self.subject or "").strip().lower()
        command = str(command).strip().lower().replace(" ", "_").replace("-", "_")
        return command if command in ("halt", "resume", "close_all") else None

    def for_context(self) -> dict[str, Any]:
        return {"id": self.id, "from": self.from_agent, "type": self.msg_type, "priority": self.priority,
                "subject": self.subject, "body": self.body, "data": self.data}


class Consciousness:
    """The agent's side of ``claude_state`` and its inbox in ``claude_messages``."""

    def __init__(self, db: Database, agent_id: str) -> None:
        self.db = db
        self.agent_id = agent_id

    async def wake(self, at: datetime, trading_day: date, daily_budget: Decimal, mode: str = "awake") -> None:
        """Mark the agent awake; reset today's spend and errors when the trading day changed (and the
        month's spend when the month did): the agent does this itself, no cron job is needed."""
        await self.db.execute(
            """INSERT INTO claude_state (agent_id, current_mode, last_wake_at, daily_budget, spend_day, api_spend_today,
                   api_spend_month, error_count_today, updated_at)
               VALUES ($1, $2, $3, $4, $5, 0, 0, 0, $3)
               ON CONFLICT (agent_id) DO UPDATE SET current_mode=$2, last_wake_at=$3, daily_budget=$4, updated_at=$3,
                   api_spend_today = CASE WHEN claude_state.spend_day IS DISTINCT FROM $5 THEN 0 ELSE claude_state.api_spend_today END,
                   api_spend_month = CASE WHEN date_trunc('month', claude_state.spend_day) IS DISTINCT FROM date_trunc('month', $5::date)
                                          THEN 0 ELSE claude_state.api_spend_month END,
                   error_count_today = CASE WHEN claude_state.spend_day IS DISTINCT FROM $5 THEN 0 ELSE claude_state.error_count_today END,
                   spend_day=$5""",
            self.agent_id, mode, at, daily_budget, trading_day,
        )

    async def set_mode(self, mode: str, at: datetime, status_message: str | None = None) -> None:
        await self.db.execute(
            """UPDATE claude_state SET current_mode=$2, last_action_at=$3, updated_at=$3,
                   status_message=COALESCE($4, status_message) WHERE agent_id=$1""",
            self.agent_id, mode, at, status_message[:2000] if status_message else None,
        )

    async def add_spend(self, amount: Decimal, trading_day: date, at: datetime) -> None:
        """Add an LLM call's cost; a call on a new trading day starts that day's spend from zero."""
        await self.db.execute(
            """INSERT INTO claude_state (agent_id, api_spend_today, api_spend_month, spend_day, last_think_at, updated_at)
               VALUES ($1, $2, $2, $3, $4, $4)
               ON CONFLICT (agent_id) DO UPDATE SET
                   api_spend_today = (CASE WHEN claude_state.spend_day IS DISTINCT FROM $3 THEN 0
                                           ELSE claude_state.api_spend_today END) + $2,
                   api_spend_month = (CASE WHEN date_trunc('month', claude_state.spend_day) IS DISTINCT FROM date_trunc('month', $3::date)
                                           THEN 0 ELSE COALESCE(claude_state.api_spend_month, 0) END) + $2,
                   error_count_today = CASE WHEN claude_state.spend_day IS DISTINCT FROM $3 THEN 0
                                            ELSE claude_state.error_count_today END,
                   spend_day=$3, last_think_at=$4, updated_at=$4""",
            self.agent_id, amount, trading_day, at,
        )

    async def record_error(self, error: str, at: datetime) -> None:
        await self.db.execute(
            """UPDATE claude_state SET error_count_today = COALESCE(error_count_today, 0) + 1, last_error=$2,
                   last_error_at=$3, updated_at=$3 WHERE agent_id=$1""",
            self.agent_id, error[:2000], at,
        )

    async def state(self) -> dict[str, Any] | None:
        row = await self.db.fetchrow("SELECT * FROM claude_state WHERE agent_id=$1", self.agent_id)
        return dict(row) if row else None

    async def read_inbox(self, at: datetime) -> list[InboxMessage]:
        """Pending messages to this agent, urgent > high > normal > low then oldest first; marked read."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                """SELECT id, from_agent, msg_type, priority, subject, body, data, created_at FROM claude_messages
                   WHERE to_agent=$1 AND status='pending' AND (expires_at IS NULL OR expires_at > $2)
                   ORDER BY CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2
                                          WHEN 'low' THEN 3 ELSE 4 END, created_at, id
                   FOR UPDATE""",
                self.agent_id, at,
            )
            if rows:
                await conn.execute(
                    "UPDATE claude_messages SET status='read', read_at=$2 WHERE id = ANY($1::int[])",
                    [r["id"] for r in rows], at,
                )
        return [
            InboxMessage(
                id=r["id"], from_agent=r["from_agent"], msg_type=r["msg_type"], priority=r["priority"] or "normal",
                subject=r["subject"], body=r["body"],
                data=json.loads(r["data"]) if isinstance(r["data"], str) else r["data"], created_at=r["created_at"],
            )
            for r in rows
        ]

    async def mark_processed(self, message_id: int, at: datetime) -> None:
        await self.db.execute(
            "UPDATE claude_messages SET status='processed', processed_at=$2 WHERE id=$1", message_id, at
        )

    async def mark_failed(self, message_id: int, at: datetime, why: str) -> None:
        """A control that could not be carried out: 'failed', with the reason (the answer says it too)."""
        await self.db.execute(
            """UPDATE claude_messages SET status='failed', processed_at=$2,
                   data = COALESCE(data, '{}'::jsonb) || jsonb_build_object('failure', $3::text) WHERE id=$1""",
            message_id, at, why[:500],
        )


async def post_once(research: Database, agent_id: str, subject: str, body: str, data: dict[str, Any], at: datetime,
                    idempotency_key: str, priority: str = "normal") -> bool:
    """A notification to Big Bro that exists once per key: True when this call posted it."""
    return await insert_record(research, {
        "from_agent": agent_id, "to_agent": "big_bro", "msg_type": "notification", "priority": priority,
        "subject": subject[:500], "body": body, "data": json.loads(json.dumps(data, default=str)), "reply_to_id": None,
        "created_at": at.isoformat(), "idempotency_key": idempotency_key,
    })


async def messages_between(research: Database, agent_id: str, start: datetime, end: datetime,
                           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(what the agent sent but its daily reports, what it received with the first answer to each) in [start, end)."""
    sent = await research.fetch(
        """SELECT id, created_at, data->>'event' AS event, priority, subject FROM claude_messages
           WHERE from_agent=$1 AND created_at >= $2 AND created_at < $3 AND data->>'event' <> 'DAILY_REPORT'
           ORDER BY created_at, id""", agent_id, start, end)
    received = await research.fetch(
        """SELECT m.id, m.created_at, m.msg_type, m.subject, m.status, m.processed_at,
                  (SELECT r.subject FROM claude_messages r WHERE r.reply_to_id = m.id ORDER BY r.id LIMIT 1) AS answer
           FROM claude_messages m WHERE m.to_agent=$1 AND m.created_at >= $2 AND m.created_at < $3
           ORDER BY m.created_at, m.id""", agent_id, start, end)
    return [dict(r) for r in sent], [dict(r) for r in received]
