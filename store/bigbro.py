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


CONTROLS = ("halt", "resume", "close_all")  # the commands an agent obeys from its controllers
PROMPT_TEXT_CHARS = 1000  # a message's body (and its data as JSON) is cut here in the brain's prompt


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a JSON boolean"
    if isinstance(value, (int, float)):
        return "a JSON number"
    return {list: "a JSON array", str: "a JSON string", dict: "a JSON object"}.get(type(value), "not JSON")


def _command_name(text: str) -> str:
    return text.strip().lower().replace(" ", "_").replace("-", "_")


def _cut(text: str) -> str:
    return text if len(text) <= PROMPT_TEXT_CHARS else (
        f"{text[:PROMPT_TEXT_CHARS]}... ({len(text) - PROMPT_TEXT_CHARS} more characters)")


@dataclass(frozen=True)
class InboxMessage:
    id: int
    from_agent: str
    msg_type: str
    priority: str
    subject: str | None
    body: str | None
    data: Any  # a JSON object as Big Bro's tools write it; anything JSON when someone writes it by hand
    created_at: datetime

    @classmethod
    def from_row(cls, row: Any) -> "InboxMessage":
        data = row["data"]
        return cls(id=row["id"], from_agent=row["from_agent"], msg_type=row["msg_type"],
                   priority=row["priority"] or "normal", subject=row["subject"], body=row["body"],
                   data=json.loads(data) if isinstance(data, str) else data, created_at=row["created_at"])

    @property
    def problem(self) -> str | None:
        """Why the message cannot be understood (the answer says it), or None."""
        if self.data is not None and not isinstance(self.data, dict):
            return (f"malformed message: data is {_json_kind(self.data)}; it must be a JSON object, "
                    'e.g. {"command": "halt"}')
        command = (self.data or {}).get("command")
        if self.msg_type == "task" and command is not None and not isinstance(command, str):
            return f"malformed message: data.command is {_json_kind(command)}; it must be one of {', '.join(CONTROLS)}"
        return None

    @property
    def command(self) -> str | None:
        """The command a task asks for: ``data.command``, or a subject that is exactly a control's name.
        None for other messages and for tasks meant for the brain."""
        if self.msg_type != "task" or self.problem:
            return None
        requested = (self.data or {}).get("command")
        if requested and _command_name(requested):
            return _command_name(requested)
        subject = _command_name(self.subject or "")
        return subject if subject in CONTROLS else None

    @property
    def control(self) -> str | None:
        """``halt``, ``resume`` or ``close_all`` when this is one of the controls the agent obeys."""
        return self.command if self.command in CONTROLS else None

    @property
    def for_the_runner(self) -> bool:
        """A command (known or not) or a malformed message: obeyed or answered by the run, not shown to the brain."""
        return self.problem is not None or self.command is not None

    def for_context(self) -> dict[str, Any]:
        data = self.data
        if data is not None and len(as_json := json.dumps(data, default=str)) > PROMPT_TEXT_CHARS:
            data = _cut(as_json)
        return {"id": self.id, "from": self.from_agent, "type": self.msg_type, "priority": self.priority,
                "subject": self.subject, "body": _cut(self.body) if self.body else self.body,
                "data": data}


# Pending messages to an agent, most urgent first, then oldest first.
PENDING = """SELECT id, from_agent, msg_type, priority, subject, body, data, created_at FROM claude_messages
             WHERE to_agent=$1 AND status='pending' AND (expires_at IS NULL OR expires_at > $2) {only}
             ORDER BY CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2
                                    WHEN 'low' THEN 3 ELSE 4 END, created_at, id
             LIMIT $3"""
# Wider than InboxMessage.for_the_runner (which decides): every message that might be a command or malformed.
FOR_THE_RUNNER = """AND ((data IS NOT NULL AND jsonb_typeof(data) <> 'object')
                         OR (msg_type = 'task' AND (data ? 'command' OR subject ~* '(halt|resume|close)')))"""


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

    async def pending_for_the_runner(self, at: datetime, limit: int = 200) -> list[InboxMessage]:
        """Pending commands and malformed messages, most urgent first, then oldest; not marked (each is
        marked processed or failed once it is answered, so that a run that dies first leaves it pending)."""
        rows = await self.db.fetch(PENDING.format(only=FOR_THE_RUNNER), self.agent_id, at, limit)
        return [m for m in map(InboxMessage.from_row, rows) if m.for_the_runner]

    async def read_inbox(self, at: datetime, limit: int | None = None) -> list[InboxMessage]:
        """Pending messages for the brain, urgent > high > normal > low then oldest first, at most
        ``limit``; marked read. Commands and malformed messages are the run's (``pending_for_the_runner``)."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(PENDING.format(only="") + " FOR UPDATE SKIP LOCKED", self.agent_id, at, limit)
            messages = [m for m in map(InboxMessage.from_row, rows) if not m.for_the_runner]
            if messages:
                await conn.execute(
                    "UPDATE claude_messages SET status='read', read_at=$2 WHERE id = ANY($1::int[])",
                    [m.id for m in messages], at,
                )
        return messages

    async def unread_count(self, at: datetime) -> int:
        return await self.db.fetchval(
            """SELECT count(*) FROM claude_messages
               WHERE to_agent=$1 AND status='pending' AND (expires_at IS NULL OR expires_at > $2)""",
            self.agent_id, at)

    async def mark_processed(self, message_id: int, at: datetime) -> None:
        await self.db.execute(
            "UPDATE claude_messages SET status='processed', processed_at=$2 WHERE id=$1", message_id, at
        )

    async def mark_failed(self, message_id: int, at: datetime, why: str) -> None:
        """A message that could not be carried out: 'failed', with the reason in ``data.failure`` (the
        answer says it too); data that is not a JSON object is kept as it was written."""
        await self.db.execute(
            """UPDATE claude_messages SET status='failed', processed_at=$2,
                   data = CASE WHEN data IS NULL OR jsonb_typeof(data) = 'object'
                               THEN COALESCE(data, '{}'::jsonb) || jsonb_build_object('failure', $3::text)
                               ELSE data END WHERE id=$1""",
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
