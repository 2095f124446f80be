"""The shared retry policy (on a simulated clock) and the best-effort wrapper for side-calls."""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

import pytest

from core.clock import SimClock
from ops.retry import BestEffort, retrying

START = datetime(2026, 1, 5, 2, 0, tzinfo=timezone.utc)


class RecordingClock(SimClock):
    """A real simulated clock that also remembers every sleep asked of it."""

    def __init__(self) -> None:
        super().__init__(START)
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().sleep(seconds)


class Flaky:
    """Fails with the given errors in turn, then answers ``"answer"``; counts the calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


async def call_with(policy, call: Flaky) -> str:
    async for attempt in policy:
        with attempt:
            result = await call()
    return result


class Throttled(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__(f"throttled, retry after {retry_after}")
        self.retry_after = retry_after


def test_transient_failures_back_off_on_the_clock_then_answer():
    clock = RecordingClock()
    told: list[tuple[str, int, float]] = []
    call = Flaky(ConnectionError("drop 1"), ConnectionError("drop 2"))
    policy = retrying(clock, attempts=4, first_delay=60.0, retry_on=(ConnectionError,),
                      before_sleep=lambda exc, attempt, delay: told.append((str(exc), attempt, delay)))

    started = time.monotonic()
    assert clock.run(call_with(policy, call)) == "answer"

    assert time.monotonic() - started < 5                    # three simulated minutes, no real waiting
    assert call.calls == 3 and clock.slept == [60.0, 120.0]
    assert clock.now() == START.replace(minute=3)
    assert told == [("drop 1", 1, 60.0), ("drop 2", 2, 120.0)]


def test_the_last_failure_is_raised_as_it_is_after_every_attempt_and_delays_are_capped():
    clock = RecordingClock()
    call = Flaky(*(TimeoutError(f"timeout {i}") for i in range(1, 6)))
    policy = retrying(clock, attempts=4, first_delay=1.0, max_delay=3.0, retry_on=(TimeoutError,))

    with pytest.raises(TimeoutError, match="timeout 4"):
        clock.run(call_with(policy, call))
    assert call.calls == 4 and clock.slept == [1.0, 2.0, 3.0]


def test_a_failure_that_is_not_retryable_is_raised_at_once():
    clock = RecordingClock()
    policy = retrying(clock, attempts=4, first_delay=1.0, retry_on=(ConnectionError,),
                      retry_if=lambda exc: "transient" in str(exc))
    wrong_type, final = Flaky(ValueError("bad input")), Flaky(ConnectionError("refused for good"))

    with pytest.raises(ValueError, match="bad input"):
        clock.run(call_with(policy, wrong_type))
    with pytest.raises(ConnectionError, match="refused for good"):
        clock.run(call_with(retrying(clock, attempts=4, first_delay=1.0, retry_on=(ConnectionError,),
                                     retry_if=lambda exc: "transient" in str(exc)), final))
    assert (wrong_type.calls, final.calls, clock.slept) == (1, 1, [])


def test_a_delay_the_failure_asks_for_wins_over_the_back_off_but_not_over_the_cap():
    clock = RecordingClock()
    call = Flaky(Throttled(7.0), Throttled(None), Throttled(500.0))
    policy = retrying(clock, attempts=4, first_delay=1.0, max_delay=30.0, retry_on=(Throttled,),
                      retry_after=lambda exc: exc.retry_after)

    assert clock.run(call_with(policy, call)) == "answer"
    assert clock.slept == [7.0, 2.0, 30.0]


def test_one_attempt_means_no_retry():
    clock = RecordingClock()
    call = Flaky(ConnectionError("once"))
    with pytest.raises(ConnectionError):
        clock.run(call_with(retrying(clock, attempts=1, first_delay=1.0), call))
    assert (call.calls, clock.slept) == (1, [])


async def test_a_failing_side_call_is_logged_once_counted_and_never_raises(caplog):
    caplog.set_level(logging.DEBUG, logger="catalyst.test_retry")
    best_effort = BestEffort(logging.getLogger("catalyst.test_retry"))

    async def notify() -> None:
        raise ConnectionRefusedError("postgresql://bigbro:s3cret@10.0.0.9/research refused")

    assert await best_effort("notify Big Bro", notify) is None
    assert await best_effort("alert by email", lambda: 1 / 0, default="not sent") == "not sent"

    assert best_effort.failures == {"notify Big Bro": 1, "alert by email": 1}
    notify_lines = [r.getMessage() for r in caplog.records if "notify Big Bro" in r.getMessage()]
    assert notify_lines == ["notify Big Bro failed (ConnectionRefusedError); carrying on without it"]
    assert "s3cret" not in caplog.text                       # no redact given: the message is left out


async def test_a_redacted_failure_message_is_logged_with_the_secret_removed(caplog):
    caplog.set_level(logging.DEBUG, logger="catalyst.test_retry")
    best_effort = BestEffort(logging.getLogger("catalyst.test_retry"), redact=lambda text: text.replace("s3cret", "***"))

    async def notify() -> None:
        raise ConnectionRefusedError("password s3cret refused")

    await best_effort("notify Big Bro", notify)
    await best_effort("notify Big Bro", notify)

    assert best_effort.failures["notify Big Bro"] == 2
    assert [r.getMessage() for r in caplog.records] == [
        "notify Big Bro failed (ConnectionRefusedError: password *** refused); carrying on without it"] * 2


async def test_a_successful_side_call_passes_its_value_through_silently(caplog):
    caplog.set_level(logging.DEBUG, logger="catalyst.test_retry")
    best_effort = BestEffort(logging.getLogger("catalyst.test_retry"))

    async def record() -> int:
        return 42

    assert await best_effort("record the event", record) == 42
    assert await best_effort("count it", lambda: "sync value") == "sync value"
    assert not best_effort.failures and not caplog.records


async def test_cancelling_a_side_call_is_not_swallowed():
    best_effort = BestEffort(logging.getLogger("catalyst.test_retry"))
    task = asyncio.ensure_future(best_effort("wait for Big Bro", lambda: asyncio.sleep(3600)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not best_effort.failures
