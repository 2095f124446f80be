"""The one source of "now" and of waiting.

Two clocks behind one protocol:

* ``WallClock``: real time, ``asyncio.sleep``.
* ``SimClock``: a simulated clock for replays and tests. It runs the program on an event loop
  whose time is virtual: when every task is waiting on a timer the loop jumps straight to the
  next timer instead of blocking, so a trading day replays in seconds and always the same way.
  Time never jumps while real I/O is in flight (a database query, a call to a fake server):
  code that awaits something outside the process wraps it in ``external_io()``. I/O whose timing
  must not change which task runs first (the database) goes through an ``IoThread`` instead: it
  completes before the simulated loop runs anything else, as if it took no time at all.

Because the virtual time lives in the event loop itself, everything built on asyncio timers
(``asyncio.sleep``, ``asyncio.wait_for``, ``asyncio.timeout``) follows the simulated clock.
"""
from __future__ import annotations

import asyncio
import contextlib
import selectors
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Coroutine, Iterator, Protocol, TypeVar

T = TypeVar("T")

# How long a real wait for in-flight I/O may last before the simulation gives up on it.
_IO_STALL_SECONDS = 120.0


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC now."""

    async def sleep(self, seconds: float) -> None: ...

    async def sleep_until(self, when: datetime) -> None: ...

    async def wait_for(self, event: asyncio.Event, seconds: float) -> bool:
        """Until ``event`` is set (True) or ``seconds`` have passed on this clock (False)."""

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main`` to completion on an event loop that follows this clock."""


class _LoopTime:
    """Sleeping and waiting on the running event loop's time: real for the wall clock, virtual for
    the simulated one (its loop jumps ahead whenever nothing is runnable)."""

    def now(self) -> datetime:
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def sleep_until(self, when: datetime) -> None:
        await self.sleep((when - self.now()).total_seconds())

    async def wait_for(self, event: asyncio.Event, seconds: float) -> bool:
        try:
            await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))
            return True
        except TimeoutError:
            return False


class WallClock(_LoopTime):
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(main)


class _VirtualSelector(selectors.BaseSelector):
    """A selector that turns "block for ``timeout`` seconds" into a jump of virtual time."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.virtual_now = 0.0
        self.io_in_flight = 0

    def register(self, fileobj, events, data=None):  # type: ignore[override]
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):  # type: ignore[override]
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):  # type: ignore[override]
        return self._real.modify(fileobj, events, data)

    def get_map(self):  # type: ignore[override]
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None):  # type: ignore[override]
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if self.io_in_flight:
            # Something outside the process is working for us: wait for it in real time,
            # and let no simulated time pass meanwhile.
            return self._real.select(_IO_STALL_SECONDS)
        if timeout is None:
            return self._real.select(None)
        self.virtual_now += timeout
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(selector=self._virtual)
        # asyncio runs a timer when it is due before time() + _clock_resolution. The monotonic
        # clock's resolution (1 ns) vanishes in float rounding once virtual time is past about
        # 100 days (a replay over months or years): the loop then spins forever on a due timer.
        # One microsecond stays representable for centuries of virtual time.
        self._clock_resolution = 1e-6

    def time(self) -> float:
        return self._virtual.virtual_now

    @property
    def io_in_flight(self) -> int:
        return self._virtual.io_in_flight

    def _io_begin(self) -> None:
        self._virtual.io_in_flight += 1

    def _io_end(self) -> None:
        self._virtual.io_in_flight -= 1


@contextlib.contextmanager
def external_io() -> Iterator[None]:
    """Mark a stretch of code that awaits the outside world (database, sockets, threads).

    Under a simulated clock no virtual time passes until it is done; under the wall clock this
    does nothing.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if not isinstance(loop, VirtualTimeLoop):
        yield
        return
    loop._io_begin()
    try:
        yield
    finally:
        loop._io_end()


