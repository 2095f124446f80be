"""A position monitor on real parts, for tests and the monitor bench.

Everything runs inside ``SimClock(start).run(...)``: the paper exchange replays hand-built (or
real) 1-minute bars on the simulated clock, the trading store and Big Bro's tables live in a fresh
embedded-PostgreSQL database, MarketData computes the exit technicals from the exchange's bars,
and the monitor under test is the real ``PositionExecutor``.

    series = hk_series("08001", day, levels=[("09:30", 80.0), ("10:30", 77.0)])
    async def scenario():
        h = await Harness.start(database_url, clock, {series.symbol: series}, outbox=tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, 100, stop=Decimal("78"))
            outcome = await h.run_monitor(position, until=...)
        finally:
            await h.close()
    SimClock(start).run(scenario())

``hk_series`` builds one HK session of flat 1-minute bars from a step function of prices
(``levels``) with single bars overridden (``bars``, as (open, high, low, close)); each bar replays
as open, nearer extreme, other extreme, close at +0/15/30/45 s. Board lot 100, plenty of volume
unless told otherwise.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd

from brokers.base import (
    Fill, Order, OrderPurpose, OrderRejected, OrderRequest, OrderStatus, OrderType, Timeframe,
)
from brokers.paper import PaperExchange
from core.clock import SimClock
from config.settings import MonitorSettings, PaperExchange as PaperSettings, Profile
from consciousness_notify import Notifier
from data.bars import BarSeries, empty_bars
from data.calendar import MarketCalendar
from data.market import MarketData
from engine.exit_advisor import ExitAdvisor
from core.instruments import Market, OrderSide, PositionSide, Symbol
from position_monitor import MonitorContext, MonitorOutcome, PositionExecutor, TechnicalsSource
from store.db import Database
from store.trading import PositionRecord, TradingStore

HK = Market.HK
CALENDAR = MarketCalendar(HK)
AGENT = "intl_claude"
OWNER = "test-monitor@1"
LOT = 100
VOLUME = 200_000.0          # per minute: a step fills up to 12,500 shares at 25% participation

Bar = tuple[float, float, float, float]


# --- Bars ----------------------------------------------------------------------------------------
def hkt(day: date, hhmm: str, second: int = 0) -> datetime:
    """A Hong Kong wall-clock time as an aware UTC datetime."""
    h, m = map(int, hhmm.split(":"))
    return CALENDAR.at_local(day, time(h, m, second))


def hk_series(
    code: str,
    day: date,
    levels: Sequence[tuple[str, float]],
    bars: Mapping[str, Bar] | None = None,
    volume: float | Mapping[str, float] = VOLUME,
    lot: int = LOT,
) -> BarSeries:
    """One HK session of 1-minute bars (lunch excluded, half days respected).

    ``levels``: ("HH:MM", price) steps: from that minute on, flat bars at that price.
    ``bars``: "HH:MM" -> (open, high, low, close) for single bars. ``volume``: per bar, or
    "HH:MM" -> volume for some bars (others get ``VOLUME``).
    """
    session = CALENDAR.session(day)
    if session is None:
        raise ValueError(f"{day} is not an HKEX trading day")
    steps = sorted((hkt(day, hhmm), price) for hhmm, price in levels)
    overrides = {hkt(day, hhmm): bar for hhmm, bar in (bars or {}).items()}
    volumes = {hkt(day, hhmm): v for hhmm, v in volume.items()} if isinstance(volume, Mapping) else {}
    rows = []
    grid = session.minute_grid()
    for t in grid:
        if t in overrides:
            o, hi, lo, c = overrides[t]
        else:
            price = next((p for start, p in reversed(steps) if start <= t), steps[0][1])
            o = hi = lo = c = price
        v = volumes.get(t, volume if not isinstance(volume, Mapping) else VOLUME)
        rows.append((o, hi, lo, c, float(v)))
    for t in overrides:
        if t not in grid:
            raise ValueError(f"bar at {CALENDAR.local(t):%H:%M} is outside the {day} session")
    minute = pd.DataFrame(rows, index=pd.DatetimeIndex(grid, tz="UTC"), columns=["open", "high", "low", "close", "volume"])
    minute = minute.astype(float)
    symbol = Symbol(HK, code)
    return BarSeries(symbol=symbol, name=f"test {code}", lot_size=lot, synthetic=True, minute=minute,
                     daily=empty_bars(utc_index=False))


def hk_profile(**monitor: Any) -> Profile:
    """The default HK profile with monitor settings overridden (e.g. check_interval_seconds=60)."""
    base = Profile(market=HK, agent_id=AGENT, paper=PaperSettings(starting_cash=Decimal("1000000")))
    if monitor:
        base = base.model_copy(update={"monitor": MonitorSettings(**{**base.monitor.model_dump(), **monitor})})
    return base


# --- Fakes at the edges that the real parts cannot produce on demand -------------------------------
class FlakyTechnicals:
    """MarketData's exit technicals, raising on the calls numbered in ``fail_on`` (1-based) and
    answering nonsense (a dict, as a buggy source would) on those in ``garbage_on``."""

    def __init__(self, inner: TechnicalsSource, fail_on: Iterable[int] = (), garbage_on: Iterable[int] = ()) -> None:
        self.inner = inner
        self.fail_on = set(fail_on)
        self.garbage_on = set(garbage_on)
        self.calls: list[datetime] = []
        self.clock: SimClock | None = None

    async def exit_technicals(self, position: PositionRecord):
        self.calls.append(self.clock.now() if self.clock else datetime.min)
        n = len(self.calls)
        if n in self.fail_on:
            raise RuntimeError(f"technicals feed down (call {n})")
        if n in self.garbage_on:
            return {"rsi": "n/a"}  # a buggy source: not an ExitTechnicals at all
        return await self.inner.exit_technicals(position)


# --- The harness -----------------------------------------------------------------------------------
@dataclass
class Harness:
    clock: SimClock
    profile: Profile
    calendar: MarketCalendar
    exchange: PaperExchange
    db: Database
    research: Database
    store: TradingStore
    notifier: Notifier
    market: MarketData
    ctx: MonitorContext
    outbox: Path
    own_research: bool = False
    tasks: list[asyncio.Task] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        database_url: str,
        clock: SimClock,
        series: Mapping[Symbol, BarSeries],
        outbox: Path,
        profile: Profile | None = None,
        advisor: ExitAdvisor | None = None,
        technicals: TechnicalsSource | None = None,
        research_url: str | None = None,
        owner: str = OWNER,
        exchange: PaperExchange | None = None,
    ) -> "Harness":
        """Connect and migrate a fresh database; call inside the SimClock's run. ``exchange``: a
        ready paper exchange over ``series`` (e.g. an instrumented subclass) instead of a new one."""
        profile = profile or hk_profile()
        db = await Database(database_url, "trading").connect()
        await db.migrate("trading")
        research = db
        if research_url is not None:
            research = await Database(research_url, "research").connect()
        await research.migrate("research")
        exchange = exchange or PaperExchange(dict(series), clock, CALENDAR, profile)
        store = TradingStore(db, profile.agent_id, HK)
        notifier = Notifier(research, profile.agent_id, clock, outbox, run_id="test")
        market = MarketData(exchange, clock, CALENDAR, profile, list(series))
        source = technicals or market
        if isinstance(source, FlakyTechnicals):
            source.clock = clock
        ctx = MonitorContext(broker=exchange, technicals=source, store=store, notifier=notifier, clock=clock,
                             calendar=CALENDAR, profile=profile, owner=owner, advisor=advisor)
        return cls(clock, profile, CALENDAR, exchange, db, research, store, notifier, market, ctx, outbox,
                   own_research=research_url is not None)

    async def close(self) -> None:
        """Stop everything; re-raise the first failure of an ``at()`` action (a broken test step)."""
        failures = [t.exception() for t in self.tasks if t.done() and not t.cancelled() and t.exception()]
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.exchange.stop()
        if self.own_research:
            try:
                await self.research.close()
            except Exception:  # noqa: BLE001 - the test may have dropped it
                pass
        await self.db.close()
        if failures:
            raise failures[0]

    @property
    def now(self) -> datetime:
        return self.clock.now()

    # --- entries, as tool_executor.place_entry does them --------------------------------------
    async def open_position(
        self,
        symbol: Symbol,
        quantity: int,
        stop: Decimal | None = None,
        target: Decimal | None = None,
        backstop_stop: Decimal | None = None,
    ) -> PositionRecord:
        """Buy at market on the exchange, record the fill and the position (and a backstop stop order)."""
        now = self.now
        day = self.calendar.trading_day(now)
        cid = f"test-{symbol.code}-{len(await self.store.orders()) + 1}"
        order = await self.exchange.place_order(OrderRequest(symbol, OrderSide.BUY, quantity, OrderType.MARKET, cid))
        assert order.status is OrderStatus.FILLED and order.filled_quantity == quantity, order
        await self.store.record_order(order, trading_day=day, at=now, cycle_id="test-cycle", position_id=None)
        bars = await self.market.bars(symbol, Timeframe.M1, 30)
        position = await self.store.open_position(
            symbol=symbol, side=PositionSide.LONG, quantity=quantity, entry_price=order.avg_fill_price,
            entry_time=now, trading_day=day, stop_price=stop, target_price=target, tier=2, entry_reason="test",
            entry_volume_rate=await self.market.volume_pace(symbol, bars), entry_fees=order.fees, cycle_id="test-cycle",
            entry_client_order_id=cid,
        )
        await self.store.link_order(cid, position.position_id)
        if backstop_stop is not None:
            request = OrderRequest(symbol, OrderSide.SELL, quantity, OrderType.STOP, f"{cid}-bs",
                                   stop_price=backstop_stop, purpose=OrderPurpose.BACKSTOP_STOP)
            placed = await self.exchange.place_order(request)
            await self.store.record_order(placed, trading_day=day, at=now, cycle_id="test-cycle",
                                          position_id=position.position_id)
            await self.store.set_backstop(position.position_id, "placed", [placed.broker_order_id], now)
        fresh = await self.store.position(position.position_id)
        assert fresh is not None
        return fresh

    # --- running -------------------------------------------------------------------------------
    def monitor(self, position: PositionRecord) -> PositionExecutor:
        return PositionExecutor(self.ctx, position)

    async def run_monitor(self, position: PositionRecord | PositionExecutor, until: datetime) -> MonitorOutcome:
        """Replay the exchange to ``until`` while the monitor watches; a monitor still running at
        ``until`` is cancelled (as a run ends its monitors) and its outcome so far returned."""
        monitor = position if isinstance(position, PositionExecutor) else self.monitor(position)
        self.exchange.start(until)
        task = asyncio.get_running_loop().create_task(monitor.run(), name="monitor-under-test")
        try:
            done, _ = await asyncio.wait({task}, timeout=(until - self.now).total_seconds())
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            else:
                task.result()  # a crash of the monitor fails the test here
        finally:
            await self.exchange.stop()
        return monitor.outcome

    def at(self, when: datetime, action) -> None:
        """Run ``action()`` (a coroutine function) at simulated time ``when``, alongside the monitor."""
        async def later() -> None:
            await self.clock.sleep_until(when)
            await action()
        self.tasks.append(asyncio.get_running_loop().create_task(later()))

    # --- what a trader looks at ------------------------------------------------------------------
    async def sells(self, symbol: Symbol) -> list[Fill]:
        return [f for f in await self.exchange.fills(datetime.min.replace(tzinfo=self.now.tzinfo), symbol)
                if f.side is OrderSide.SELL]

    async def exit_orders(self, symbol: Symbol) -> list[Order]:
        return [o for o in await self.exchange.list_orders(open_only=False, symbol=symbol)
                if o.side is OrderSide.SELL and o.purpose is OrderPurpose.EXIT]

    async def held(self, symbol: Symbol) -> int:
        return sum(p.quantity for p in await self.exchange.positions() if p.symbol == symbol)

    async def status_row(self, position_id: int) -> dict[str, Any]:
        rows = [r for r in await self.store.monitor_rows() if r["position_id"] == position_id]
        assert rows, f"no monitor_status row for position {position_id}"
        return rows[0]

    async def messages(self, db: Database | None = None) -> list[dict[str, Any]]:
        rows = await (db or self.research).fetch(
            "SELECT id, priority, subject, body, data, created_at FROM claude_messages ORDER BY id")
        out = []
        for r in rows:
            row = dict(r)
            row["data"] = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
            row["event"] = row["data"].get("event")
            out.append(row)
        return out

    def outbox_events(self) -> list[dict[str, Any]]:
        return outbox_events(self.outbox)

    def bid_at(self, symbol: Symbol, when: datetime) -> Decimal:
        """The bid of the replay step at ``when`` (what a market sell gets there)."""
        tape, i = self.exchange._step_at(symbol, when)  # noqa: SLF001 - the test reads the tape it built
        return tape.bids[i]


def outbox_events(path: Path) -> list[dict[str, Any]]:
    """The records waiting in a Notifier outbox file (JSON lines), oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def refuse_orders(exchange: PaperExchange, times: int, purpose: OrderPurpose = OrderPurpose.EXIT) -> list[datetime]:
    """Make the exchange refuse the next ``times`` orders of ``purpose`` (a broker hiccup); returns
    the list the refusal times are appended to."""
    place = exchange.place_order
    refused: list[datetime] = []

    async def flaky(request: OrderRequest) -> Order:
        if request.purpose is purpose and len(refused) < times:
            refused.append(exchange._clock.now())  # noqa: SLF001
            raise OrderRejected(f"order {request.client_order_id} refused: exchange busy (injected)")
        return await place(request)

    exchange.place_order = flaky  # type: ignore[method-assign]
    return refused


__all__ = [
    "AGENT", "CALENDAR", "FlakyTechnicals", "HK", "Harness", "LOT", "OWNER", "hk_series", "hkt", "refuse_orders",
    "hk_profile", "outbox_events",
]
