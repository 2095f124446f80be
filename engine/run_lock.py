"""Whether this run may trade now: only while it can prove that it still holds its agent's lock.

The advisory lock (``store.db.AgentLock``) lives on one connection; a database blip frees it
silently, and a second run of the agent could then take it and trade beside this one. So the lock
is asked of the server before every entry and every exit and at every lease renewal of a monitor
(and, on the wall clock, every ``lock_check_seconds`` besides):

* still held, or lost with its connection and free again (taken again on a new connection): trade;
* the server cannot be reached: no entries until the lock is proven again, and exits only by a monitor
  whose own lease has not lapsed (no other process can have claimed the position before then:
  ``MonitorLease.permits_exit``), so a stop still sells through a database outage;
* another run holds it now: this run stands down for good (``on_taken`` says so, once); its monitors
  stop and leave their positions to that run.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Awaitable, Callable, Protocol

from core.clock import Clock
from store.db import LockStatus

log = logging.getLogger(__name__)


class LockProbe(Protocol):
    agent_id: str

    async def verify(self) -> LockStatus: ...


class RunLock:
    def __init__(self, lock: LockProbe, clock: Clock, on_taken: Callable[[str], Awaitable[None]]) -> None:
        self._lock = lock
        self._clock = clock
        self._on_taken = on_taken
        self.stood_down: str | None = None       # why this run stopped trading for good (another run has the lock)
        self.unproven_since: datetime | None = None
        self.proven_at: datetime | None = None   # when the server last said this run holds the lock

    @property
    def unproven(self) -> str:
        """Why trading waits, for the records."""
        return self.stood_down or (f"this run cannot prove that it still holds the {self._lock.agent_id} agent lock "
                                   "(its database connection was lost and the server does not answer); no entry "
                                   "or exit by this run until it can")

    async def prove(self, fresh_within: float | None = None) -> bool:
        """True when the run holds its lock now; False while it cannot prove it, or for good once it stood down.
        ``fresh_within``: a proof that recent (seconds of the clock) will do, for the checks that only keep
        a lease (every order asks the server itself)."""
        if self.stood_down is not None:
            return False
        now = self._clock.now()
        if fresh_within is not None and self.proven_at is not None and (now - self.proven_at).total_seconds() < fresh_within:
            return True
        status = await self._lock.verify()
        if self.stood_down is not None:  # another check found it meanwhile
            return False
        if status in (LockStatus.HELD, LockStatus.REGAINED):
            if status is LockStatus.REGAINED or self.unproven_since is not None:
                log.warning("the %s agent lock is held again (on a new connection); trading goes on", self._lock.agent_id)
            self.unproven_since = None
            self.proven_at = now
            return True
        self.proven_at = None
        if status is LockStatus.UNREACHABLE:
            if self.unproven_since is None:
                self.unproven_since = self._clock.now()
                log.warning("%s", self.unproven)
            return False
        self.stood_down = (f"this run lost the {self._lock.agent_id} agent lock with its database connection and "
                           "another run holds it now")
        log.error("%s; this run stands down", self.stood_down)
        await self._on_taken(self.stood_down)
        return False

    async def keep_proving(self, every_seconds: float) -> None:
        """Check the lock every ``every_seconds`` until the run stands down (a task of the run)."""
        while self.stood_down is None:
            await self._clock.sleep(every_seconds)
            try:
                await self.prove()
            except Exception as exc:  # noqa: BLE001 - a failed check proves nothing; the next one tries again
                log.warning("the agent lock check failed: %s", exc)
