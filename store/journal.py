"""The exit journal: what a position's exit writes to the trading tables, kept first in a durable local
file (JSON lines, fsynced) and written to the database after the broker has acted.

A stop-loss sale must never wait for PostgreSQL. The exit path (cancelling the backstop, the sale,
its fills, the booking) appends each record here and goes on with the broker; ``flush`` then writes
the records, in order, to the database, now if it answers, or later (the next exit, the monitor
manager's periodic flush, the next run's start, before it reconciles). Every record is idempotent
(orders are upserted by client order id, a position is booked only while it is open), so a flush cut
short and done again books nothing twice.

The file is shared by every process of one agent (a trade run and a heartbeat): appends and the
rewrite after a flush hold an exclusive ``flock``, never while waiting for the database. Without a
path (tests, a caller that builds no journal) the records live in memory with the same semantics.
"""
from __future__ import annotations

import asyncio
import enum
import fcntl
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import fields
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

from brokers.base import Order, OrderPurpose, OrderStatus, OrderType
from core.clock import Clock
from core.instruments import OrderSide, parse_symbol

log = logging.getLogger(__name__)

_ORDER_FIELDS = [f.name for f in fields(Order) if f.name != "legs"]


class JournalTarget(Protocol):
    """The store the journal writes to (``store.trading.TradingStore``)."""

    agent_id: str

    async def record_order(self, order: Order, *, trading_day: date, at: datetime, cycle_id: str | None,
                           position_id: int | None) -> None: ...

    async def set_backstop(self, position_id: int, status: str, order_ids: Iterable[str], at: datetime) -> None: ...

    async def close_position(self, position_id: int, *, exit_price: Decimal, exit_time: datetime, exit_reason: str,
                             exit_type: str, exit_fees: Decimal, quantity: int | None = None) -> Any: ...

    async def mark_reconciled_missing(self, position_id: int, at: datetime, note: str) -> None: ...


class ExitJournal:
    RETRY_SECONDS = 30.0  # after a failed flush, the next one (unless forced) waits this long

    def __init__(self, path: Path | None, agent_id: str, clock: Clock) -> None:
        self.path = path
        self.agent_id = agent_id
        self.clock = clock
        self._memory: list[str] = []
        self._seq = 0
        self._retry_at: datetime | None = None
        self._dirty = path is not None  # records of this process (or, at first, of earlier ones) not written yet
        self._flushing = asyncio.Lock()

    # --- what the exit path writes ----------------------------------------------------------
    def record_order(self, order: Order, *, trading_day: date, at: datetime, cycle_id: str | None,
                     position_id: int | None) -> None:
        self._append("record_order", {"order": _order_json(order), "trading_day": trading_day.isoformat(),
                                      "at": at.isoformat(), "cycle_id": cycle_id, "position_id": position_id})

    def set_backstop(self, position_id: int, status: str, order_ids: Iterable[str], at: datetime) -> None:
        self._append("set_backstop", {"position_id": position_id, "status": status, "order_ids": list(order_ids),
                                      "at": at.isoformat()})

    def close_position(self, position_id: int, *, exit_price: Decimal, exit_time: datetime, exit_reason: str,
                       exit_type: str, exit_fees: Decimal, quantity: int | None = None) -> None:
        self._append("close_position", {"position_id": position_id, "exit_price": str(exit_price),
                                        "exit_time": exit_time.isoformat(), "exit_reason": exit_reason,
                                        "exit_type": exit_type, "exit_fees": str(exit_fees), "quantity": quantity})

    def mark_reconciled_missing(self, position_id: int, at: datetime, note: str) -> None:
        self._append("mark_reconciled_missing", {"position_id": position_id, "at": at.isoformat(), "note": note})

    # --- what it tells ----------------------------------------------------------------------
    def pending(self) -> int:
        return len(self._lines())

    def closing(self) -> set[int]:
        """Positions whose booking is journaled and not in the database yet: sold, not to be adopted."""
        return {r["args"]["position_id"] for r in map(json.loads, self._lines())
                if r["op"] in ("close_position", "mark_reconciled_missing")}

    # --- into the database ------------------------------------------------------------------
    async def flush(self, store: JournalTarget, *, force: bool = False) -> int:
        """Write the journal to the database in order; how many records were written. Stops at the first
        record the database does not take (it is down) and tries again after ``RETRY_SECONDS``."""
        if not force and (not self._dirty or (self._retry_at is not None and self.clock.now() < self._retry_at)):
            return 0
        async with self._flushing:
            seq = self._seq
            lines = self._lines()
            written: list[str] = []
            for line in lines:
                try:
                    await _apply(store, json.loads(line))
                except Exception as exc:  # noqa: BLE001 - the database is down or refused it: try later
                    self._retry_at = self.clock.now() + timedelta(seconds=self.RETRY_SECONDS)
                    log.warning("the exit journal waits for the trading database (%s); %d record(s) kept in %s",
                                type(exc).__name__, len(lines) - len(written), self.path or "memory")
                    break
                written.append(line)
            else:
                self._retry_at = None
                self._dirty = self._seq != seq  # appended to while this flush wrote
            self._drop(written)
            return len(written)

    # --- the file ---------------------------------------------------------------------------
    def _append(self, op: str, args: dict[str, Any]) -> None:
        self._seq += 1
        self._dirty = True
        line = json.dumps({"id": f"{os.getpid()}:{id(self)}:{self._seq}", "agent_id": self.agent_id, "op": op,
                           "args": args}, separators=(",", ":"))
        if self.path is None or self._memory:  # (once in memory, the rest follows there: one order)
            self._memory.append(line)
            return
        try:
            with self._locked() as f:
                end = f.seek(0, os.SEEK_END)
                if end:
                    f.seek(end - 1)
                    if f.read(1) != "\n":  # a line torn by a write that failed: this record starts afresh
                        f.write("\n")
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            # The disk is full or the folder unwritable: the sale must not wait for it either. The record
            # is kept in memory (written to the database by the next flush) and the log says it once.
            if not self._memory:
                log.error("the exit journal %s cannot be written (%s); its records are kept in memory until the "
                          "database takes them", self.path, type(exc).__name__)
            self._memory.append(line)

    def _lines(self) -> list[str]:
        if self.path is None or not self.path.exists():
            return list(self._memory)
        try:
            with self._locked() as f:
                f.seek(0)
                on_disk = [line for line in f.read().splitlines() if self._ours(line)]
        except OSError:
            on_disk = []
        return on_disk + [line for line in self._memory if line not in on_disk]

    def _ours(self, line: str) -> bool:
        try:
            return bool(line.strip()) and json.loads(line).get("agent_id") == self.agent_id
        except ValueError:  # a torn last line from a killed process: the record was never acted on
            return False

    def _drop(self, written: list[str]) -> None:
        if not written:
            return
        done = set(written)
        self._memory = [line for line in self._memory if line not in done]
        if self.path is None or not self.path.exists():
            return
        try:
            with self._locked() as f:
                f.seek(0)
                keep = [line for line in f.read().splitlines() if line not in done and self._ours(line)]
                f.seek(0)
                f.truncate()
                f.write("".join(line + "\n" for line in keep))
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # written to the database all the same; a later flush writes them again, idempotently
            log.warning("the exit journal %s could not be rewritten (%s)", self.path, type(exc).__name__)

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield f
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


