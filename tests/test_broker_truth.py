"""Truth with the broker (SPEC sections 6 and 8) through the REAL Moomoo adapter against fake OpenD.

Partial fills, OpenD not listening, a crash between submitting and recording, trades made by hand
at the broker, monitor leases. Every run is ``agent.main`` as cron starts it, on a simulated clock
inside the sample HKEX session (``tests/broker_harness.py``), except where real time is the point
(OpenD not listening). Assertions compare three books a trader would compare: the broker's (the
fake's orders and positions), the trading tables, and Big Bro's messages.
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from moomoo.common.pb import Trd_Common_pb2

from brokers.base import OrderPurpose
from brokers.moomoo import MoomooBroker
from core.clock import SimClock
from config.settings import Secrets
from consciousness_notify import Notifier
from data.calendar import MarketCalendar
from data.market import MarketData
from core.instruments import Market, Rounding, parse_symbol, round_to_tick
from position_monitor import MonitorContext, MonitorManager
from store.trading import TradingStore
from tests.broker_harness import (
    events_for, feed, local, messages, moomoo_env, open_database, price, profile, query, run_agent,
    seed_lots_bought_at_0945, seed_open_position, series_of,
)
from tests.fakes.fake_opend import SIMULATE_ACC, TRD_MODIFY_ORDER, TRD_PLACE_ORDER
from tests.monitor_harness import hk_series
from tool_executor import CycleContext, ToolExecutor
from engine.workflow import WorkflowTracker

ALIBABA, SYNTH = parse_symbol("9988"), parse_symbol("99915")     # 99915: what `make run` enters first
POLL_15S = {"CATALYST__MONITOR__PRICE_POLL_SECONDS": "15"}


def fake_orders(opend) -> list:
    return sorted(opend.accounts[SIMULATE_ACC].orders.values(), key=lambda o: o.order_id)


def held(opend, code: str) -> float:
    position = opend.accounts[SIMULATE_ACC].positions.get(code)
    return position.qty if position else 0


# --- 2. A partial fill: 300 of 500, the rest cancelled at the fill timeout ---------------------------------
def test_partial_fill_holds_what_filled_and_the_order_says_partial(opend, database_url, tmp_path):
    hk = profile("hk")
    calendar = MarketCalendar(Market.HK)
    _, _, session = feed("hk")
    crafted = hk_series("08001", session.day, levels=[("09:30", 19.0)])    # lot 100: 500 shares fit HKD 10,000
    at = local("hk", "10:00")
    clock = SimClock(at)
    opend.serve_market({crafted.symbol: crafted}, now=clock.peek)
    opend.fill_plans_by_code["08001"] = [300]         # the market takes 300 at once, nothing more comes

    async def scenario():
        db = await open_database(database_url)
        secrets = Secrets(moomoo_host="127.0.0.1", moomoo_port=opend.port)
        broker = MoomooBroker.from_settings(hk, secrets, clock, quote_push=False)     # as a simulated run builds it
        await broker.connect()
        store = TradingStore(db, hk.agent_id, Market.HK)
        notifier = Notifier(db, hk.agent_id, clock, tmp_path / "outbox.jsonl", "partial-test")
        market = MarketData(broker, clock, calendar, hk)
        monitors = MonitorManager(MonitorContext(broker=broker, technicals=market, store=store, notifier=notifier,
                                                 clock=clock, calendar=calendar, profile=hk, owner="partial@1"))
        cycle_id = "hk_20220615_100000_abc123"
        await store.start_cycle(cycle_id, "trade", "rules", clock.now())
        ctx = CycleContext(hk, clock, calendar, broker, market, store, notifier, monitors, WorkflowTracker(clock),
                           cycle_id, "rules")
        try:
            result = await ToolExecutor(ctx).run("execute_trade", {
                "symbol": "8001", "side": "buy", "quantity": 500, "order_type": "market", "stop_loss": "18.50",
                "take_profit": "20.00", "tier": 2, "reason": "partial fill test"})
        finally:
            await monitors.cancel()
            await broker.close()
            await db.close()
        return result

    result = clock.run(scenario())

    assert not result.is_error, result.content
    traded = result.data
    assert (traded["status"], traded["requested_quantity"], traded["filled_quantity"]) == ("partial", 500, 300)
    [order] = fake_orders(opend)
    assert (order.status, order.qty, order.fill_qty) == (Trd_Common_pb2.OrderStatus_Cancelled_Part, 500, 300)
    assert held(opend, "08001") == 300
    [placed], [cancelled] = opend.call_times_of(TRD_PLACE_ORDER), opend.call_times_of(TRD_MODIFY_ORDER)
    assert cancelled - placed >= timedelta(seconds=30), "the remainder is cancelled at the paper fill timeout"
    [row] = query(database_url, "SELECT * FROM orders")
    assert (row["status"], row["quantity"], row["filled_quantity"], row["avg_fill_price"]) == (
        "cancelled", 500, 300, price(order.fill_price))
    [position] = query(database_url, "SELECT * FROM positions")
    assert (position["quantity"], position["entry_price"]) == (300, price(order.fill_price))
    assert row["position_id"] == position["position_id"]
    [entry] = [m for m in messages(database_url) if m["event"] == "ENTRY"]
    assert f"Bought 300 of 500 HK.08001 at {price(order.fill_price)}" in entry["body"]


# --- 3. OpenD is not running ---------------------------------------------------------------------------------
def test_opend_not_listening_fails_the_run_within_the_connect_timeout_and_tells_big_bro(
        closed_port, database_url, tmp_path):
    env = moomoo_env(type("Fake", (), {"port": closed_port})(), database_url, tmp_path, [ALIBABA])
    started = time.monotonic()
    run = run_agent(["--force"], env, clock=None)          # the wall clock, as cron runs it
    elapsed = time.monotonic() - started

    assert run.code == 1, run.out + run.err
    assert elapsed < 10 + 5, f"took {elapsed:.1f} s; the connect timeout is 10 s"
    assert "run failed" in run.err and f"127.0.0.1:{closed_port}" in run.err and "is OpenD running?" in run.err
    [failed] = [m for m in messages(database_url) if m["event"] == "RUN_FAILED"]
    assert failed["priority"] == "urgent" and f"127.0.0.1:{closed_port}" in failed["body"]
    [state] = query(database_url, "SELECT * FROM claude_state WHERE agent_id='intl_claude'")
    assert f"127.0.0.1:{closed_port}" in state["last_error"] and state["current_mode"] == "sleeping"
    assert query(database_url, "SELECT * FROM cycles") == [] and query(database_url, "SELECT * FROM orders") == []


# --- 5. The process dies between submitting the entry and recording it ------------------------------------
class Crash(BaseException):
    """The process dies here (nothing in the agent may catch it)."""


def test_crash_between_submit_and_record_is_recovered_with_the_real_fill_by_the_next_run(
        opend, database_url, tmp_path, monkeypatch):
    _, _, session = feed("hk")
    clock = SimClock(session.open)
    opend.serve_market(series_of("hk", ALIBABA, SYNTH), now=clock.peek)
    env = moomoo_env(opend, database_url, tmp_path, [SYNTH], **POLL_15S)
    record_order = TradingStore.record_order

    async def crash_after_submit(self, order, **kwargs):
        if order.purpose is OrderPurpose.ENTRY:
            raise Crash(f"killed after submitting {order.client_order_id}")
        return await record_order(self, order, **kwargs)

    monkeypatch.setattr(TradingStore, "record_order", crash_after_submit)
    with pytest.raises(Crash):
        run_agent(["--force"], env, clock)
    monkeypatch.setattr(TradingStore, "record_order", record_order)

    [placed] = fake_orders(opend)
    assert placed.is_buy and placed.fill_qty > 0
    [intent] = query(database_url, "SELECT * FROM orders")
    assert (intent["client_order_id"], intent["status"]) == (placed.remark, "pending_submit")
    assert query(database_url, "SELECT * FROM positions") == []

    # The next run (a heartbeat: reconcile, adopt, watch; no new entries) against the same OpenD.
    run = run_agent(["--force", "--mode", "heartbeat"], env, clock)

    assert run.code == 0, run.out + run.err
    assert "reconcile: orders confirmed" in run.out and "adopted: HK.99915" in run.out
    buys = [o for o in fake_orders(opend) if o.is_buy]
    assert buys == [placed], "the entry must never be placed a second time"
    [row] = query(database_url, "SELECT * FROM orders WHERE client_order_id=$1", placed.remark)
    assert (row["status"], row["filled_quantity"], row["avg_fill_price"], row["broker_order_id"]) == (
        "filled", placed.fill_qty, price(placed.fill_price), str(placed.order_id))
    [position] = query(database_url, "SELECT * FROM positions")
    # The crashed run's own entry: recovered with its order, cycle and the broker's real fill.
    assert (position["symbol"], position["entry_client_order_id"], position["cycle_id"]) == (
        "HK.99915", placed.remark, intent["cycle_id"])
    assert (position["quantity"], position["entry_price"]) == (placed.fill_qty, price(placed.fill_price))
    assert row["position_id"] == position["position_id"]
    assert position["status"] == "closed" and held(opend, "99915") == 0     # then watched out like any other
    [adopted] = [m for m in messages(database_url) if m["event"] == "RECONCILE" and m["data"]["action"] == "adopted"]
    assert adopted["priority"] == "high" and Decimal(adopted["data"]["avg_cost"]) == price(placed.fill_price)


# --- 6. Trades made by hand at the broker -----------------------------------------------------------------
def test_position_sold_by_hand_is_closed_at_the_brokers_price_and_one_bought_by_hand_is_adopted(
        opend, database_url, tmp_path):
    _, _, session = feed("hk")
    clock = SimClock(local("hk", "12:10"))                     # the lunch break: reconcile, nothing to watch
    opend.serve_market(series_of("hk", ALIBABA, SYNTH), now=clock.peek)
    entry_time = local("hk", "09:45")
    entry = price(series_of("hk", ALIBABA)[ALIBABA].minute.loc[entry_time, "open"])
    sold_id = asyncio.run(seed_open_position(database_url, ALIBABA, 100, entry, entry_time))
    opend.seed_position("09988", 100, float(entry))
    sale = opend.trade_by_hand("09988", "sell", 100)           # sold in the Moomoo app during the break
    lot = series_of("hk", SYNTH)[SYNTH].lot_size
    opend.seed_position("99915", lot, 32.55)                   # bought by hand earlier...
    opend.trade_by_hand("99915", "buy", lot)                   # ...and once more now, at another price
    sold_at = opend.accounts[SIMULATE_ACC].orders[sale].fill_price
    avg_cost = opend.accounts[SIMULATE_ACC].positions["99915"].cost
    assert sold_at != float(entry) and avg_cost != 32.55

    run = run_agent(["--force", "--mode", "heartbeat"], moomoo_env(opend, database_url, tmp_path, [ALIBABA, SYNTH]),
                    clock)

    assert run.code == 0, run.out + run.err
    assert "phantoms closed: HK.09988" in run.out and f"adopted: HK.99915 {2 * lot}@{price(avg_cost)}" in run.out
    [sold] = query(database_url, "SELECT * FROM positions WHERE position_id=$1", sold_id)
    assert (sold["status"], sold["exit_price"], sold["exit_type"]) == ("closed", price(sold_at), "broker")
    assert sold["exit_reason"] == "closed_at_broker", "nothing of the agent's fired: it was sold by hand"
    assert sold["realized_pnl"] == ((price(sold_at) - entry) * 100).quantize(Decimal("0.0001"))
    assert sold["exit_time"] == local("hk", "12:10")                      # when the broker filled the sale
    [bought] = query(database_url, "SELECT * FROM positions WHERE status='open'")
    assert (bought["symbol"], bought["origin"], bought["quantity"]) == ("HK.99915", "adopted", 2 * lot)
    assert bought["entry_price"] == price(avg_cost)
    day = session.day
    assert bought["stop_price"] == round_to_tick(Market.HK, price(avg_cost) * Decimal("0.95"), day, Rounding.DOWN)
    assert bought["target_price"] == round_to_tick(Market.HK, price(avg_cost) * Decimal("1.10"), day, Rounding.UP)

    told = {m["data"]["action"]: m for m in messages(database_url) if m["event"] == "RECONCILE"}
    assert set(told) == {"closed_from_broker_fills", "adopted"}
    assert all(m["priority"] == "high" for m in told.values())
    assert Decimal(told["closed_from_broker_fills"]["data"]["exit_price"]) == price(sold_at)
    assert Decimal(told["closed_from_broker_fills"]["data"]["realized_pnl"]) == sold["realized_pnl"]
    assert Decimal(told["adopted"]["data"]["avg_cost"]) == price(avg_cost)
    assert all(o.remark == "" for o in fake_orders(opend)), "reconciling never trades"


# --- 8. Monitor leases: one live process per position --------------------------------------------------------
async def seed_lease(url: str, position_id: int, symbol, owner: str, expires: datetime, now: datetime) -> None:
    db = await open_database(url)
    try:
        hk = profile("hk")
        store = TradingStore(db, hk.agent_id, Market.HK)
        assert await store.claim_monitor(position_id, symbol, owner, now, (expires - now).total_seconds()) or True
        await db.execute("UPDATE monitor_status SET lease_expires_at=$2, status='running' WHERE position_id=$1",
                         position_id, expires)
    finally:
        await db.close()


def test_a_live_lease_is_left_alone_and_an_expired_one_is_adopted_by_the_next_run(opend, database_url, tmp_path):
    start = local("hk", "11:20")
    clock = SimClock(start)
    opend.serve_market(series_of("hk", ALIBABA, SYNTH), now=clock.peek)
    entry_time = local("hk", "09:45")
    alive, dead = seed_lots_bought_at_0945(database_url, ALIBABA, SYNTH).values()
    alive_id, dead_id = alive.position_id, dead.position_id
    opend.seed_position("09988", alive.lot, float(alive.entry))
    opend.seed_position("99915", dead.lot, float(dead.entry))
    other = "intl_claude@20220615T094500-other1"            # another live run, still renewing its lease
    alive_until = start + timedelta(minutes=10)
    asyncio.run(seed_lease(database_url, alive_id, ALIBABA, other, alive_until, entry_time))
    asyncio.run(seed_lease(database_url, dead_id, SYNTH, "intl_claude@20220615T094500-dead01",
                           start - timedelta(minutes=5), entry_time))   # that run died 5 minutes ago

    run = run_agent(["--force", "--mode", "heartbeat"], moomoo_env(opend, database_url, tmp_path, [ALIBABA, SYNTH]),
                    clock)

    assert run.code == 0, run.out + run.err
    assert "adopted 1 position(s) whose monitor had stopped (HK.99915)" in run.out
    leases = {r["position_id"]: r for r in query(database_url, "SELECT * FROM monitor_status")}
    assert (leases[alive_id]["owner"], leases[alive_id]["lease_expires_at"]) == (other, alive_until)
    assert leases[alive_id]["checks_completed"] == 0
    assert leases[dead_id]["owner"].startswith("intl_claude@20220615T032000")   # this run's (started 11:20 HKT)
    assert leases[dead_id]["checks_completed"] >= 1
    positions = {p["position_id"]: p for p in query(database_url, "SELECT * FROM positions")}
    assert positions[alive_id]["status"] == "open" and held(opend, "09988") == 100
    assert positions[dead_id]["status"] == "closed" and held(opend, "99915") == 0
    assert [o.code for o in fake_orders(opend)] == ["99915"], "only the adopted position was traded"
    assert "MONITOR_STARTED" not in events_for(database_url, alive_id)
    assert {"MONITOR_STARTED", "EXIT", "MONITOR_ENDED"} <= set(events_for(database_url, dead_id))


def test_position_sold_by_hand_while_watched_is_booked_at_the_brokers_price_not_sold_again(
        opend, database_url, tmp_path):
    """The monitor's exit finds the broker holding nothing (sold in the app meanwhile): it sells
    nothing, and books the broker's own fill as the exit, saying it was closed at the broker."""
    clock = SimClock(local("hk", "11:20"))
    opend.serve_market(series_of("hk", SYNTH), now=clock.peek)
    entry_time = local("hk", "09:45")
    entry = price(series_of("hk", SYNTH)[SYNTH].minute.loc[entry_time, "open"])
    lot = series_of("hk", SYNTH)[SYNTH].lot_size
    position_id = asyncio.run(seed_open_position(database_url, SYNTH, lot, entry, entry_time))
    opend.seed_position("99915", lot, float(entry))
    opend.trade_by_hand_at(local("hk", "11:30"), "99915", "sell", lot)

    run = run_agent(["--force", "--mode", "heartbeat"], moomoo_env(opend, database_url, tmp_path, [SYNTH]), clock)

    assert run.code == 0, run.out + run.err
    [sale] = fake_orders(opend)
    sold_at = sale.created.replace(tzinfo=opend.tz)
    assert (sale.remark, sale.is_buy) == ("", False) and local("hk", "11:30") <= sold_at < local("hk", "11:31")
    assert held(opend, "99915") == 0, "sold once, by hand; the agent must not sell (or short) it again"
    [position] = query(database_url, "SELECT * FROM positions WHERE position_id=$1", position_id)
    assert (position["status"], position["exit_reason"], position["exit_type"]) == ("closed", "closed_at_broker", "broker")
    assert position["exit_price"] == price(sale.fill_price)
    assert position["realized_pnl"] == ((price(sale.fill_price) - entry) * lot).quantize(Decimal("0.0001"))
    [told] = [m for m in messages(database_url) if m["event"] == "EXIT"]
    assert told["data"]["reason"] == "closed_at_broker" and told["priority"] == "high"
