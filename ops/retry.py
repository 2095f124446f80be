"""The one retry policy (tenacity, waiting on the injected clock) and the best-effort wrapper for side-calls.

``retrying`` waits with ``clock.sleep``, never ``time.sleep`` nor tenacity's own ``asyncio.sleep``:
under a simulated clock a back-off takes no wall time and a replay stays the same every run.
"""
from __future__ import annotations

import inspect
import logging
import math
from collections import Counter
from typing import Any, Awaitable, Callable, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from core.clock import Clock

T = TypeVar("T")

# The failure, the number of the attempt that failed (1 for the first), the seconds before the next.
OnRetry = Callable[[BaseException, int, float], None]


def backoff_seconds(failed_attempts: int, first_delay: float, max_delay: float = math.inf) -> float:
    """``first_delay`` doubled after every further failure, at most ``max_delay`` (and never below
    ``first_delay``); the doubling stops counting after 16, so a day of failures cannot overflow."""
    return max(first_delay, min(max_delay, first_delay * 2 ** min(failed_attempts - 1, 16)))


def retrying(
    clock: Clock,
    *,
    attempts: int,
    first_delay: float,
    max_delay: float = math.inf,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    retry_if: Callable[[BaseException], bool] = lambda exc: True,
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
    before_sleep: OnRetry | None = None,
) -> AsyncRetrying:
    """At most ``attempts`` tries in all; a failure of a ``retry_on`` type that ``retry_if`` accepts
    is retried after ``backoff_seconds`` (or the delay ``retry_after`` reads from the failure, e.g. an
    HTTP Retry-After, capped at ``max_delay``). Anything else, and the last failure, is raised as it
    is. Use as ``async for attempt in retrying(...): with attempt: ...``; build one per call (it
    holds that call's state)."""

    def wanted(exc: BaseException) -> bool:
        return isinstance(exc, retry_on) and retry_if(exc)

    def wait(state: RetryCallState) -> float:
        asked = retry_after(state.outcome.exception()) if state.outcome is not None else None
        if asked is not None:
            return min(max(0.0, asked), max_delay)
        return backoff_seconds(state.attempt_number, first_delay, max_delay)

    def tell(state: RetryCallState) -> None:
        if before_sleep is not None and state.outcome is not None and state.next_action is not None:
            before_sleep(state.outcome.exception(), state.attempt_number, state.next_action.sleep)

    return AsyncRetrying(sleep=clock.sleep, stop=stop_after_attempt(max(1, attempts)), wait=wait,
                         retry=retry_if_exception(wanted), before_sleep=tell, reraise=True)


class BestEffort:
    """Side-calls (Big Bro notifications, alerts) whose failure must never stop the caller.

    A failure is logged once as a warning, counted in ``failures[what]``, and ``default`` is returned
    instead. The log line names the exception type only, unless a ``redact`` function is given for
    the message: exception texts can carry secrets (URLs with passwords, API keys).
    """

    def __init__(self, log: logging.Logger, redact: Callable[[str], str] | None = None) -> None:
        self.log = log
        self.redact = redact
        self.failures: Counter[str] = Counter()

    async def __call__(self, what: str, call: Callable[[], Awaitable[T] | T], default: Any = None) -> T | Any:
        try:
            result = call()
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as exc:  # noqa: BLE001 - the point of a best-effort call
            self.failures[what] += 1
            detail = f": {self.redact(str(exc))[:200]}" if self.redact is not None else ""
            self.log.warning("%s failed (%s%s); carrying on without it", what, type(exc).__name__, detail)
            return default
