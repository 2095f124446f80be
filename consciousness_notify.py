"""Big Bro: typed events into ``claude_messages``, the outbox, the inbox and ``claude_state``.

* Every event is a message from this agent to ``big_bro``: ``subject``/``body`` for people,
  ``data`` (JSONB) for programs. Each insert also does ``pg_notify('claude_messages', id)``.
* Nothing is lost: when the research database cannot be written, the event is appended to a
  local outbox file (JSON lines) and delivered, in order, on the next successful write, in this
  run or the next. Every message carries an idempotency key, so a retry after an insert whose
  acknowledgement was lost never inserts it twice.
* Unless the outbox cannot be written either (``var/`` full): such an event is lost, and counted
  (``Notifier.lost``). The run says so in its summary and exits 1, and ``close`` sends one urgent
  EVENTS_LOST alert through the alerters, the only channel left.
* Notification failures never reach the caller: ``send`` does not raise. After a failed write the
  notifier does not try the database again for ``RETRY_SECONDS`` (events go straight to the
  outbox), so an unreachable database never slows the monitors down; ``close`` makes a last
  attempt at the end of the run.
* Each EXIT is also recorded as a ``claude_observations`` row (type ``market``), through the same
  outbox, so Big Bro can learn from trade results.
* Urgent events (``ALERT_EVENT_TYPES``, or anything sent with priority urgent) also go to the
  out-of-band alerters (email, webhook: ``alerts.py``), with secrets redacted.
"""
from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Protocol

from core.clock import Clock
from store.bigbro import MESSAGES, OBSERVATIONS, insert_record, json_default
from store.db import Database

log = logging.getLogger(__name__)

BIG_BRO = "big_bro"


class EventType(str, enum.Enum):
    ENTRY = "ENTRY"
    MONITOR_STARTED = "MONITOR_STARTED"
    SIGNAL = "SIGNAL"
    HAIKU_DECISION = "HAIKU_DECISION"
    HAIKU_LIMIT = "HAIKU_LIMIT"
    EXIT = "EXIT"
    MONITOR_ENDED = "MONITOR_ENDED"
    MONITOR_ERROR = "MONITOR_ERROR"
    EXIT_WORKING = "EXIT_WORKING"      # an exit the market has not (wholly) taken yet: thin minutes
    CYCLE_SUMMARY = "CYCLE_SUMMARY"
    RISK_HALT = "RISK_HALT"
    RISK_WARNING = "RISK_WARNING"
    BUDGET = "BUDGET"
    RECONCILE = "RECONCILE"
    NO_BACKSTOP = "NO_BACKSTOP"
    RUN_FAILED = "RUN_FAILED"
    DATA_UNAVAILABLE = "DATA_UNAVAILABLE"
    RUN_STOPPED = "RUN_STOPPED"
    CONTROL_RESPONSE = "CONTROL_RESPONSE"
    EVENTS_LOST = "EVENTS_LOST"        # out of band only: neither the research database nor the outbox took them


class Priority(str, enum.Enum):
    URGENT = "urgent"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


DEFAULT_PRIORITY: dict[EventType, Priority] = {
    EventType.EXIT: Priority.HIGH,
    EventType.MONITOR_ERROR: Priority.HIGH,
    EventType.EXIT_WORKING: Priority.HIGH,   # a position still open after its exit began (a halt looks the same)
    EventType.NO_BACKSTOP: Priority.HIGH,
    EventType.RECONCILE: Priority.HIGH,
    EventType.RISK_WARNING: Priority.HIGH,
    EventType.RISK_HALT: Priority.URGENT,
    EventType.BUDGET: Priority.URGENT,
    EventType.RUN_FAILED: Priority.URGENT,
    EventType.DATA_UNAVAILABLE: Priority.URGENT,
    EventType.RUN_STOPPED: Priority.HIGH,
    EventType.EVENTS_LOST: Priority.URGENT,
    EventType.SIGNAL: Priority.LOW,
}


# Events that also go out of band (email, webhook) whatever their Big Bro priority: a person must
# know at once. RUN_FAILED covers a broker that cannot be reached and an authentication or credit
# error of the model API; MONITOR_ERROR is "high" for Big Bro but a person must still hear of it.
ALERT_EVENT_TYPES: frozenset[EventType] = frozenset({
    EventType.RISK_HALT, EventType.BUDGET, EventType.RUN_FAILED, EventType.MONITOR_ERROR, EventType.EVENTS_LOST,
})


def lost_events_line(count: int) -> str:
    """How a run says that events were lost (its summary, stderr, the alert)."""
    return f"{count} event(s) lost: neither the research database nor the outbox took them"



