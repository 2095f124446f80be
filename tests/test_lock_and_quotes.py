"""A price guard that keeps checking stops while the broker's quote stream is quiet (issue 26, item 9):
the real moomoo-api against the fake OpenD on a real-time clock; the pushes stop and the price moves
through the stop in the broker's snapshot only.
"""
from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from decimal import Decimal

from brokers.moomoo import MoomooBroker
from consciousness_notify import Notifier
from core.clock import WallClock
from core.instruments import Market, PositionSide, parse_symbol
from data.calendar import MarketCalendar
from data.market import MarketData
from position_monitor import MonitorContext, PositionExecutor
from store.db import Database
from store.trading import TradingStore
from tests.fakes.fake_opend import HK
from tests.helpers import async_wait_until
from tests.monitor_harness import hk_profile, hkt

HK_DAY = date(2026, 11, 23)           # a normal Monday on XHKG


class SessionWallClock(WallClock):
    """Real time, read as if it were a moment inside a session: sleeps, pushes and polls run at the
    real pace (a simulated clock cannot follow pushes), and the calendar says "open"."""

    def __init__(self, start: datetime) -> None:
        self._offset = start - super().now()

    def now(self) -> datetime:
        return super().now() + self._offset


# --- 9. the quote stream goes quiet: the price guard polls the broker ------------------------------------
def test_with_the_quote_pushes_stopped_a_price_through_the_stop_is_polled_and_sold_within_seconds(
        opend, database_url, tmp_path):
    """OpenD pushes 381.0, then nothing more (a stream down or reconnecting with its back-off); the
    price falls to 365.0 (stop 370) in the broker's snapshot only. With pushes quiet for
    ``quote_stale_seconds`` (1 s here) the monitor polls every ``price_poll_seconds`` (0.5 s) and
    sells within a few seconds, not at the next full check 5 minutes later."""
    tencent = parse_symbol("700")
    profile = hk_profile(price_poll_seconds=0.5, quote_stale_seconds=1, check_interval_seconds=300)
    calendar = MarketCalendar(Market.HK)
    clock = SessionWallClock(hkt(HK_DAY, "10:00"))
    opend.now_local = lambda: clock.now().astimezone(opend.tz).replace(tzinfo=None)
    opend.seed_position("00700", 100, 380.0)

    async def scenario():
        db = await Database(database_url, "trading").connect()
        await db.migrate("trading")
        await db.migrate("research")
        broker = MoomooBroker("127.0.0.1", opend.port, clock=clock, connect_timeout_seconds=3.0,
                              reconnect_seconds=0.3, retry_base_seconds=0.05)
        await broker.connect()
        try:
            assert broker.capabilities.supports_quote_push
            store = TradingStore(db, profile.agent_id, Market.HK)
            position = await store.open_position(
                symbol=tencent, side=PositionSide.LONG, quantity=100, entry_price=Decimal("380"),
                entry_time=clock.now(), trading_day=calendar.trading_day(clock.now()), stop_price=Decimal("370"),
                target_price=Decimal("400"))
            ctx = MonitorContext(broker=broker, technicals=MarketData(broker, clock, calendar, profile), store=store,
                                 notifier=Notifier(db, profile.agent_id, clock, tmp_path / "outbox.jsonl", "quiet-test"),
                                 clock=clock, calendar=calendar, profile=profile, owner="quiet-test@1")
            monitor = PositionExecutor(ctx, position)
            task = asyncio.get_running_loop().create_task(monitor.run())
            await async_wait_until(lambda: opend.subscribed("00700"), 10, "the monitor's quote subscription")
            opend.push_quote_sync(HK, "00700", 381.0)
            await async_wait_until(lambda: monitor.last_quote is not None and monitor.last_quote.price == Decimal("381.0"),
                                   10, "the monitor to see the pushed 381.0")
            opend.set_price(HK, "00700", 365.0)     # below the stop, and no push tells of it
            moved = clock.now()
            try:
                outcome = await asyncio.wait_for(asyncio.shield(task), 6)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise AssertionError("no exit within 6 s of the price moving through the stop while pushes were quiet")
            return outcome, moved, await store.position(position.position_id)
        finally:
            await broker.close()
            await db.close()

    outcome, moved, closed = asyncio.run(scenario())

    assert outcome.closed and outcome.exit_reason == "stop_loss", outcome
    assert (closed.status, closed.exit_price) == ("closed", Decimal("365.0"))
    assert closed.exit_time - moved < timedelta(seconds=4), "polled within quote_stale_seconds + a poll or two"
    [sale] = [o for o in opend.accounts[9001].orders.values() if not o.is_buy]
    assert (sale.fill_qty, sale.fill_price) == (100, 365.0)
