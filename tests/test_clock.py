"""The simulated clock: instant, deterministic, and frozen while real I/O is in flight."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

from core.clock import SimClock, io

START = datetime(2026, 11, 23, 1, 30, tzinfo=timezone.utc)


def test_a_simulated_day_passes_instantly_and_in_order():
    clock = SimClock(START)
    log: list[tuple[str, datetime]] = []

    async def ticker(name: str, every: float, n: int):
        for _ in range(n):
            await clock.sleep(every)
            log.append((name, clock.now()))

    async def main():
        await asyncio.gather(ticker("fast", 15, 1320), ticker("slow", 300, 66))

    wall = time.perf_counter()
    clock.run(main())
    assert time.perf_counter() - wall < 5
    assert clock.now() == START + timedelta(seconds=15 * 1320)
    times = [t for _, t in log]
    assert times == sorted(times)


def test_the_same_program_gives_the_same_trace_twice():
    def trace():
        clock = SimClock(START)
        out = []

        async def worker(i):
            for k in range(5):
                await clock.sleep(7 * (i + 1))
                out.append((i, k, clock.now().isoformat()))

        async def main():
            await asyncio.gather(*(worker(i) for i in range(4)))

        clock.run(main())
        return out

    assert trace() == trace()


def test_timeouts_follow_simulated_time():
    clock = SimClock(START)

    async def main():
        try:
            await asyncio.wait_for(asyncio.sleep(3600), timeout=30)
        except TimeoutError:
            return clock.now()

    assert clock.run(main()) == START + timedelta(seconds=30)


def test_no_simulated_time_passes_during_external_io():
    clock = SimClock(START)

    async def main():
        before = clock.now()
        await io(asyncio.to_thread(time.sleep, 0.05))
        return clock.now() - before

    assert clock.run(main()) == timedelta(0)


def _silent_server():
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)  # the kernel takes the connection; nobody ever answers
    return server


def test_an_external_call_that_never_answers_times_out_in_real_time_on_either_clock():
    """Under the simulated clock no loop timer comes due while a call is in flight, so only a
    real-time deadline can end a call to a server that never answers (it hung the run for ever)."""
    import pytest

    from core.clock import WallClock

    with _silent_server() as server:
        host, port = server.getsockname()

        async def ask() -> bytes:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                return await reader.read(1)
            finally:
                writer.close()

        for clock in (WallClock(), SimClock(START)):
            async def main():
                return await io(ask(), timeout=0.3)

            with pytest.raises(TimeoutError, match="no answer within 0.3 s"):
                clock.run(main())
        assert isinstance(clock, SimClock) and clock.now() == START, "no simulated time passed meanwhile"


def test_a_slow_database_answer_never_lets_another_task_overtake_in_a_simulation(database_url):
    """Two tasks at one simulated instant: a monitor's slow write, then a cycle's quick read. Were the
    answers taken in the order the real database gives them, the cycle would see the world before
    the exit on one run and after it on another (a replay put an entry 15 s apart that way). In a
    simulation a database call takes no time and nothing else runs meanwhile: always the same order."""
    from store.db import Database

    clock = SimClock(START)

    async def main():
        db = await Database(database_url, "trading").connect()
        order: list[str] = []

        async def monitor_exit():
            await db.execute("SELECT pg_sleep(0.3)")
            order.append("exit recorded")

        async def cycle_scan():
            await db.fetchval("SELECT 1")
            order.append("scan read")

        async def both_in_a_transaction():
            async with db.transaction() as conn:
                await conn.execute("SELECT pg_sleep(0.2)")
                order.append("transaction body")

        try:
            await asyncio.gather(monitor_exit(), cycle_scan(), both_in_a_transaction(), cycle_scan())
        finally:
            await db.close()
        return order

    assert clock.run(main()) == ["exit recorded", "scan read", "transaction body", "scan read"]
    assert clock.now() == START, "no simulated time passed"