@dataclass(frozen=True)
class Event:
    type: EventType
    subject: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)
    priority: Priority | None = None
    msg_type: str = "notification"
    reply_to_id: int | None = None

    @property
    def effective_priority(self) -> Priority:
        return self.priority or DEFAULT_PRIORITY.get(self.type, Priority.NORMAL)

    @property
    def alerts(self) -> bool:
        """True when a person must hear of this event out of band as well."""
        return self.type in ALERT_EVENT_TYPES or self.effective_priority is Priority.URGENT


class Alerter(Protocol):
    """An out-of-band channel (email, webhook) for urgent events. ``alert`` must not block for
    long; an alerter may also have ``async close()``, called at the end of the run."""

    async def alert(self, event: Event, at: datetime) -> None: ...


class Notifier:
    RETRY_SECONDS = 30.0  # after a failed write, events go straight to the outbox this long

    def __init__(
        self,
        db: Database | None,
        agent_id: str,
        clock: Clock,
        outbox_path: Path,
        run_id: str,
        alerters: list[Alerter] | None = None,
        redact: Callable[[str], str] = lambda s: s,
        label: str | None = None,
    ) -> None:
        self.db = db
        # "demo" or "replay": what such a run posts says so (subject prefix, data.run_kind), so that
        # nobody reading claude_messages takes a sample session on a simulated clock for the agent's day.
        self.label = label
        self.agent_id = agent_id
        self.clock = clock
        self.outbox_path = outbox_path
        self.run_id = run_id
        self.alerters = alerters or []
        self.redact = redact
        self._seq = 0
        self._retry_at: datetime | None = None
        self._lock: asyncio.Lock | None = None
        self.sent: list[Event] = []  # what this run emitted, for its summary
        self.lost: list[Event] = []  # what neither the research database nor the outbox took

    @property
    def rejected_path(self) -> Path:
        """Where records the database refused as invalid are kept (they would block the outbox)."""
        return self.outbox_path.with_name(self.outbox_path.stem + "-rejected.jsonl")

    def _next_key(self) -> str:
        self._seq += 1
        return f"{self.agent_id}:{self.run_id}:{self._seq:06d}"

    def _redact_data(self, data: dict[str, Any]) -> dict[str, Any]:
        """The event's data with every string redacted (keys included); numbers, prices and times are
        left as they are, so a secret made of digits (a trade PIN) can never change one or break the JSON."""
        def walk(value: Any) -> Any:
            if isinstance(value, str) and not isinstance(value, enum.Enum):
                return self.redact(value)
            if isinstance(value, dict):
                return {walk(k): walk(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [walk(v) for v in value]
            return value
        return json.loads(json.dumps(walk(data), default=json_default))  # plain JSON values for every writer

    async def send(self, event: Event) -> None:
        """Record the event for Big Bro; never raises."""
        self.sent.append(event)
        at = self.clock.now()
        data = self._redact_data({"event": event.type.value, **event.data})
        subject = event.subject
        if self.label:
            data["run_kind"] = self.label
            subject = f"[{self.label}] {subject}"
        record = {
            "table": MESSAGES,
            "idempotency_key": self._next_key(),
            "from_agent": self.agent_id,
            "to_agent": BIG_BRO,
            "msg_type": event.msg_type,
            "priority": event.effective_priority.value,
            "subject": self.redact(subject)[:500],
            "body": self.redact(event.body),
            "data": data,
            "reply_to_id": event.reply_to_id,
            "created_at": at.isoformat(),
        }
        records = [record]
        if event.type is EventType.EXIT:
            records.append(self._observation(record, at))
        log.info("event %s: %s", event.type.value, record["subject"])
        try:
            await self._deliver(records)
        except Exception:  # noqa: BLE001 - a notification must never stop trading
            self.lost.append(event)
            log.exception("event %s could not be recorded even in the outbox", event.type.value)
        if event.alerts:
            await self._alert(Event(event.type, record["subject"], record["body"], {**data, "agent": self.agent_id},
                                    event.effective_priority, event.msg_type, event.reply_to_id), at)

    async def _alert(self, safe: Event, at: datetime) -> None:
        """``safe`` (redacted already) to every alerter; a failing alerter is logged, never raised."""
        for alerter in self.alerters:
            try:
                await alerter.alert(safe, at)
            except Exception as exc:  # noqa: BLE001
                log.warning("alert for %s through %s failed: %s", safe.type.value, type(alerter).__name__,
                            type(exc).__name__)

    async def _alert_lost(self) -> None:
        """One urgent alert for the events this run lost: out of band is the only way left to tell."""
        if not self.lost:
            return
        kinds = Counter(e.type.value for e in self.lost)
        line = lost_events_line(len(self.lost))
        body = (f"{line} ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}); "
                f"the research database was unreachable and the outbox {self.outbox_path} could not be written "
                "(is the disk full?). What they said is in the agent's log only.")
        log.error("%s", line)
        await self._alert(Event(EventType.EVENTS_LOST, self.redact(line), self.redact(body),
                                {"agent": self.agent_id, "lost": len(self.lost), "by_event": dict(kinds)}),
                          self.clock.now())

    def _observation(self, message: dict[str, Any], at: datetime) -> dict[str, Any]:
        """A trade result for ``claude_observations``: what was traded, why it ended, what it made."""
        data = message["data"]
        symbol = str(data.get("symbol") or "")
        market = "HKEX" if symbol.startswith("HK.") else "US" if symbol.startswith("US.") else None
        return {
            "table": OBSERVATIONS,
            "idempotency_key": message["idempotency_key"] + ":obs",
            "agent_id": self.agent_id,
            "observation_type": "market",
            "subject": f"Trade result {symbol}: {data.get('reason')}"[:200],
            "content": message["body"],
            "market": market,
            "tags": {"kind": "trade_result", **{k: data.get(k) for k in (
                "symbol", "position_id", "reason", "exit_type", "entry_price", "exit_price", "quantity",
                "fees", "realized_pnl", "realized_pnl_pct", "haiku_calls")}},
            "created_at": at.isoformat(),
        }

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _deliver(self, records: list[dict[str, Any]]) -> None:
        # One writer at a time: the outbox file is appended to and rewritten, and the order of the
        # records in it (and in the database) is the order of the sends.
        async with self._guard():
            if self._outbox_pending() or self._backing_off():
                for record in records:
                    self._append_outbox(record)
                if not self._backing_off():
                    await self._flush()
                return
            for i, record in enumerate(records):
                try:
                    await self._insert(record)
                except Exception as exc:  # noqa: BLE001
                    self._failed(exc)
                    for rest in records[i:]:
                        self._append_outbox(rest)
                    return

    def _backing_off(self) -> bool:
        return self._retry_at is not None and self.clock.now() < self._retry_at

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = self.clock.now() + timedelta(seconds=self.RETRY_SECONDS)
        log.warning("research database unavailable (%s); events wait in the outbox %s", type(exc).__name__,
                    self.outbox_path)

    async def flush_outbox(self) -> int:
        """Deliver outbox records in order; returns how many were delivered. Stops at the first failure."""
        async with self._guard():
            return await self._flush()

    async def close(self) -> None:
        """End of the run: a last attempt at the outbox (whatever the back-off), the alert for lost events,
        then the alerters."""
        self._retry_at = None
        if self.db is not None:
            self.db.retry_now()  # nor the database's own reconnect pause
        try:
            await self.flush_outbox()
        except Exception:  # noqa: BLE001
            log.exception("the outbox could not be flushed")
        await self._alert_lost()
        for alerter in self.alerters:
            close = getattr(alerter, "close", None)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the alerter %s failed: %s", type(alerter).__name__, type(exc).__name__)

    async def _flush(self) -> int:
        if not self._outbox_pending():
            return 0
        lines = self.outbox_path.read_text(encoding="utf-8").splitlines()
        delivered = 0
        for line in lines:
            if not line.strip():
                delivered += 1
                continue
            try:
                record = json.loads(line)
            except ValueError:
                self._reject(line, "not JSON (a torn write?)")
                delivered += 1
                continue
            try:
                await self._insert(record)
            except Exception as exc:  # noqa: BLE001
                if _refused_as_invalid(exc):
                    self._reject(line, type(exc).__name__)
                    delivered += 1
                    continue
                self._failed(exc)
                log.warning("outbox delivery paused at record %d of %d", delivered + 1, len(lines))
                break
            delivered += 1
        remaining = lines[delivered:]
        if remaining:
            tmp = self.outbox_path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in remaining), encoding="utf-8")
            os.replace(tmp, self.outbox_path)
        else:
            self.outbox_path.unlink(missing_ok=True)
            self._retry_at = None
            log.info("outbox delivered (%d record(s))", delivered)
        return delivered

    def _reject(self, line: str, why: str) -> None:
        log.error("outbox record refused by the research database (%s); kept in %s", why, self.rejected_path)
        with open(self.rejected_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _outbox_pending(self) -> bool:
        return self.outbox_path.exists() and self.outbox_path.stat().st_size > 0

    def _append_outbox(self, record: dict[str, Any]) -> None:
        self.outbox_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.outbox_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    async def _insert(self, record: dict[str, Any]) -> None:
        if self.db is None:
            raise ConnectionError("no research database configured")
        await insert_record(self.db, record)


def _refused_as_invalid(exc: BaseException) -> bool:
    """The database answered and refused this record itself (bad data), as opposed to not answering."""
    import asyncpg

    return isinstance(exc, (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError))