async def io(awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """``await`` something external under ``external_io()``.

    ``timeout``: seconds of real time, on either clock; past it the call is cancelled and
    ``TimeoutError`` raised. A timer of the event loop cannot bound such a call under the simulated
    clock (no virtual time passes while it is in flight), nor can the SDKs' own timeouts and back-off
    sleeps that run on the loop's timers: a call that hangs there would hang the run for ever. The
    deadline is therefore kept by a real-time timer thread.
    """
    if timeout is None:
        with external_io():
            return await awaitable
    loop = asyncio.get_running_loop()
    call = asyncio.ensure_future(awaitable)
    expired = []

    def expire() -> None:
        if not call.done():
            expired.append(True)
            call.cancel()

    timer = threading.Timer(timeout, loop.call_soon_threadsafe, args=(expire,))
    timer.daemon = True
    timer.start()
    try:
        with external_io():
            return await call
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if expired and not (current is not None and current.cancelling()):
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        raise
    finally:
        timer.cancel()


def simulation_running() -> bool:
    """Whether the running event loop is a simulated clock's."""
    try:
        return isinstance(asyncio.get_running_loop(), VirtualTimeLoop)
    except RuntimeError:
        return False


class IoThread:
    """A private event loop on a thread of its own, for I/O a simulation must see as instantaneous.

    ``external_io()`` stops simulated time while a call is in flight, but other tasks still run
    meanwhile, and which of two concurrent calls answers first is up to the real world: a monitor's
    exit and a cycle's scan at the same simulated second then interleave differently from one run
    to the next. ``call()`` blocks the simulated loop until the answer is in, so nothing else runs
    meanwhile and every run interleaves its tasks the same way. Objects bound to an event loop
    (asyncpg pools and connections) are made and used on this thread's loop only.
    """

    def __init__(self, name: str = "sim-io") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = _IO_STALL_SECONDS) -> T:
        """Await ``make()`` on the thread's loop and return its result (or raise its error) here.

        ``timeout``: seconds of real time; past it the call is cancelled and ``TimeoutError`` raised.
        """
        async def run() -> T:
            return await make()

        answer = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return answer.result(timeout)
        except TimeoutError:
            if answer.done():  # the call's own timeout, not ours
                raise
            answer.cancel()
            raise TimeoutError(f"no answer within {timeout:g} s") from None

    def close(self) -> None:
        if self._loop.is_closed():
            return

        async def cancel_the_rest() -> None:  # e.g. a call given up on: it ends here, not in the collector
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_the_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()


class SimClock(_LoopTime):
    """Simulated time starting at ``start`` (timezone-aware).

    ``now()`` and ``sleep()`` work on the loop created by ``run()``. Outside that loop (before
    the run, in plain unit tests) ``now()`` returns the manual time set by ``set()``/``advance()``.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimClock needs a timezone-aware start time")
        self._manual = start.astimezone(timezone.utc)
        self._origin: datetime | None = None
        self._loop: VirtualTimeLoop | None = None

    def _running_virtual_loop(self) -> VirtualTimeLoop | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return loop if loop is self._loop else None

    def now(self) -> datetime:
        loop = self._running_virtual_loop()
        if loop is None or self._origin is None:
            return self._manual
        return self._origin + timedelta(seconds=loop.time())

    def peek(self) -> datetime:
        """Simulated now, readable from another thread (e.g. a fake server serving the same market)."""
        loop, origin = self._loop, self._origin
        if loop is None or origin is None:
            return self._manual
        return origin + timedelta(seconds=loop.time())

    def set(self, when: datetime) -> None:
        """Move the clock (only between runs, or when no loop is running)."""
        if self._running_virtual_loop() is not None:
            raise RuntimeError("SimClock.set() cannot move time inside a running simulation; sleep instead")
        self._manual = when.astimezone(timezone.utc)

    def advance(self, seconds: float) -> None:
        self.set(self._manual + timedelta(seconds=seconds))

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        loop = VirtualTimeLoop()
        self._loop = loop
        self._origin = self._manual
        try:
            asyncio.set_event_loop(loop)
            return loop.run_until_complete(main)
        finally:
            self._manual = self._origin + timedelta(seconds=loop.time())
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self._loop = None
