"""A position's prices for its price guard: the broker's pushes where it has them, polls of its
snapshot where it has none, and polls as well while the pushes have gone quiet for
``quote_stale_seconds`` (a stream that is down, reconnecting with its SDK's back-off, or stalled),
so that the stop keeps being checked whatever the stream does. On a simulated clock the pushes are
the paper exchange's, on time by construction: they are never polled for."""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Awaitable, Callable

from brokers.base import BrokerError, Quote, Subscription
from core.clock import simulation_running
from engine.context import MonitorContext
from store.trading import PositionRecord

log = logging.getLogger(__name__)


class PositionQuotes:
    def __init__(self, ctx: MonitorContext, position: PositionRecord,
                 on_error: Callable[[str], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.position = position
        self._on_error = on_error
        self._queue: asyncio.Queue[Quote] = asyncio.Queue()
        self._subscription: Subscription | None = None
        self._last_push: datetime | None = None
        self._may_go_quiet = True

    def subscribe(self) -> None:
        if not self.ctx.broker.capabilities.supports_quote_push:
            return
        try:
            self._subscription = self.ctx.broker.subscribe_quotes([self.position.symbol], self._queue.put_nowait)
        except BrokerError as exc:
            log.warning("%s: no quote push (%s); polling", self.position.symbol, exc)
            return
        self._last_push = self.ctx.clock.now()
        self._may_go_quiet = not simulation_running()

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()

    async def next(self, wait: float, last: Quote | None) -> Quote | None:
        """The newest quote within ``wait`` seconds: pushed if the broker pushes, else (or while its
        pushes are quiet) polled; a polled quote no newer than ``last`` is nothing new."""
        if self._subscription is None:
            await self.ctx.clock.sleep(wait)
            return await self._poll()
        quote = await self._pushed(wait)
        if quote is not None or not self._quiet():
            return quote
        polled = await self._poll()
        return polled if polled is not None and (last is None or polled.time > last.time) else None

    def drop_before(self, when: datetime) -> None:
        """Forget pushed quotes from before ``when`` (the lunch break): no price to act on."""
        fresh = None
        while not self._queue.empty():
            quote = self._queue.get_nowait()
            fresh = quote if quote.time >= when else fresh
        if fresh is not None:
            self._queue.put_nowait(fresh)

    async def _pushed(self, wait: float) -> Quote | None:
        try:
            quote = await asyncio.wait_for(self._queue.get(), timeout=wait) if wait > 0 else self._queue.get_nowait()
        except (asyncio.TimeoutError, asyncio.QueueEmpty):
            return None
        while not self._queue.empty():  # act on the newest price
            quote = self._queue.get_nowait()
        self._last_push = self.ctx.clock.now()
        return quote

    def _quiet(self) -> bool:
        if not self._may_go_quiet:
            return False
        quiet_for = (self.ctx.clock.now() - self._last_push).total_seconds() if self._last_push else float("inf")
        return quiet_for >= self.ctx.profile.monitor.quote_stale_seconds

    async def _poll(self) -> Quote | None:
        try:
            snaps = await self.ctx.broker.snapshots([self.position.symbol])
            return snaps[self.position.symbol].quote
        except Exception as exc:  # noqa: BLE001 - any broker failure: no quote this time
            await self._on_error(f"quote poll failed: {type(exc).__name__}: {exc}")
            return None
