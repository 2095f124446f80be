"""Storage on a real PostgreSQL: migrations, agent isolation, the one-open-position rule."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from brokers.base import Order, OrderPurpose, OrderStatus, OrderType
from core.instruments import Market, OrderSide, PositionSide, parse_symbol
from store.db import Database, EmbeddedPostgres, open_databases
from store.trading import DuplicateOpenPosition, TradingStore

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
DAY = date(2026, 11, 23)


async def _open(store: TradingStore, symbol: str = "HK.00700", qty: int = 100, price: str = "380"):
    return await store.open_position(
        symbol=parse_symbol(symbol), side=PositionSide.LONG, quantity=qty, entry_price=Decimal(price),
        entry_time=T0, trading_day=DAY, stop_price=Decimal("370"), target_price=Decimal("400"),
    )


async def test_migrations_apply_twice_without_error(database_url):
    db = await Database(database_url, "trading").connect()
    try:
        first = await db.migrate("trading") + await db.migrate("research")
        second = await db.migrate("trading") + await db.migrate("research")
        assert first, "the first run must apply the migrations"
        assert second == [], "the second run must find nothing to apply"
        tables = {r["table_name"] for r in await db.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema='public'")}
        assert {"cycles", "decisions", "orders", "positions", "monitor_status", "api_usage", "risk_day",
                "claude_state", "claude_messages", "claude_observations", "claude_learnings",
                "claude_questions"} <= tables
    finally:
        await db.close()


async def test_second_agent_sees_none_of_the_first_agents_rows(trading_db):
    hk = TradingStore(trading_db, "intl_claude", Market.HK)
    other = TradingStore(trading_db, "another_agent", Market.HK)
    await _open(hk)
    await hk.start_cycle("hk_20261123_100000_abcdef", "trade", "rules", T0)
    assert len(await hk.open_positions()) == 1
    assert await other.open_positions() == []
    assert await other.recent_cycles() == []
    assert await other.entries_on(DAY) == 0
    # ...and the other agent may hold the same symbol at the same time.
    await _open(other)
    assert len(await other.open_positions()) == 1


async def test_second_open_position_for_same_agent_and_symbol_is_refused(trading_db):
    store = TradingStore(trading_db, "intl_claude", Market.HK)
    await _open(store)
    with pytest.raises(DuplicateOpenPosition):
        await _open(store, "0700.HK")  # same symbol in another spelling
    assert len(await store.open_positions()) == 1


async def test_closed_position_frees_the_symbol_and_books_side_aware_pnl(trading_db):
    store = TradingStore(trading_db, "intl_claude", Market.HK)
    pos = await _open(store, qty=200, price="380")
    closed = await store.close_position(
        pos.position_id, exit_price=Decimal("390"), exit_time=T0, exit_reason="take_profit", exit_type="rule",
        exit_fees=Decimal("10"),
    )
    assert closed.status == "closed"
    assert closed.realized_pnl == Decimal("1990.0000")  # (390-380)*200 - 10
    with pytest.raises(ValueError):
        await store.close_position(pos.position_id + 0, exit_price=Decimal(0), exit_time=T0, exit_reason="x",
                                   exit_type="x", exit_fees=Decimal(0))
    await _open(store)  # the symbol can be opened again


async def test_client_order_id_is_unique_per_agent(trading_db):
    store = TradingStore(trading_db, "intl_claude", Market.HK)
    order = Order(
        broker_order_id="B1", client_order_id="hk_x_00700_1", symbol=parse_symbol("700"), side=OrderSide.BUY,
        order_type=OrderType.MARKET, quantity=100, status=OrderStatus.SUBMITTED, purpose=OrderPurpose.ENTRY,
    )
    await store.record_order(order, trading_day=DAY, at=T0, cycle_id=None, position_id=None)
    filled = order.with_(status=OrderStatus.FILLED, filled_quantity=100, avg_fill_price=Decimal("380.2"))
    await store.record_order(filled, trading_day=DAY, at=T0, cycle_id=None, position_id=None)
    rows = await store.orders()
    assert len(rows) == 1 and rows[0]["status"] == "filled" and rows[0]["filled_quantity"] == 100


async def test_monitor_lease_is_exclusive_until_it_expires(trading_db):
    store = TradingStore(trading_db, "intl_claude", Market.HK)
    pos = await _open(store)
    assert await store.claim_monitor(pos.position_id, pos.symbol, "run-a", T0, 120)
    assert not await store.claim_monitor(pos.position_id, pos.symbol, "run-b", T0, 120)
    later = T0.replace(minute=5)
    assert await store.unwatched_open_positions(later) != []  # the lease of run-a expired
    assert await store.claim_monitor(pos.position_id, pos.symbol, "run-b", later, 120)


async def test_open_databases_uses_a_server_given_by_url(make_database_url, tmp_path):
    url = make_database_url("byurl")
    dbs = await open_databases(url, None, tmp_path)
    try:
        assert dbs.embedded is None and dbs.shared
        assert await dbs.trading.fetchval("SELECT count(*) FROM claude_state") == 3
    finally:
        await dbs.close()


async def test_a_second_embedded_instance_given_by_database_url(tmp_path):
    """DATABASE_URL pointing at another PostgreSQL (a second embedded instance) is used as given."""
    other = EmbeddedPostgres(tmp_path / "second-pg")
    url = other.start()
    try:
        dbs = await open_databases(url, None, tmp_path / "unused-var")
        try:
            store = TradingStore(dbs.trading, "intl_claude", Market.HK)
            await _open(store)
            assert len(await store.open_positions()) == 1
        finally:
            await dbs.close()
        assert not (tmp_path / "unused-var" / "pg").exists(), "no embedded server may start when a URL is given"
    finally:
        other.stop()
