"""The whole agent against the fake brokers, for test_broker_e2e.py and test_broker_truth.py.

A run is ``agent.main(argv, env, clock)`` exactly as cron starts it, with ``MOOMOO_HOST/PORT`` (HK)
or ``ALPACA_*`` (US) pointing at the fake on 127.0.0.1, so ``run.build_broker`` builds the REAL
adapter (moomoo-api / alpaca-py inside). The fake serves the sample session's bars at the run's
simulated time (``serve_market(series, now=clock.peek)``), the same bars ``make run`` replays on
the paper exchange: the real 09988 (HK) or AAPL/MSFT (US) plus the seeded synthetic universe.

A real broker has no "universe": the run scans the symbols configured under ``scan.indices``
(``CATALYST__SCAN__INDICES``), here the symbols the fake lists.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import AsyncIterator, Iterable

import agent
from core.clock import Clock, WallClock
from config.settings import Profile, load_profile, profile_path
from data.bars import BarSeries
from data.calendar import MarketCalendar, Session
from core.instruments import Market, PositionSide, Symbol
from runner.sessions import PaperFeed, sample_feed
from store.db import Database
from store.trading import TradingStore
from tests.helpers import query

# The broker scenarios were written on US universe seed 1 (one entry on the US sample session, whose
# take-profit and exit the Alpaca tests script); they pin it whatever the profile's demo seed is.
US_UNIVERSE_SEED = "1"


@lru_cache(maxsize=None)
def profile(market: str) -> Profile:
    env = {"CATALYST__PAPER__UNIVERSE_SEED": US_UNIVERSE_SEED} if market == "us" else {}
    return load_profile(profile_path(market), env)


@lru_cache(maxsize=None)
def feed(market: str) -> tuple[PaperFeed, MarketCalendar, Session]:
    """The bars of ``make run`` (``--market us`` with seed 1): real symbols plus the synthetic universe."""
    p = profile(market)
    calendar = MarketCalendar(p.market)
    f = sample_feed(p, calendar)
    return f, calendar, f.sessions[-1]


def local(market: str, hhmm: str, day: date | None = None) -> datetime:
    """A market-local wall-clock time on the sample session's day, as aware UTC."""
    _, calendar, session = feed(market)
    h, m = map(int, hhmm.split(":"))
    return calendar.at_local(day or session.day, time(h, m))


@dataclass
class Run:
    code: int
    out: str
    err: str


def run_agent(argv: Iterable[str], env: dict[str, str], clock: Clock | None) -> Run:
    """``agent.main`` in this process, its printout captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = agent.main(list(argv), env=env, clock=clock)
    return Run(code, out.getvalue(), err.getvalue())


def base_env(database_url: str, var_dir: Path, scan: Iterable[Symbol], **extra: str) -> dict[str, str]:
    var_dir.mkdir(parents=True, exist_ok=True)
    return {"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(var_dir), "CATALYST_LOG_DIR": str(var_dir / "logs"),
            "ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": "",
            "CATALYST__SCAN__INDICES": json.dumps({"ALL": [str(s) for s in scan]}), **extra}


def moomoo_env(opend, database_url: str, var_dir: Path, scan: Iterable[Symbol], **extra: str) -> dict[str, str]:
    return {**base_env(database_url, var_dir, scan, **extra), "MOOMOO_HOST": "127.0.0.1", "MOOMOO_PORT": str(opend.port)}


def alpaca_env(fake, database_url: str, var_dir: Path, scan: Iterable[Symbol], **extra: str) -> dict[str, str]:
    return {**base_env(database_url, var_dir, scan, **extra), "ALPACA_API_KEY": fake.api_key,
            "ALPACA_SECRET_KEY": fake.secret_key, "ALPACA_BASE_URL": fake.base_url, "ALPACA_DATA_URL": fake.base_url}


def series_of(market: str, *symbols: Symbol) -> dict[Symbol, BarSeries]:
    f, _, _ = feed(market)
    return {s: f.series[s] for s in symbols} if symbols else dict(f.series)


# --- The database, as a trader (or Big Bro) reads it afterwards ------------------------------------
def messages(url: str) -> list[dict]:
    rows = query(url, "SELECT id, from_agent, to_agent, msg_type, priority, subject, body, data FROM claude_messages "
                      "ORDER BY id")
    for r in rows:
        r["data"] = json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]
        r["event"] = r["data"].get("event") if isinstance(r["data"], dict) else None  # a malformed one
    return rows


def events_for(url: str, position_id: int) -> list[str]:
    return [m["event"] for m in messages(url) if m["data"].get("position_id") == position_id]


def price(value: float) -> Decimal:
    """A fake's float price as the adapters read it (shortest repr)."""
    return Decimal(repr(float(value)))


async def open_database(url: str) -> Database:
    """The trading database at ``url``, migrated (trading and research tables)."""
    db = await Database(url, "trading").connect()
    await db.migrate("trading")
    await db.migrate("research")
    return db


