"""`make run`'s session through the REAL broker adapters: Moomoo (moomoo-api against fake OpenD)
and Alpaca (alpaca-py against fake Alpaca), on a simulated clock.

Each test is ``agent.main(["--force"], env, clock=SimClock(session open))`` with the broker's
variables set, so the run builds the real adapter exactly as cron's run would; the fake serves the
sample session's bars at the simulated time (see ``tests/broker_harness.py``). What is asserted
is what a trader would check afterwards: the exit code and printout, the broker's own book (the
fake's orders and positions), the trading tables and Big Bro's messages, and that both agree.

Pushes are off in these runs: a push arrives in real time and a simulated clock cannot place it
in simulated time, so ``run.build_broker`` makes a simulated run poll (``test_quotes_resume...``
below proves the pushes and their restoration on a clock that runs in real time).
"""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest

from brokers.base import OrderPurpose
from brokers.moomoo import MoomooBroker
from clock import SimClock, WallClock
from consciousness_notify import Notifier
from data.calendar import MarketCalendar
from data.market import MarketData
from instruments import Market, PositionSide, parse_symbol
from position_monitor import MonitorContext, PositionMonitor
from store.db import Database
from store.trading import TradingStore
from tests.broker_harness import (
    alpaca_env, events_for, feed, local, messages, moomoo_env, price, profile, query, run_agent, series_of,
)
from tests.fakes.fake_opend import HK, QOT_GET_SNAPSHOT, STOP_TYPES, TRD_PLACE_ORDER, Instrument

# Prices in the sample bars change every 15 s (four prices per minute bar): polling more often
# than that finds nothing new, and these runs poll (see the module docstring).
POLL_15S = {"CATALYST__MONITOR__PRICE_POLL_SECONDS": "15"}


def entries_and_exits(out: str) -> tuple[list[str], list[str]]:
    lines = [line.split() for line in out.splitlines()]
    return ([w[1] for w in lines if w and w[0] == "ENTRY"], [w[1] for w in lines if w and w[0] == "EXIT"])


def assert_orders_match_the_broker(url: str, position: dict, broker_orders: dict[str, tuple]) -> None:
    """The entry buy and the exit sell(s) of a closed position are in ``orders`` as the broker filled them.

    ``broker_orders``: client order id -> (side, filled quantity, average fill price) at the broker.
    """
    rows = query(url, "SELECT * FROM orders WHERE position_id=$1 ORDER BY order_id", position["position_id"])
    entry = [r for r in rows if r["purpose"] == "entry"]
    sells = [r for r in rows if r["side"] == "sell" and r["filled_quantity"] > 0]
    assert len(entry) == 1 and entry[0]["status"] == "filled", rows
    assert broker_orders[entry[0]["client_order_id"]] == ("buy", position["quantity"], position["entry_price"])
    assert sells, f"the exit sell was never recorded: {rows}"
    for r in sells:
        assert broker_orders[r["client_order_id"]] == ("sell", r["filled_quantity"], r["avg_fill_price"]), r
    sold = sum(r["filled_quantity"] for r in sells)
    assert sold == position["quantity"]
    assert sum(r["avg_fill_price"] * r["filled_quantity"] for r in sells) / sold == position["exit_price"]


def moomoo_book(opend) -> dict[str, tuple]:
    """The fake OpenD's paper account: remark -> (side, filled quantity, average price)."""
    acc = opend.accounts[9001]
    return {o.remark: ("buy" if o.is_buy else "sell", int(o.fill_qty), price(o.fill_price))
            for o in acc.orders.values() if o.fill_qty}


def alpaca_book(fake) -> dict[str, tuple]:
    return {o["client_order_id"]: (o["side"], int(float(o["filled_qty"])), Decimal(o["filled_avg_price"]))
            for o in fake.orders.values() if float(o["filled_qty"])}


def assert_one_cycle_recorded(url: str, out: str) -> dict:
    [cycle] = query(url, "SELECT * FROM cycles")
    assert cycle["status"] == "completed" and cycle["brain"] == "rules", cycle
    assert f"cycle {cycle['cycle_id']}: completed, rules brain" in out
    decisions = query(url, "SELECT * FROM decisions WHERE cycle_id=$1 ORDER BY decision_id", cycle["cycle_id"])
    trades = [d for d in decisions if d["decision"] == "trade"]
    assert trades and all(d["tier"] and d["entry_price"] and d["stop_price"] and d["target_price"] for d in trades)
    assert len(trades) == cycle["trades_executed"]
    return cycle


