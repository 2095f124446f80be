"""Pushes the SDK decodes on its own threads, handed over to the agent's event loop and its listeners."""
from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Callable, Coroutine, Generic, TypeVar

from brokers.base import CallbackSubscription, Subscription

log = logging.getLogger("catalyst.brokers.moomoo")

T = TypeVar("T")


class LoopHandOff:
    """The agent's event loop, reachable from the SDK's threads, and the background tasks started on it."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task] = set()

    def post(self, fn: Callable, *args: Any) -> None:
        """From an SDK thread onto the agent's event loop (dropped once that loop is gone)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the loop closed meanwhile
            pass

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Moomoo background task failed: %s", task.exception())

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class PushListeners(Generic[T]):
    """Listeners of one kind of push (quotes, orders), each for some codes or (None) for all."""

    def __init__(self) -> None:
        self._listeners: dict[int, tuple[frozenset[str] | None, Callable[[T], None]]] = {}
        self._ids = itertools.count(1)

    def add(self, callback: Callable[[T], None], codes: frozenset[str] | None = None) -> Subscription:
        listener_id = next(self._ids)
        self._listeners[listener_id] = (codes, callback)
        return CallbackSubscription(_on_close=lambda: self._listeners.pop(listener_id, None))

    def wanted_codes(self) -> set[str]:
        return set().union(*(codes for codes, _ in self._listeners.values() if codes is not None))

    def deliver(self, items: list[T]) -> None:
        """On the agent's loop: each item (a Quote or an Order) to every listener of its code."""
        for item in items:
            code = str(item.symbol)
            for codes, callback in list(self._listeners.values()):
                if codes is None or code in codes:
                    _safely(callback, item)


def _safely(callback: Callable, value: Any) -> None:
    try:
        callback(value)
    except Exception:   # a listener's bug must not stop the others or the SDK thread
        log.exception("a Moomoo push listener failed")
