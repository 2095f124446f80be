"""How fast the exit engine reacts and how much a full check costs.

Run: ``.venv/bin/python -m bench.bench_monitor`` (or ``make bench``). Prints figures; never fails
on them. Uses an embedded PostgreSQL in a temporary folder (started and stopped here), the paper
exchange on the simulated clock and the real ``PositionExecutor`` (``tests/monitor_harness.py``).

* Stop reaction: wall milliseconds from the exchange pushing the quote that breaks a stop to the
  exit order reaching the exchange (``place_order``), over 200 breaches: four rounds of 50
  positions monitored at once, their stops broken on different 15-second steps (three a minute)
  while the other monitors keep running their quote guards and full checks. Target: p95 < 250 ms.
* Full checks: wall time of ``PositionExecutor._full_check`` (quote, technicals on the real 09988
  minute bars, every signal, the decision, the monitor_status write) for 5 and 50 open positions,
  a round of checks every 5 simulated minutes. Target: 50 positions well inside one 300 s interval.
"""
from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from brokers.base import OrderPurpose, OrderRequest  # noqa: E402
from brokers.paper import PaperExchange  # noqa: E402
from core.clock import SimClock  # noqa: E402
from data.bars import BarSeries, load_samples  # noqa: E402
from core.instruments import Market, Symbol  # noqa: E402
from position_monitor import PositionExecutor  # noqa: E402
from store.db import EmbeddedPostgres  # noqa: E402
from tests.monitor_harness import CALENDAR, Harness, hk_profile, hk_series, hkt  # noqa: E402

BREACH_DAY = date(2026, 11, 23)      # a normal HK Monday for the hand-built bars
SAMPLE_DAY = date(2022, 6, 15)       # the last session of the real 09988 minute bars
ROUNDS, PER_ROUND = 4, 50            # 200 breaches
ENTRY_TIME = "10:00"
FIRST_BREACH_MINUTE = 6              # 10:06
# Bars that break the 78.00 stop (last price 80.00 before) on step +0, +15 or +30 s of the minute.
BREACH_BARS = [(77.0, 77.0, 77.0, 77.0), (80.0, 84.0, 77.0, 77.0), (80.0, 80.0, 77.0, 77.0)]


