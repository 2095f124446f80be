"""Which process watches a position: the lease in ``monitor_status``. A monitor claims it at the start,
renews it while it watches (and while it sleeps through lunch), and releases it at the end; a
monitor that cannot be sure the lease is still its own stops, so that no two processes sell one
position. Before an exit acts (``permits_exit``) the lease is checked against the clock, and a lease
that lapsed while the monitor could not run (a stalled event loop) is renewed first; the run must
also prove its agent lock (``engine.run_lock``)."""
from __future__ import annotations

import enum
import logging
from datetime import datetime, timedelta

from engine.context import MonitorContext
from store.trading import PositionRecord

log = logging.getLogger(__name__)


class ExitPermission(str, enum.Enum):
    GO = "go"                  # this process may sell the position now
    WAIT = "wait"              # not now (the run cannot prove its lock); try again later
    STAND_DOWN = "stand_down"  # never: another process may own the position now


class MonitorLease:
    def __init__(self, ctx: MonitorContext, position: PositionRecord) -> None:
        self.ctx = ctx
        self.position = position
        self.until: datetime | None = None   # until when the lease is ours for certain
        self.lost_because: str | None = None  # why this monitor may no longer sell (for people)

    @property
    def seconds(self) -> float:
        return self.ctx.profile.monitor.lease_seconds

    async def claim(self, now: datetime) -> bool:
        pos = self.position
        if self.ctx.run_lock is not None and self.ctx.run_lock.stood_down is not None:
            return False
        if not await self.ctx.store.claim_monitor(pos.position_id, pos.symbol, self.ctx.owner, now, self.seconds):
            return False
        self.until = now + timedelta(seconds=self.seconds)
        return True

    async def renew(self, now: datetime) -> bool:
        """Extend the lease; False when another live process may hold it now.

        Fails closed: when the renewal itself fails (the database does not answer), the monitor goes
        on only while the lease it last renewed is certainly still its own; once that has lapsed,
        another run may have adopted the position, so this one stops rather than risk a second sale."""
        pos = self.position
        if not await self._run_may_go_on():
            return False
        try:
            held = await self.ctx.store.claim_monitor(pos.position_id, pos.symbol, self.ctx.owner, now, self.seconds)
        except Exception as exc:  # noqa: BLE001 - decided below: the lease we know of, or nothing
            if self.until is not None and now < self.until:
                log.warning("%s: lease renewal failed (%s); the lease holds until %s, trying again",
                            pos.symbol, type(exc).__name__, self.until.isoformat())
                return True
            self.lost_because = f"the monitor lease could not be renewed and has lapsed ({type(exc).__name__}: {exc})"
            return False
        if held:
            self.until = now + timedelta(seconds=self.seconds)
        return held

    async def permits_exit(self, now: datetime) -> ExitPermission:
        """Asked before an exit acts. The run must prove its agent lock, or, while the database cannot
        say (it is down: the lock's connection died with it), hold this position's lease by the clock:
        no other process can claim a lease before it lapses, so a stop sells at once through an outage
        (WAIT once the lease has lapsed too). A monitor's lease must be its own by the clock: one that
        lapsed is renewed first, since another run may have adopted the position meanwhile
        (STAND_DOWN when it cannot be renewed)."""
        lock = self.ctx.run_lock
        if lock is not None and not await lock.prove():
            if self.run_stood_down():
                return ExitPermission.STAND_DOWN
            held = self.until is not None and now < self.until
            return ExitPermission.GO if held else ExitPermission.WAIT
        if self.until is None or now < self.until:  # an early stop without a watching monitor, or a lease held
            return ExitPermission.GO
        return ExitPermission.GO if await self.renew(now) else ExitPermission.STAND_DOWN

    def run_stood_down(self) -> bool:
        """True once the run stood down (another run has the agent lock): the monitor stops at once."""
        lock = self.ctx.run_lock
        if lock is None or lock.stood_down is None:
            return False
        self.lost_because = lock.stood_down
        return True

    async def _run_may_go_on(self) -> bool:
        """False once the run stood down (another run has the agent lock); a lock that cannot be
        proven for now leaves the renewal to decide (the lease holds for its time)."""
        lock = self.ctx.run_lock
        if lock is None:
            return True
        try:
            await lock.prove(fresh_within=self.seconds / 3)  # as often as a lease is renewed: orders ask afresh
        except Exception as exc:  # noqa: BLE001 - a failed check proves nothing; the renewal decides
            log.warning("%s: the agent lock check failed: %s", self.position.symbol, exc)
        return not self.run_stood_down()

    async def release(self) -> None:
        try:
            await self.ctx.store.release_monitor(self.position.position_id, self.ctx.owner, self.ctx.clock.now())
        except Exception as exc:  # noqa: BLE001 - the lease lapses on its own; the next run adopts
            log.warning("%s: could not release the monitor lease: %s", self.position.symbol, exc)