# --- 1. HK: the sample session through Moomoo (SIMULATE: no stop orders, so no broker backstop) -----
def test_hk_sample_session_trades_through_moomoo_with_no_broker_backstop(opend, database_url, tmp_path):
    f, _, session = feed("hk")
    clock = SimClock(session.open)
    opend.serve_market(f.series, now=clock.peek)

    run = run_agent(["--force"], moomoo_env(opend, database_url, tmp_path, f.universe, **POLL_15S), clock)

    assert run.code == 0, run.out + run.err
    entries, exits = entries_and_exits(run.out)
    assert entries and sorted(exits) == sorted(entries), run.out
    assert "backstop none" in run.out and "P&L: realized HKD" in run.out
    cycle = assert_one_cycle_recorded(database_url, run.out)

    # The broker's book: every order the agent sent is there with its client order id, nothing is
    # held any more, and no stop order was ever sent to a paper account that refuses them.
    book = moomoo_book(opend)
    assert {o.remark for o in opend.accounts[9001].orders.values()} == set(book)
    assert all(p.qty == 0 for p in opend.accounts[9001].positions.values())
    assert not [r for r in opend.calls_of(TRD_PLACE_ORDER) if r.c2s.orderType in STOP_TYPES]

    positions = query(database_url, "SELECT * FROM positions ORDER BY position_id")
    assert [p["symbol"] for p in positions] == entries
    for p in positions:
        assert p["status"] == "closed" and p["cycle_id"] == cycle["cycle_id"] and p["backstop_status"] == "none"
        assert p["realized_pnl"] == ((p["exit_price"] - p["entry_price"]) * p["quantity"]).quantize(Decimal("0.0001"))
        assert_orders_match_the_broker(database_url, p, book)
        seen = events_for(database_url, p["position_id"])
        assert {"ENTRY", "NO_BACKSTOP", "MONITOR_STARTED", "EXIT", "MONITOR_ENDED"} <= set(seen), seen
        [monitor] = query(database_url, "SELECT * FROM monitor_status WHERE position_id=$1", p["position_id"])
        assert monitor["checks_completed"] >= 1 and monitor["status"] == "stopped"

    by_event = {}
    for m in messages(database_url):
        assert (m["from_agent"], m["to_agent"]) == ("intl_claude", "big_bro")
        by_event.setdefault(m["event"], []).append(m)
    assert all(m["priority"] == "high" for m in by_event["EXIT"] + by_event["NO_BACKSTOP"])
    [summary] = by_event["CYCLE_SUMMARY"]
    assert summary["data"]["no_backstop"] == entries
    assert f"No broker backstop for: {', '.join(entries)}" in summary["body"]
    # The entries happened at the simulated session's time at the broker too.
    assert all(session.open <= local_time.replace(tzinfo=opend.tz) <= session.close
               for local_time in (o.created for o in opend.accounts[9001].orders.values()))


# --- 1. US: the sample session through Alpaca (a bracket order is the backstop) ---------------------
def test_us_sample_session_trades_through_alpaca_with_a_bracket_backstop(alpaca_fake, database_url, tmp_path):
    f, _, session = feed("us")
    clock = SimClock(session.open)
    alpaca_fake.serve_market(f.series, now=clock.peek)

    run = run_agent(["--force", "--market", "us"], alpaca_env(alpaca_fake, database_url, tmp_path, f.universe), clock)

    assert run.code == 0, run.out + run.err
    entries, exits = entries_and_exits(run.out)
    assert entries and sorted(exits) == sorted(entries), run.out
    assert "backstop bracket" in run.out and "P&L: realized USD" in run.out
    assert_one_cycle_recorded(database_url, run.out)
    book = alpaca_book(alpaca_fake)
    assert alpaca_fake.positions == {}, "flat at the broker: never short, nothing left"

    positions = query(database_url, "SELECT * FROM positions ORDER BY position_id")
    assert [p["symbol"] for p in positions] == entries
    for p in positions:
        assert p["status"] == "closed" and p["exit_reason"] != "backstop"
        assert_orders_match_the_broker(database_url, p, book)
        # The entry went out as ONE bracket order: take-profit limit 10% above, stop 5% below.
        [parent] = [o for o in alpaca_fake.orders.values()
                    if o["symbol"] == p["symbol"].split(".")[1] and o["order_class"] == "bracket"]
        legs = {leg["type"]: leg for leg in parent["_legs"]}
        entry = p["entry_price"]
        assert Decimal(legs["limit"]["limit_price"]) == (entry * Decimal("1.10")).quantize(Decimal("0.01"), "ROUND_UP")
        assert Decimal(legs["stop"]["stop_price"]) == (entry * Decimal("0.95")).quantize(Decimal("0.01"), "ROUND_DOWN")
        # Before the exit sold, both legs were cancelled (an exit never sells twice or goes short).
        assert {leg["status"] for leg in legs.values()} == {"canceled"}
        requests = [(r.method, r.path) for r in alpaca_fake.requests]
        exit_post = max(i for i, r in enumerate(alpaca_fake.requests) if r.method == "POST" and r.path == "/v2/orders"
                        and r.body["side"] == "sell")
        for leg in legs.values():
            assert requests.index(("DELETE", f"/v2/orders/{leg['id']}")) < exit_post
        recorded = {r["broker_order_id"]: r for r in query(database_url, "SELECT * FROM orders WHERE position_id=$1",
                                                             p["position_id"])}
        assert {recorded[leg["id"]]["status"] for leg in legs.values()} == {"cancelled"}
        assert {recorded[leg["id"]]["purpose"] for leg in legs.values()} == {"take_profit", "stop_loss"}
        assert p["backstop_status"] == "cancelled"
        seen = events_for(database_url, p["position_id"])
        assert {"ENTRY", "MONITOR_STARTED", "EXIT", "MONITOR_ENDED"} <= set(seen) and "NO_BACKSTOP" not in seen
    summaries = [m for m in messages(database_url) if m["event"] == "CYCLE_SUMMARY"]
    assert len(summaries) == 1 and summaries[0]["data"]["no_backstop"] == []