async def seed_open_position(url: str, symbol, quantity: int, entry: Decimal, at: datetime, **extra) -> int:
    """An open HK long in the database only (stop 3% under, target 5% over): what a run left behind."""
    db = await open_database(url)
    try:
        hk = profile("hk")
        store = TradingStore(db, hk.agent_id, Market.HK)
        position = await store.open_position(
            symbol=symbol, side=PositionSide.LONG, quantity=quantity, entry_price=entry, entry_time=at,
            trading_day=at.date(), stop_price=(entry * Decimal("0.97")).quantize(Decimal("0.01")),
            target_price=(entry * Decimal("1.05")).quantize(Decimal("0.01")), tier=2, **extra)
        return position.position_id
    finally:
        await db.close()


@dataclass(frozen=True)
class Seeded:
    position_id: int
    entry: Decimal
    lot: int


def seed_lots_bought_at_0945(database_url: str, *symbols: Symbol) -> dict[Symbol, Seeded]:
    """One board lot of each symbol bought at the 09:45 open of the HK sample session, in the
    database only (the test says what the broker holds)."""
    entry_time = local("hk", "09:45")
    bars = series_of("hk", *symbols)
    seeded = {}
    for symbol in symbols:
        entry, lot = price(bars[symbol].minute.loc[entry_time, "open"]), bars[symbol].lot_size
        seeded[symbol] = Seeded(asyncio.run(seed_open_position(database_url, symbol, lot, entry, entry_time)), entry, lot)
    return seeded


def held_since_0945(opend, database_url: str, symbol: Symbol) -> Seeded:
    """``seed_lots_bought_at_0945`` of one symbol, and the fake OpenD holding that lot too."""
    seeded = seed_lots_bought_at_0945(database_url, symbol)[symbol]
    opend.seed_position(symbol.code, seeded.lot, float(seeded.entry))
    return seeded


def gapped(series: BarSeries, at: datetime, factor: float) -> BarSeries:
    """The same bars, every price from ``at`` on multiplied by ``factor`` (on the cent grid)."""
    minute = series.minute.copy()
    later = minute.index >= at
    for column in ("open", "high", "low", "close"):
        minute.loc[later, column] = (minute.loc[later, column] * factor).round(2)
    return dataclasses.replace(series, minute=minute)


class SessionWallClock(WallClock):
    """Real time, read as if it were a moment inside a session: sleeps, pushes and polls run at the
    real pace (a simulated clock cannot follow pushes), and the calendar says "open"."""

    def __init__(self, start: datetime) -> None:
        self._offset = start - super().now()

    def now(self) -> datetime:
        return super().now() + self._offset


@dataclass
class WatchedOnPushes:
    """A 100-share 00700 long (entry 380, stop 370) watched by a real monitor on OpenD's quote pushes."""

    broker: object
    store: TradingStore
    position: object
    monitor: object
    task: asyncio.Task


@contextlib.asynccontextmanager
async def watched_on_pushes(opend, database_url: str, clock: Clock, profile: Profile, outbox: Path,
                            owner: str) -> AsyncIterator[WatchedOnPushes]:
    """The position in the trading tables and at the fake OpenD, its monitor started and subscribed and
    its first pushed price (381.0) seen; the database and the broker closed afterwards."""
    from brokers.moomoo import MoomooBroker
    from consciousness_notify import Notifier
    from data.market import MarketData
    from position_monitor import MonitorContext, PositionExecutor
    from tests.fakes.fake_opend import HK
    from tests.helpers import async_wait_until

    calendar = MarketCalendar(Market.HK)
    opend.now_local = lambda: clock.now().astimezone(opend.tz).replace(tzinfo=None)
    opend.seed_position("00700", 100, 380.0)
    db = await open_database(database_url)
    broker = MoomooBroker("127.0.0.1", opend.port, clock=clock, connect_timeout_seconds=3.0,
                          reconnect_seconds=0.3, retry_base_seconds=0.05)
    await broker.connect()
    try:
        assert broker.capabilities.supports_quote_push
        store = TradingStore(db, profile.agent_id, Market.HK)
        position = await store.open_position(
            symbol=Symbol(Market.HK, "00700"), side=PositionSide.LONG, quantity=100, entry_price=Decimal("380"),
            entry_time=clock.now(), trading_day=calendar.trading_day(clock.now()), stop_price=Decimal("370"),
            target_price=Decimal("400"))
        ctx = MonitorContext(broker=broker, technicals=MarketData(broker, clock, calendar, profile), store=store,
                             notifier=Notifier(db, profile.agent_id, clock, outbox, owner.split("@")[0]),
                             clock=clock, calendar=calendar, profile=profile, owner=owner)
        monitor = PositionExecutor(ctx, position)
        task = asyncio.get_running_loop().create_task(monitor.run())
        await async_wait_until(lambda: opend.subscribed("00700"), 10, "the monitor's quote subscription")
        opend.push_quote_sync(HK, "00700", 381.0)
        await async_wait_until(lambda: monitor.last_quote is not None and monitor.last_quote.price == Decimal("381.0"),
                               10, "the monitor to see the pushed 381.0")
        yield WatchedOnPushes(broker, store, position, monitor, task)
    finally:
        await broker.close()
        await db.close()

