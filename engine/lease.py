"""Which process watches a position: the lease in ``monitor_status``. A monitor claims it at the start,
renews it while it watches (and while it sleeps through lunch), and releases it at the end; a
monitor that cannot be sure the lease is still its own stops, so that no two processes sell one
position."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from engine.context import MonitorContext
from store.trading import PositionRecord

log = logging.getLogger(__name__)


class MonitorLease:
    def __init__(self, ctx: MonitorContext, position: PositionRecord) -> None:
        self.ctx = ctx
        self.position = position
        self.until: datetime | None = None   # until when the lease is ours for certain
        self.lost_because: str | None = None  # why the lease could not be renewed (it lapsed)

    @property
    def seconds(self) -> float:
        return self.ctx.profile.monitor.lease_seconds

    async def claim(self, now: datetime) -> bool:
        pos = self.position
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
        try:
            held = await self.ctx.store.claim_monitor(pos.position_id, pos.symbol, self.ctx.owner, now, self.seconds)
        except Exception as exc:  # noqa: BLE001 - decided below: the lease we know of, or nothing
            if self.until is not None and now < self.until:
                log.warning("%s: lease renewal failed (%s); the lease holds until %s, trying again",
                            pos.symbol, type(exc).__name__, self.until.isoformat())
                return True
            self.lost_because = f"{type(exc).__name__}: {exc}"
            return False
        if held:
            self.until = now + timedelta(seconds=self.seconds)
        return held

    async def release(self) -> None:
        try:
            await self.ctx.store.release_monitor(self.position.position_id, self.ctx.owner, self.ctx.clock.now())
        except Exception as exc:  # noqa: BLE001 - the lease lapses on its own; the next run adopts
            log.warning("%s: could not release the monitor lease: %s", self.position.symbol, exc)