class TimedExchange(PaperExchange):
    """The paper exchange, noting (wall clock) when each symbol's breaking quote is pushed and
    when its first exit order arrives."""

    def __init__(self, *args, breaches: dict[Symbol, datetime], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._breach_us = {s: int(t.timestamp() * 1_000_000) for s, t in breaches.items()}
        self.pushed: dict[Symbol, float] = {}
        self.placed: dict[Symbol, float] = {}

    def _apply_steps(self, group) -> None:
        now = time.perf_counter()
        for tape, i in group:
            if self._breach_us.get(tape.symbol) == int(tape.times_us[i]):
                self.pushed.setdefault(tape.symbol, now)
        super()._apply_steps(group)

    async def place_order(self, request: OrderRequest):
        if request.purpose is OrderPurpose.EXIT:
            self.placed.setdefault(request.symbol, time.perf_counter())
        return await super().place_order(request)


def _breach_universe(round_no: int) -> tuple[dict[Symbol, BarSeries], dict[Symbol, datetime]]:
    series, breaches = {}, {}
    for i in range(PER_ROUND):
        minute = hkt(BREACH_DAY, f"10:{FIRST_BREACH_MINUTE + i // 3:02d}")
        hhmm, after = (f"{CALENDAR.local(t):%H:%M}" for t in (minute, minute + timedelta(minutes=1)))
        s = hk_series(f"{80000 + round_no * 100 + i:05d}", BREACH_DAY, levels=[("09:30", 80.0), (after, 77.0)],
                      bars={hhmm: BREACH_BARS[i % 3]})
        series[s.symbol] = s
        breaches[s.symbol] = minute + timedelta(seconds=15 * (i % 3))
    return series, breaches


async def _breach_round(url: str, clock: SimClock, round_no: int, outbox: Path) -> tuple[list[float], list[float], int]:
    series, breaches = _breach_universe(round_no)
    profile = hk_profile()
    exchange = TimedExchange(series, clock, CALENDAR, profile, breaches=breaches)
    h = await Harness.start(url, clock, series, outbox, profile=profile, exchange=exchange)
    try:
        monitors = []
        for symbol in series:
            position = await h.open_position(symbol, 100, stop=Decimal("78.00"))
            monitors.append(PositionExecutor(h.ctx, position))
        until = hkt(BREACH_DAY, "10:40")
        exchange.start(until)
        tasks = [asyncio.get_running_loop().create_task(m.run()) for m in monitors]
        await asyncio.wait(tasks, timeout=(until - clock.now()).total_seconds())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await exchange.stop()
        wall_ms = [(exchange.placed[s] - exchange.pushed[s]) * 1000 for s in series if s in exchange.placed and s in exchange.pushed]
        sim_s = [r for m in monitors for r in m.outcome.stop_reaction_seconds]
        return wall_ms, sim_s, sum(1 for m in monitors if not m.outcome.closed)
    finally:
        await h.close()


async def _full_check_costs(url: str, clock: SimClock, positions: int, outbox: Path) -> tuple[list[float], list[float], int]:
    """Wall seconds of every full check, and of every round of ``positions`` checks."""
    source = load_samples(Market.HK)[Symbol(Market.HK, "09988")]
    series = {}
    for i in range(positions):
        symbol = Symbol(Market.HK, f"{99000 + i:05d}")
        series[symbol] = BarSeries(symbol, f"09988 copy {i}", source.lot_size, True, source.minute, source.daily)
    h = await Harness.start(url, clock, series, outbox)
    try:
        monitors = []
        for symbol in series:
            price = (await h.exchange.snapshots([symbol]))[symbol].quote.price
            position = await h.open_position(symbol, 100, stop=(price * Decimal("0.9")).quantize(Decimal("0.1")))
            assert await h.store.claim_monitor(position.position_id, symbol, h.ctx.owner, clock.now(), 3600)
            monitors.append(PositionExecutor(h.ctx, position))
        checks, rounds = [], []
        for k in range(1, 13):  # 10:05 ... 11:00, every 5 minutes
            await clock.sleep_until(CALENDAR.at_local(SAMPLE_DAY, dtime(10, 0)) + timedelta(minutes=5 * k))
            round_started = time.perf_counter()
            for m in monitors:
                if m.outcome.closed:
                    continue
                started = time.perf_counter()
                await m._full_check()  # noqa: SLF001 - the unit measured
                checks.append(time.perf_counter() - started)
            rounds.append(time.perf_counter() - round_started)
        return checks, rounds, sum(1 for m in monitors if m.outcome.closed)
    finally:
        await h.close()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="catalyst-bench-monitor-"))
    server = EmbeddedPostgres(folder / "pg")
    started = time.perf_counter()
    server.start()
    print(f"embedded PostgreSQL up in {time.perf_counter() - started:.1f} s")
    databases = iter(range(1000))

    def fresh_database() -> str:
        name = f"bench_{next(databases)}"
        server._server.psql(f"CREATE DATABASE {name};")  # noqa: SLF001
        return server.uri(name)

    try:
        wall_ms: list[float] = []
        sim_s: list[float] = []
        left_open = 0
        started = time.perf_counter()
        for round_no in range(ROUNDS):
            gc.collect()
            clock = SimClock(hkt(BREACH_DAY, ENTRY_TIME))
            w, s, o = clock.run(_breach_round(fresh_database(), clock, round_no, folder / f"outbox-{round_no}.jsonl"))
            wall_ms += w
            sim_s += s
            left_open += o
        took = time.perf_counter() - started
        print(f"stop reaction, quote push -> exit order at the exchange, {len(wall_ms)} breaches "
              f"({ROUNDS} rounds of {PER_ROUND} positions watched at once; {took:.1f} s wall):")
        if wall_ms:
            print(f"  wall ms: p50 {_pct(wall_ms, 50):.1f}, p95 {_pct(wall_ms, 95):.1f}, max {max(wall_ms):.1f} "
                  f"(target p95 < 250)")
        print(f"  simulated seconds: max {max(sim_s, default=float('nan')):g} over {len(sim_s)} exits; "
              f"positions not exited: {left_open}")

        for positions in (5, 50):
            gc.collect()
            clock = SimClock(CALENDAR.at_local(SAMPLE_DAY, dtime(10, 0)))
            checks, rounds, closed = clock.run(_full_check_costs(fresh_database(), clock, positions, folder / f"outbox-fc{positions}.jsonl"))
            mean = statistics.mean(checks)
            print(f"full checks, {positions} open positions (real 09988 bars, {len(checks)} checks in {len(rounds)} rounds"
                  f"{f', {closed} exited on signals' if closed else ''}):")
            print(f"  per check ms: mean {mean * 1000:.1f}, p50 {_pct(checks, 50) * 1000:.1f}, p95 {_pct(checks, 95) * 1000:.1f}; "
                  f"{1 / mean:,.0f} checks/s")
            print(f"  a round of {positions} checks: first {rounds[0]:.2f} s (cold caches), then max {max(rounds[1:]):.2f} s "
                  f"= {max(rounds[1:]) / 300 * 100:.2f}% of the 300 s interval")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