async def _apply(store: JournalTarget, record: dict[str, Any]) -> None:
    a = record["args"]
    op = record["op"]
    if op == "record_order":
        await store.record_order(_order_from(a["order"]), trading_day=date.fromisoformat(a["trading_day"]),
                                 at=datetime.fromisoformat(a["at"]), cycle_id=a["cycle_id"],
                                 position_id=a["position_id"])
    elif op == "set_backstop":
        await store.set_backstop(a["position_id"], a["status"], a["order_ids"], datetime.fromisoformat(a["at"]))
    elif op == "close_position":
        await store.close_position(a["position_id"], exit_price=Decimal(a["exit_price"]),
                                   exit_time=datetime.fromisoformat(a["exit_time"]), exit_reason=a["exit_reason"],
                                   exit_type=a["exit_type"], exit_fees=Decimal(a["exit_fees"]),
                                   quantity=a.get("quantity"))
    elif op == "mark_reconciled_missing":
        await store.mark_reconciled_missing(a["position_id"], datetime.fromisoformat(a["at"]), a["note"])
    else:
        raise ValueError(f"unknown exit journal record {op!r}")


def _order_json(order: Order) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _ORDER_FIELDS:
        value = getattr(order, name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[name] = value
    out["symbol"] = str(order.symbol)
    return out


def _order_from(data: dict[str, Any]) -> Order:
    d = dict(data)
    d["symbol"] = parse_symbol(d["symbol"])
    d["side"], d["order_type"] = OrderSide(d["side"]), OrderType(d["order_type"])
    d["status"], d["purpose"] = OrderStatus(d["status"]), OrderPurpose(d["purpose"])
    for name in ("avg_fill_price", "limit_price", "stop_price", "fees"):
        d[name] = Decimal(d[name]) if d[name] is not None else None
    d["fees"] = d["fees"] if d["fees"] is not None else Decimal(0)
    for name in ("created_at", "updated_at"):
        d[name] = datetime.fromisoformat(d[name]) if d[name] else None
    return Order(**d)
