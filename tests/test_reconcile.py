"""reconcile.py: the database put right against the broker at a run's start, as a trader reads it after.

The broker is the paper exchange replaying the real 09988 bars of 2022-06-15 on the simulated
clock; what happened "while the agent was down" is done at the exchange directly (a sale by hand,
shares bought in the broker's app). The database is the embedded PostgreSQL.
"""
from __future__ import annotations

from datetime import date, time
from decimal import Decimal

from brokers.base import Order, OrderPurpose, OrderRequest, OrderType
from brokers.paper import PaperExchange
from core.clock import SimClock
from consciousness_notify import Notifier
from data.bars import load_samples
from data.calendar import MarketCalendar
from core.instruments import Market, OrderSide, PositionSide, Symbol
from runner.reconcile import Reconciler
from store.db import Database
from store.trading import TradingStore
from tests.helpers import agent_messages, async_wait_until, hk_settings, query

AGENT = "intl_claude"
DAY = date(2022, 6, 15)
ALIBABA = Symbol(Market.HK, "09988")
CALENDAR = MarketCalendar(Market.HK)


async def trade(exchange: PaperExchange, side: OrderSide, quantity: int, client_order_id: str,
                purpose: OrderPurpose = OrderPurpose.ENTRY) -> Order:
    """A market order at the exchange, once it is filled."""
    placed = await exchange.place_order(OrderRequest(ALIBABA, side, quantity, OrderType.MARKET, client_order_id,
                                                     purpose=purpose))

    async def filled():
        order = await exchange.get_order(placed.broker_order_id)
        return order if order.status.is_final else None

    order = await async_wait_until(filled, timeout=600, interval=1, what=f"the fill of {client_order_id}")
    assert order.filled_quantity == quantity, order
    return order


def reconcile_twice(database_url, tmp_path, before_the_run):
    """``before_the_run(exchange, store, clock)`` leaves the broker and the database as a stopped run and
    the trader did; then two runs start, one after the other, and reconcile. Returns both reports."""
    _, settings = hk_settings(database_url, tmp_path / "var", ["--force"])
    profile = settings.profile
    clock = SimClock(CALENDAR.at_local(DAY, time(10, 0)))

    async def scenario():
        exchange = PaperExchange(load_samples(Market.HK), clock, CALENDAR, profile)
        exchange.start(until=CALENDAR.session(DAY).close)
        db = await Database(database_url, "trading").connect()
        try:
            await db.migrate("trading")
            await db.migrate("research")
            store = TradingStore(db, AGENT, Market.HK)
            await before_the_run(exchange, store, clock)
            reports = []
            for run in ("run-a", "run-b"):
                notifier = Notifier(db, AGENT, clock, tmp_path / f"outbox-{run}.jsonl", run)
                reports.append(await Reconciler(exchange, store, notifier, clock, CALENDAR, profile).run())
                await clock.sleep(60)
            return reports
        finally:
            await exchange.stop()
            await db.close()

    return clock.run(scenario())


async def our_entry(exchange, store, clock, quantity: int = 100):
    bought = await trade(exchange, OrderSide.BUY, quantity, "intl-e1")
    await store.record_order(bought, trading_day=DAY, at=clock.now(), cycle_id=None, position_id=None)
    return bought, await store.open_position(
        symbol=ALIBABA, side=PositionSide.LONG, quantity=quantity, entry_price=bought.avg_fill_price,
        entry_time=clock.now(), trading_day=DAY, stop_price=Decimal("100"), target_price=Decimal("120"),
        entry_fees=bought.fees, entry_client_order_id="intl-e1")


