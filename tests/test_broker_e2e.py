"""`make run`'s session through the REAL broker adapters: Moomoo (moomoo-api against fake OpenD)
and Alpaca (alpaca-py against fake Alpaca), on a simulated clock.

Each test is ``agent.main(["--force"], env, clock=SimClock(session open))`` with the broker's
variables set, so the run builds the real adapter exactly as cron's run would; the fake serves the
sample session's bars at the simulated time (see ``tests/broker_harness.py``). What is asserted
is what a trader would check afterwards: the exit code and printout, the broker's own book (the
fake's orders and positions), the trading tables and Big Bro's messages, and that both agree.

Pushes are off in these runs: a push arrives in real time and a simulated clock cannot place it
in simulated time, so ``run.build_broker`` makes a simulated run poll (``test_quotes_resume...``
below proves the pushes and their restoration on a clock that runs in real time). Real-time parts
that do run here: the SDKs' own threads and sockets, OpenD's reconnects, the database; each call
to them holds simulated time still (``clock.external_io``).
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from brokers.moomoo import MoomooBroker
from core.clock import SimClock
from data.calendar import MarketCalendar
from data.market import MarketData
from core.instruments import Market, parse_symbol
from tests.broker_harness import (
    SessionWallClock, alpaca_env, watched_on_pushes, events_for, feed, gapped, local, messages, moomoo_env, price, profile, query,
    run_agent, series_of,
)
from tests.fakes.fake_opend import HK, QOT_GET_SNAPSHOT, STOP_TYPES, TRD_PLACE_ORDER
from tests.helpers import async_wait_until

pytestmark = pytest.mark.slow  # the slow lane: `make test` and CI run it, `make test-fast` does not

# Prices in the sample bars change every 15 s (four prices per minute bar): polling more often
# than that finds nothing new, and these runs poll (see the module docstring).
POLL_15S = {"CATALYST__MONITOR__PRICE_POLL_SECONDS": "15"}
# The whole sample sessions are about the broker's side (orders, backstops, bookings), not how fast
# the price guard reacts (test_position_monitor times that on each quote): a poll a minute does, and
# takes 12 and 17 s instead of 18 and 27.
POLL_60S = {"CATALYST__MONITOR__PRICE_POLL_SECONDS": "60"}


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

    run = run_agent(["--force"], moomoo_env(opend, database_url, tmp_path, f.universe, **POLL_60S), clock)

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

    run = run_agent(["--force", "--market", "us"], alpaca_env(alpaca_fake, database_url, tmp_path, f.universe, **POLL_60S), clock)

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
                    if o["symbol"] == p["symbol"].split(".")[1] and o["order_class"] == "bracket" and not o["_parent"]]
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


# --- 7. Alpaca: the bracket's take-profit leg fills at the broker ------------------------------------
def test_us_take_profit_leg_fills_at_the_broker_and_the_exit_is_booked_as_backstop(alpaca_fake, database_url, tmp_path):
    """The market gaps through the bracket's take-profit right after the entry: Alpaca fills the
    limit leg and cancels the stop leg (one cancels the other); the monitor sees the position gone
    and books the leg's fill as the exit, reason "backstop", without selling anything itself."""
    f, _, session = feed("us")
    # The symbol `--market us --force` enters (seed 1) goes 12% up from 09:47, past its +10% take-profit.
    symbol = parse_symbol("ZQX29")
    series = dict(f.series)
    series[symbol] = gapped(series[symbol], local("us", "09:47"), 1.12)
    clock = SimClock(session.open)
    alpaca_fake.serve_market(series, now=clock.peek)

    run = run_agent(["--force", "--market", "us"], alpaca_env(alpaca_fake, database_url, tmp_path, [symbol]), clock)

    assert run.code == 0, run.out + run.err
    assert entries_and_exits(run.out) == (["US.ZQX29"], ["US.ZQX29"]), run.out
    assert "EXIT  US.ZQX29 [synthetic] backstop" in run.out
    [position] = query(database_url, "SELECT * FROM positions")
    [parent] = [o for o in alpaca_fake.orders.values() if o["order_class"] == "bracket" and not o["_parent"]]
    take_profit, stop_loss = sorted(parent["_legs"], key=lambda leg: leg["type"] != "limit")
    assert (take_profit["status"], stop_loss["status"]) == ("filled", "canceled")
    assert take_profit["filled_at"] >= "2026-08-05T13:47"                       # filled when the market got there
    fill = Decimal(take_profit["filled_avg_price"])
    assert fill >= Decimal(take_profit["limit_price"])
    assert (position["status"], position["exit_reason"], position["exit_type"]) == ("closed", "backstop", "backstop")
    assert position["exit_price"] == fill and position["quantity"] == int(take_profit["filled_qty"])
    assert position["realized_pnl"] == ((fill - position["entry_price"]) * position["quantity"]).quantize(Decimal("0.0001"))
    # Nothing else was sold: the leg did the exit, and the account is flat, not short.
    sells = [o for o in alpaca_fake.orders.values() if o["side"] == "sell" and not o["_parent"]]
    assert sells == [] and alpaca_fake.positions == {}
    orders = {r["broker_order_id"]: r for r in query(database_url, "SELECT * FROM orders")}
    assert (orders[take_profit["id"]]["purpose"], orders[take_profit["id"]]["status"]) == ("take_profit", "filled")
    assert orders[take_profit["id"]]["avg_fill_price"] == fill
    assert (orders[stop_loss["id"]]["purpose"], orders[stop_loss["id"]]["status"]) == ("stop_loss", "cancelled")
    assert not [r for r in orders.values() if r["purpose"] == "exit"]
    [told] = [m for m in messages(database_url) if m["event"] == "EXIT"]
    assert told["data"]["reason"] == "backstop" and told["priority"] == "high"


