"""Client-side rate limits for OpenD, waiting on the injected clock (never ``time.sleep``).

Futu's limits: place / modify order at most 15 per 30 s per account and at least 0.02 s apart;
market snapshots at most 60 per 30 s (400 codes per call); historical K-lines 60 per 30 s.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from core.clock import Clock

log = logging.getLogger("catalyst.brokers.moomoo")


@dataclass(frozen=True)
class RateLimit:
    max_calls: int
    window_seconds: float
    min_interval_seconds: float = 0.0
    # Requests reach OpenD a little after we stamp them; keep a margin so its window agrees.
    safety_margin_seconds: float = 0.1


ORDER_RATE = RateLimit(15, 30.0, min_interval_seconds=0.02)
SNAPSHOT_RATE = RateLimit(60, 30.0)
HISTORY_RATE = RateLimit(60, 30.0)


class SlidingWindowLimiter:
    """At most ``max_calls`` per sliding ``window_seconds`` and ``min_interval_seconds`` apart.

    ``acquire()`` waits on the injected clock, so under a simulated clock it takes no wall time.
    """

    def __init__(self, limit: RateLimit, clock: Clock, name: str = "") -> None:
        self.limit = limit
        self._clock = clock
        self._name = name
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _wait_needed(self, now: float) -> float:
        window = self.limit.window_seconds
        while self._stamps and now - self._stamps[0] >= window + self.limit.safety_margin_seconds:
            self._stamps.popleft()
        waits = [0.0]
        if len(self._stamps) >= self.limit.max_calls:
            waits.append(self._stamps[0] + window + self.limit.safety_margin_seconds - now)
        if self._stamps and self.limit.min_interval_seconds:
            waits.append(self._stamps[-1] + self.limit.min_interval_seconds - now)
        return max(waits)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._now()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._stamps.append(now)
                    return
                log.debug("throttling %s for %.3f s", self._name, wait)
                await self._clock.sleep(wait + 1e-4)
