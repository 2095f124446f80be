"""The twelve tools on real parts, for test_tools.py and test_risk.py.

One cycle's ``ToolExecutor`` over the paper exchange replaying the bundled sample HKEX session
(real 09988 bars and the seeded synthetic universe), a fresh PostgreSQL database for the trading
tables and Big Bro's, the real monitor manager (no exit advisor). Everything lives inside one
``SimClock.run``:

    def test_x(database_url, tmp_path):
        async def scenario(t: Tools):
            result = await t.run("get_quote", {"symbol": "9988"})
            ...
        run_tools(database_url, tmp_path, scenario)

``run_tools`` starts at the sample session's first cycle time (09:45 HKT) unless told ``at``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable

from brokers.paper import PaperExchange
from core.clock import SimClock
from config.settings import Profile, load_profile, profile_path
from consciousness_notify import Notifier
from data.calendar import MarketCalendar, Session
from data.market import MarketData
from position_monitor import MonitorContext, MonitorManager
from runner.sessions import PaperFeed, sample_feed
from store.db import Database
from store.trading import TradingStore
from tool_executor import CycleContext, ToolExecutor, ToolResult
from engine.workflow import WorkflowTracker

CYCLE_ID = "hk_20220615_094500_abc123"


def hk_profile(env: dict[str, str] | None = None) -> Profile:
    return load_profile(profile_path("hk"), env or {})


_FEEDS: dict[str, tuple[PaperFeed, MarketCalendar]] = {}


def _feed(profile: Profile) -> tuple[PaperFeed, MarketCalendar]:
    """The sample feed (read once per profile: loading the bars is the slow part of a test)."""
    key = profile.model_dump_json()
    if key not in _FEEDS:
        calendar = MarketCalendar(profile.market)
        _FEEDS[key] = (sample_feed(profile, calendar), calendar)
    return _FEEDS[key]


def sample_session(profile: Profile | None = None) -> Session:
    feed, _ = _feed(profile or hk_profile())
    return feed.sessions[-1]


def first_cycle(profile: Profile | None = None) -> datetime:
    profile = profile or hk_profile()
    feed, calendar = _feed(profile)
    session = feed.sessions[-1]
    return calendar.at_local(session.day, min(profile.schedule.cycle_times)) + timedelta(
        minutes=profile.schedule.opening_range_minutes)


@dataclass
class Tools:
    profile: Profile
    clock: SimClock
    calendar: MarketCalendar
    exchange: PaperExchange
    db: Database
    store: TradingStore
    notifier: Notifier
    market: MarketData
    monitors: MonitorManager
    ctx: CycleContext
    executor: ToolExecutor

    async def run(self, name: str, arguments: dict[str, Any] | None = None) -> ToolResult:
        return await self.executor.run(name, arguments)

    async def ok(self, name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        result = await self.run(name, arguments)
        assert not result.is_error, f"{name} failed: {result.content}"
        return result.data

    async def error(self, name: str, arguments: dict[str, Any] | None = None) -> str:
        result = await self.run(name, arguments)
        assert result.is_error, f"{name} should have failed: {result.content}"
        data = json.loads(result.content)
        return data["error"] + ("; " + "; ".join(data["problems"]) if "problems" in data else "")

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.db.fetch(sql, *args)]

    async def broker_orders(self):
        return await self.exchange.list_orders(open_only=False)

    async def messages(self) -> list[dict[str, Any]]:
        rows = await self.rows("SELECT priority, subject, body, data FROM claude_messages ORDER BY id")
        for r in rows:
            r["data"] = json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]
        return rows


async def start_tools(database_url: str, clock: SimClock, outbox: Path, profile: Profile | None = None,
                      cycle_id: str = CYCLE_ID, brain: str = "claude") -> Tools:
    profile = profile or hk_profile()
    feed, calendar = _feed(profile)
    db = await Database(database_url, "trading").connect()
    await db.migrate("trading")
    await db.migrate("research")
    exchange = PaperExchange(feed.series, clock, calendar, profile)
    store = TradingStore(db, profile.agent_id, profile.market)
    notifier = Notifier(db, profile.agent_id, clock, outbox, run_id="tools")
    market = MarketData(exchange, clock, calendar, profile, feed.universe)
    monitors = MonitorManager(MonitorContext(broker=exchange, technicals=market, store=store, notifier=notifier,
                                             clock=clock, calendar=calendar, profile=profile, owner="tools@test"))
    tracker = WorkflowTracker(clock)
    await store.start_cycle(cycle_id, "trade", brain, clock.now())
    ctx = CycleContext(profile, clock, calendar, exchange, market, store, notifier, monitors, tracker, cycle_id, brain)
    return Tools(profile, clock, calendar, exchange, db, store, notifier, market, monitors, ctx, ToolExecutor(ctx))


async def stop_tools(tools: Tools) -> None:
    await tools.monitors.cancel()
    await tools.exchange.stop()
    await tools.db.close()


def run_tools(database_url: str, tmp_path: Path, scenario: Callable[[Tools], Awaitable[Any]],
              at: datetime | None = None, profile: Profile | None = None, cycle_id: str = CYCLE_ID) -> Any:
    clock = SimClock(at or first_cycle(profile))

    async def main():
        tools = await start_tools(database_url, clock, tmp_path / "outbox.jsonl", profile, cycle_id=cycle_id)
        try:
            return await scenario(tools)
        finally:
            await stop_tools(tools)

    return clock.run(main())