# --- 4. OpenD drops every connection while a position is being watched --------------------------------
def test_hk_opend_restart_mid_monitor_quotes_resume_and_the_exit_still_happens(opend, database_url, tmp_path):
    f, _, session = feed("hk")
    clock = SimClock(session.open)
    opend.serve_market(f.series, now=clock.peek)
    symbol = parse_symbol("99915")          # the symbol `make run` enters at its first cycle
    drop = local("hk", "10:30")
    opend.drop_connections_at(drop)

    run = run_agent(["--force"], moomoo_env(opend, database_url, tmp_path, [symbol], **POLL_15S), clock)

    assert run.code == 0, run.out + run.err
    assert opend.dropped_at and opend.dropped_at[0] >= drop
    assert opend.init_connects >= 4, "both connections (quotes, trading) came back"
    [position] = query(database_url, "SELECT * FROM positions")
    assert position["status"] == "closed" and position["exit_time"] > opend.dropped_at[0], position
    polls_after = [t for t in opend.call_times_of(QOT_GET_SNAPSHOT) if t > opend.dropped_at[0]]
    assert len(polls_after) >= 10 and min(polls_after) - opend.dropped_at[0] < timedelta(minutes=1), \
        "quotes must resume within a minute of the reconnect"
    book = moomoo_book(opend)
    assert_orders_match_the_broker(database_url, position, book)
    assert all(p.qty == 0 for p in opend.accounts[9001].positions.values())


def test_quote_pushes_are_restored_after_a_reconnect_and_a_pushed_price_still_triggers_the_exit(
        opend, database_url, tmp_path):
    """The monitor on pushes (a live run): OpenD restarts mid-monitor; the adapter subscribes again on
    the new connection by itself, the next pushed price breaks the stop and the position is sold."""
    calendar = MarketCalendar(Market.HK)
    clock = SessionWallClock(calendar.at_local(datetime(2026, 1, 6).date(), datetime.min.time().replace(hour=10)))

    async def scenario():
        async with watched_on_pushes(opend, database_url, clock, profile("hk"), tmp_path / "outbox.jsonl",
                                     "push-test@1") as watched:
            broker, task = watched.broker, watched.task
            connects = opend.init_connects
            opend.drop_connections_sync()
            await async_wait_until(lambda: opend.init_connects >= connects + 2 and broker.reconnects >= 1
                                   and opend.subscribed("00700"), 10, "the adapter to reconnect and subscribe again")
            assert not task.done()
            opend.push_quote_sync(HK, "00700", 365.0)        # below the stop at 370
            outcome = await asyncio.wait_for(task, 15)
            return outcome, await watched.store.position(watched.position.position_id)

    outcome, closed = asyncio.run(scenario())

    assert outcome.closed and outcome.exit_reason == "stop_loss", outcome
    assert (closed.status, closed.exit_reason, closed.exit_price) == ("closed", "stop_loss", Decimal("365.0"))
    [sale] = [o for o in opend.accounts[9001].orders.values() if not o.is_buy]
    assert (sale.fill_qty, sale.fill_price) == (100, 365.0)
    assert opend.accounts[9001].positions["00700"].qty == 0


# --- The scan over a rate-limited broker ------------------------------------------------------------
def test_scan_volume_ratios_are_those_of_the_snapshot_moment_however_long_the_history_fetch_takes(opend):
    """OpenD allows 60 history requests per 30 s, so a scan's volume baselines take simulated (and
    real) time to fetch. Each ratio must still compare the snapshot's volume with the baseline at the
    snapshot's own minute: the same numbers the paper exchange gives at that moment."""
    from brokers.moomoo import RateLimit
    from brokers.paper import PaperExchange

    f, calendar, session = feed("hk")
    hk = profile("hk")
    symbols = [parse_symbol("9988"), parse_symbol("99900"), parse_symbol("99915")]
    series = series_of("hk", *symbols)
    at = local("hk", "09:45")

    async def ratios(broker_for, clock):
        broker = broker_for(clock)
        await broker.connect()
        try:
            views = await MarketData(broker, clock, calendar, hk).quotes(symbols)
            return {s: v.volume_ratio for s, v in views.items()}, clock.now() - at
        finally:
            await broker.close()

    moomoo_clock = SimClock(at)
    opend.serve_market(series, now=moomoo_clock.peek)
    through_moomoo, took = moomoo_clock.run(ratios(
        lambda clock: MoomooBroker("127.0.0.1", opend.port, clock=clock, quote_push=False,
                                   history_rate=RateLimit(2, 30.0)), moomoo_clock))
    paper_clock = SimClock(at)
    on_paper, _ = paper_clock.run(ratios(lambda clock: PaperExchange(series, clock, calendar, hk), paper_clock))

    assert took >= timedelta(minutes=4), "the throttled history fetch takes time"
    assert all(r is not None for r in on_paper.values())
    assert through_moomoo == pytest.approx(on_paper, rel=1e-9)