def test_a_position_sold_at_the_broker_while_the_agent_was_down_is_booked_once_at_the_brokers_price(
        database_url, tmp_path):
    sold: list[Order] = []

    async def sold_by_hand(exchange, store, clock):
        await our_entry(exchange, store, clock)
        await clock.sleep(20 * 60)  # the agent is down; the trader sells in the broker's app
        sold.append(await trade(exchange, OrderSide.SELL, 100, "by-hand-1", OrderPurpose.EXIT))

    first, second = reconcile_twice(database_url, tmp_path, sold_by_hand)

    [position] = query(database_url, "SELECT * FROM positions WHERE agent_id=$1", AGENT)
    assert position["status"] == "closed" and position["exit_reason"] == "closed_at_broker"
    assert position["exit_price"] == sold[0].avg_fill_price > 0
    assert position["exit_type"] == "broker" and position["realized_pnl"] is not None
    expected = (position["exit_price"] - position["entry_price"]) * 100 - position["entry_fees"] - position["exit_fees"]
    assert position["realized_pnl"] == expected.quantize(Decimal("0.0001"))
    assert first.phantoms_closed == ["HK.09988"] and first.changes == 1
    # the second run finds nothing to change, books nothing again and tells Big Bro nothing new
    assert second.changes == 0 and second.summary() == "database and broker agree"
    reconcile = [m for m in agent_messages(database_url) if m["data"]["event"] == "RECONCILE"]
    assert [m["subject"] for m in reconcile] == [f"09988 closed at the broker: booked at {sold[0].avg_fill_price:.4f}"]
    assert reconcile[0]["data"]["action"] == "closed_from_broker_fills"


def test_a_position_sold_by_its_own_backstop_order_says_backstop(database_url, tmp_path):
    async def stopped_out(exchange, store, clock):
        _, position = await our_entry(exchange, store, clock)
        await clock.sleep(20 * 60)
        backstop = await trade(exchange, OrderSide.SELL, 100, "intl-bs1", OrderPurpose.BACKSTOP_STOP)
        await store.set_backstop(position.position_id, "placed", [backstop.broker_order_id], clock.now())

    first, second = reconcile_twice(database_url, tmp_path, stopped_out)

    [position] = query(database_url, "SELECT status, exit_reason FROM positions WHERE agent_id=$1", AGENT)
    assert (position["status"], position["exit_reason"]) == ("closed", "backstop")
    assert (first.changes, second.changes) == (1, 0)


def test_shares_bought_outside_the_agent_are_adopted_at_their_real_cost_once(database_url, tmp_path):
    bought: list[Order] = []

    async def bought_in_the_app(exchange, store, clock):
        bought.append(await trade(exchange, OrderSide.BUY, 200, "in-the-app-1"))

    first, second = reconcile_twice(database_url, tmp_path, bought_in_the_app)

    [position] = query(database_url, "SELECT * FROM positions WHERE agent_id=$1", AGENT)
    avg_cost = position["entry_price"]
    assert position["status"] == "open" and position["quantity"] == 200 and position["origin"] == "adopted"
    assert abs(avg_cost - bought[0].avg_fill_price) < Decimal("0.01")  # the broker's average cost, fees aside
    # backstop levels (5% under, 10% over the cost, on the tick grid): the position is protected at once
    assert avg_cost * Decimal("0.94") < position["stop_price"] <= avg_cost * Decimal("0.95")
    assert avg_cost * Decimal("1.10") <= position["target_price"] < avg_cost * Decimal("1.11")
    [adopted] = first.adopted
    assert adopted.startswith("HK.09988 200@") and Decimal(adopted.split("@")[1]) == avg_cost
    assert second.changes == 0, "adopted twice"
    reconcile = [m for m in agent_messages(database_url) if m["data"]["event"] == "RECONCILE"]
    assert [m["data"]["action"] for m in reconcile] == ["adopted"]
    subject = reconcile[0]["subject"]
    assert subject.startswith("Adopted 09988 200 @ ") and Decimal(subject.split("@ ")[1]) == avg_cost


def test_a_different_quantity_at_the_broker_is_corrected_in_place(database_url, tmp_path):
    async def bought_more_by_hand(exchange, store, clock):
        await our_entry(exchange, store, clock)
        await trade(exchange, OrderSide.BUY, 100, "in-the-app-2")

    first, second = reconcile_twice(database_url, tmp_path, bought_more_by_hand)

    positions = query(database_url, "SELECT position_id, status, quantity FROM positions WHERE agent_id=$1", AGENT)
    assert [(p["status"], p["quantity"]) for p in positions] == [("open", 200)], "one position, not close-and-reopen"
    assert first.quantity_fixed == ["HK.09988 100->200"] and second.changes == 0
