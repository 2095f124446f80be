"""Money safe when things go wrong (issue 26, items 1-3, 5 and 10), through the real adapters.

* A crash between the bracket entry and its recorded fill: the next run recognises the entry by its
  client order id, attaches the bracket's live legs as the backstop, and a close cancels them before
  it sells: the account is never short (alpaca-py against the fake Alpaca).
* An exit never sells what orders placed outside the agent may still sell.
* A position adopted at reconcile is protected at the broker, or Big Bro hears NO_BACKSTOP.
* A stop-loss sells while PostgreSQL is down, and is booked once, with the broker's price, when it
  is back (the monitor harness: paper exchange, the database behind a proxy that is cut).
* A close_all that fails at the run's start is kept and retried until the position is flat.
* A position sold by hand is noticed at the next full check and booked at the broker's fill time.

Runs are ``agent.main`` as cron starts it, on a simulated clock (``tests/broker_harness.py``).
"""
from __future__ import annotations

import asyncio
from datetime import date, timedelta
from decimal import Decimal

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest

from brokers.base import OrderPurpose
from brokers.orders import OrderWaiter
from core.clock import SimClock
from core.instruments import parse_symbol
from signals import ExitReason
from tests.broker_harness import (
    alpaca_env, held_since_0945, local, messages, moomoo_env, query, run_agent, seed_lots_bought_at_0945,
    series_of,
)
from tests.fakes.fake_opend import SIMULATE_ACC, TRD_PLACE_ORDER
from tests.fakes.pg_proxy import PgProxy
from tests.monitor_harness import Harness, hk_profile, hk_series, hkt

ZQX29 = parse_symbol("ZQX29")           # what `agent.py --force --market us` enters first (universe seed 1)
SYNTH = parse_symbol("99915")           # what `make run` enters first on HK
POLL_15S = {"CATALYST__MONITOR__PRICE_POLL_SECONDS": "15"}


class Crash(BaseException):
    """The process dies here (kill -9: nothing in the agent may catch it)."""


def crash_while_awaiting_the_entry_fill(monkeypatch) -> None:
    """The run dies after the entry went out and was recorded ``submitted``, before its fill is recorded."""
    until_final = OrderWaiter.until_final

    async def die_on_entries(self, order, timeout_seconds, **kwargs):
        if order.purpose is OrderPurpose.ENTRY:
            raise Crash(f"killed while awaiting the fill of {order.client_order_id}")
        return await until_final(self, order, timeout_seconds, **kwargs)

    monkeypatch.setattr(OrderWaiter, "until_final", die_on_entries)


def alpaca_held(fake, code: str) -> float:
    position = fake.positions.get(code)
    return float(position["qty"]) if position else 0.0


# --- 1. A crash between the bracket entry and its recorded fill ----------------------------------------------
def test_a_crashed_bracket_entry_is_adopted_with_its_live_legs_and_a_close_never_leaves_the_account_short(
        alpaca_fake, database_url, tmp_path, monkeypatch):
    f = series_of("us", ZQX29)
    clock = SimClock(local("us", "09:30"))
    alpaca_fake.serve_market(f, now=clock.peek)
    env = alpaca_env(alpaca_fake, database_url, tmp_path, [ZQX29])
    with monkeypatch.context() as patch:
        crash_while_awaiting_the_entry_fill(patch)
        with pytest.raises(Crash):
            run_agent(["--force", "--market", "us"], env, clock)
    [parent] = [o for o in alpaca_fake.orders.values() if o["order_class"] == "bracket" and not o["_parent"]]
    shares = float(parent["filled_qty"])
    assert parent["status"] == "filled" and shares > 0 and alpaca_held(alpaca_fake, "ZQX29") == shares
    assert {leg["status"] for leg in parent["_legs"]} == {"new"}, "the legs work at the broker"
    [entry_row] = query(database_url, "SELECT * FROM orders")
    assert entry_row["client_order_id"] == parent["client_order_id"] and entry_row["position_id"] is None

    run = run_agent(["--force", "--market", "us", "--mode", "close"], env, clock)

    assert run.code == 0, run.out + run.err
    assert "close: 1 of 1 position(s) closed" in run.out
    [position] = query(database_url, "SELECT * FROM positions")
    assert (position["origin"], position["entry_client_order_id"]) == ("agent", parent["client_order_id"]), \
        "the crashed run's own entry, recognised by its client order id"
    assert position["status"] == "closed" and position["backstop_status"] == "cancelled"
    legs = {leg["id"]: leg for leg in parent["_legs"]}
    assert {leg["status"] for leg in legs.values()} == {"canceled"}, "the legs were cancelled before the sale"
    recorded = {r["broker_order_id"]: r for r in query(database_url, "SELECT * FROM orders WHERE position_id=$1",
                                                         position["position_id"])}
    assert set(legs) <= set(recorded) and {recorded[i]["purpose"] for i in legs} == {"take_profit", "stop_loss"}
    stop_leg = next(leg for leg in legs.values() if leg["type"] == "stop")
    alpaca_fake.set_price("ZQX29", float(stop_leg["stop_price"]) * 0.9)   # the market falls through the old stop
    assert alpaca_held(alpaca_fake, "ZQX29") == 0, "flat, never short"
    sells = [o for o in alpaca_fake.orders.values() if o["side"] == "sell" and o["status"] == "filled"]
    assert sum(float(o["filled_qty"]) for o in sells) == shares, "sold exactly what was bought"


# --- 1. An exit never sells what other working orders may still sell ------------------------------------------
def test_an_exit_leaves_alone_the_shares_a_working_order_placed_by_hand_may_sell(
        alpaca_fake, database_url, tmp_path):
    clock = SimClock(local("us", "10:00"))
    alpaca_fake.serve_market(series_of("us", ZQX29), now=clock.peek)
    entry = Decimal("10.00")
    asyncio.run(seed_us_position(database_url, 100, entry, local("us", "09:45")))
    alpaca_fake.set_position("ZQX29", 100, float(entry))
    trader = TradingClient(alpaca_fake.api_key, alpaca_fake.secret_key, paper=True, url_override=alpaca_fake.base_url)
    by_hand = trader.submit_order(LimitOrderRequest(symbol="ZQX29", qty=60, side=AlpacaSide.SELL,
                                                    time_in_force=TimeInForce.DAY, limit_price=99))

    run = run_agent(["--force", "--market", "us", "--mode", "close"],
                    alpaca_env(alpaca_fake, database_url, tmp_path, [ZQX29]), clock)

    assert run.code == 0, run.out + run.err
    sells = [o for o in alpaca_fake.orders.values() if o["side"] == "sell" and o["id"] != str(by_hand.id)]
    assert [float(o["qty"]) for o in sells] == [40.0], "only the 40 shares no other order offers"
    assert alpaca_fake.orders[str(by_hand.id)]["status"] == "new", "the trader's own order is left alone"
    assert alpaca_held(alpaca_fake, "ZQX29") == 60
    [position] = query(database_url, "SELECT * FROM positions")
    [sale] = sells
    assert (position["status"], position["quantity"]) == ("closed", 40), "booked what the agent sold"
    assert position["exit_price"] == Decimal(sale["filled_avg_price"])
    assert position["realized_pnl"] == ((position["exit_price"] - entry) * 40).quantize(Decimal("0.0001"))
    [told] = [m for m in messages(database_url) if m["event"] == "EXIT"]
    assert "60 left to 1 working order(s) placed outside the agent" in told["body"]
    alpaca_fake.set_price("ZQX29", 100.0)                          # the trader's limit fills
    assert alpaca_held(alpaca_fake, "ZQX29") == 0, "flat, never short"


async def seed_us_position(url: str, quantity: int, entry: Decimal, at) -> int:
    from config.settings import load_profile, profile_path
    from core.instruments import Market, PositionSide
    from store.trading import TradingStore
    from tests.broker_harness import open_database

    us = load_profile(profile_path("us"), {})
    db = await open_database(url)
    try:
        store = TradingStore(db, us.agent_id, Market.US)
        position = await store.open_position(
            symbol=ZQX29, side=PositionSide.LONG, quantity=quantity, entry_price=entry, entry_time=at,
            trading_day=at.date(), stop_price=entry * Decimal("0.97"), target_price=entry * Decimal("1.05"), tier=2,
            entry_client_order_id="us-test-entry-1")
        return position.position_id
    finally:
        await db.close()


# --- 2. An adopted position is protected at the broker, or Big Bro hears it is not --------------------------
def test_shares_bought_by_hand_are_adopted_with_a_broker_stop_where_the_broker_takes_stops(
        alpaca_fake, database_url, tmp_path):
    clock = SimClock(local("us", "10:00"))
    alpaca_fake.serve_market(series_of("us", ZQX29), now=clock.peek)
    alpaca_fake.set_position("ZQX29", 70, 10.0)

    run = run_agent(["--force", "--market", "us", "--mode", "heartbeat"],
                    alpaca_env(alpaca_fake, database_url, tmp_path, [ZQX29],
                               CATALYST__MONITOR__CHECK_INTERVAL_SECONDS="60"), clock)

    assert run.code == 0, run.out + run.err
    [stop] = [o for o in alpaca_fake.orders.values() if o["type"] == "stop"]
    assert (stop["side"], float(stop["qty"]), Decimal(stop["stop_price"])) == ("sell", 70.0, Decimal("9.50"))
    [position] = query(database_url, "SELECT * FROM positions")
    assert position["origin"] == "adopted" and stop["id"] in position["backstop_order_ids"]
    [adopted] = [m for m in messages(database_url) if m["event"] == "RECONCILE"]
    assert "backstop stop 9.5" in adopted["body"]


def test_shares_bought_by_hand_are_adopted_and_big_bro_hears_no_backstop_where_the_broker_takes_no_stops(
        opend, database_url, tmp_path):
    clock = SimClock(local("hk", "12:10"))                 # the lunch break: reconcile, nothing to watch
    opend.serve_market(series_of("hk", SYNTH), now=clock.peek)
    lot = series_of("hk", SYNTH)[SYNTH].lot_size
    opend.seed_position("99915", lot, 32.55)

    run = run_agent(["--force", "--mode", "heartbeat"], moomoo_env(opend, database_url, tmp_path, [SYNTH]), clock)

    assert run.code == 0, run.out + run.err
    [position] = query(database_url, "SELECT * FROM positions")
    assert (position["origin"], position["backstop_status"]) == ("adopted", "none")
    [warning] = [m for m in messages(database_url) if m["event"] == "NO_BACKSTOP"]
    assert warning["data"]["position_id"] == position["position_id"]
    assert "accepts no stop orders" in warning["body"]


# --- 3. A stop-loss sells while the database is down, and is booked once when it is back -----------------
MONDAY = date(2026, 11, 23)                 # an ordinary HKEX day


def test_a_stop_sells_at_once_while_the_database_is_down_and_is_booked_once_when_it_is_back(database_url, tmp_path):
    from store.journal import ExitJournal

    series = hk_series("08001", MONDAY, levels=[("09:30", 80.0), ("10:30", 76.0)])
    proxy = PgProxy(database_url)
    proxy.up()
    journal_path = tmp_path / "exit-journal.jsonl"
    seen: dict = {}

    async def scenario():
        h = await Harness.start(proxy.url(), clock, {series.symbol: series}, tmp_path / "outbox.jsonl",
                                profile=hk_profile(check_interval_seconds=60))
        h.ctx.journal = ExitJournal(journal_path, h.profile.agent_id, clock)
        try:
            position = await h.open_position(series.symbol, 100, stop=Decimal("78"), backstop_stop=Decimal("70"))

            async def cut():
                proxy.down()

            h.at(hkt(MONDAY, "10:29"), cut)
            seen["outcome"] = await h.run_monitor(position, until=hkt(MONDAY, "10:40"))   # closed on its stop
            await clock.sleep_until(hkt(MONDAY, "10:31", 30))       # 150 s without the database
            seen["sells_while_down"] = await h.sells(series.symbol)
            seen["journal_while_down"] = h.ctx.journal.pending()
            proxy.up()
            # The process died before it could write the booking: the next run's start writes the journal.
            seen["written"] = await ExitJournal(journal_path, h.profile.agent_id, clock).flush(h.store, force=True)
            seen["again"] = await ExitJournal(journal_path, h.profile.agent_id, clock).flush(h.store, force=True)
            return position, await h.sells(series.symbol)
        finally:
            await h.close()

    clock = SimClock(hkt(MONDAY, "10:00"))
    try:
        position, sells = clock.run(scenario())
    finally:
        proxy.close()

    [sale] = seen["sells_while_down"]
    assert hkt(MONDAY, "10:30") <= sale.time <= hkt(MONDAY, "10:30", 10), "sold on the stop, the database down"
    assert seen["journal_while_down"] > 0 and seen["outcome"].closed
    assert sells == [sale], "sold once"
    [row] = query(database_url, "SELECT * FROM positions")
    assert (row["status"], row["exit_reason"], row["exit_type"]) == ("closed", ExitReason.STOP_LOSS.value, "rule")
    assert row["exit_price"] == sale.price and row["exit_fees"] == sale.fees
    assert row["realized_pnl"] == ((sale.price - row["entry_price"]) * 100 - row["entry_fees"] - sale.fees
                                   ).quantize(Decimal("0.0001"))
    orders = {r["purpose"]: r for r in query(database_url, "SELECT * FROM orders WHERE position_id=$1",
                                              row["position_id"])}
    assert (orders["exit"]["status"], orders["exit"]["filled_quantity"]) == ("filled", 100)
    assert orders["stop_loss"]["status"] == "cancelled"
    assert seen["again"] == 0 and not journal_path.read_text().strip(), "written once, nothing left"


# --- 5. A close_all that fails at the run's start is kept until the position is flat -----------------------
def test_a_close_all_refused_at_the_start_is_retried_by_the_run_until_the_position_is_flat(
        opend, database_url, tmp_path):
    from tests.cli_harness import big_bro_sends

    start = local("hk", "10:00")
    clock = SimClock(start)
    opend.serve_market(series_of("hk", SYNTH), now=clock.peek)
    position_id = held_since_0945(opend, database_url, SYNTH).position_id
    [close_all] = big_bro_sends(database_url, "intl_claude", "close_all")
    opend.fail_next[TRD_PLACE_ORDER] = "exchange busy (injected)"     # the first sale is refused

    run = run_agent(["--force", "--mode", "heartbeat"], moomoo_env(opend, database_url, tmp_path, [SYNTH], **POLL_15S),
                    clock)

    assert run.code == 0, run.out + run.err
    [position] = query(database_url, "SELECT * FROM positions WHERE position_id=$1", position_id)
    assert (position["status"], position["exit_reason"]) == ("closed", ExitReason.CLOSE_ALL.value)
    assert position["exit_time"] - start < timedelta(minutes=2), "retried at once, not left to the rules"
    assert opend.accounts[SIMULATE_ACC].positions.get("99915") is None or \
        opend.accounts[SIMULATE_ACC].positions["99915"].qty == 0
    [answer] = query(database_url, "SELECT subject, body FROM claude_messages WHERE reply_to_id=$1", close_all)
    assert "NOT done" in answer["subject"]
    assert "this run's monitor keeps trying until the position is flat" in answer["body"]


# --- 10. A position sold by hand is noticed at the next full check, booked at the broker's time -------------
def test_a_position_sold_by_hand_is_noticed_within_a_full_check_and_booked_at_the_brokers_fill_time(
        opend, database_url, tmp_path):
    clock = SimClock(local("hk", "11:20"))
    opend.serve_market(series_of("hk", SYNTH), now=clock.peek)
    held = held_since_0945(opend, database_url, SYNTH)
    position_id = held.position_id
    sold_by_hand = local("hk", "11:30")
    opend.trade_by_hand_at(sold_by_hand, "99915", "sell", held.lot)

    run = run_agent(["--force", "--mode", "heartbeat"], moomoo_env(opend, database_url, tmp_path, [SYNTH], **POLL_15S),
                    clock)

    assert run.code == 0, run.out + run.err
    [sale] = [o for o in opend.accounts[SIMULATE_ACC].orders.values()]
    filled_at = sale.updated.replace(tzinfo=opend.tz)
    [position] = query(database_url, "SELECT * FROM positions WHERE position_id=$1", position_id)
    assert (position["status"], position["exit_reason"]) == ("closed", "closed_at_broker")
    assert position["exit_time"] == filled_at, "the broker's fill time, not the moment it was noticed"
    [told] = [m for m in messages(database_url) if m["event"] == "EXIT"]
    noticed = query(database_url, "SELECT created_at FROM claude_messages WHERE id=$1", told["id"])[0]["created_at"]
    assert noticed - sold_by_hand <= timedelta(seconds=300 + 15), "noticed at the next full check"


# --- 1. A short found at the broker is adopted as a short, loudly -------------------------------------------
def test_a_short_at_the_broker_is_adopted_with_a_shorts_stop_and_target_urgently_and_covered_not_doubled(
        alpaca_fake, database_url, tmp_path):
    clock = SimClock(local("us", "15:52"))                 # after the end-of-day exit time: it is closed at once
    alpaca_fake.serve_market(series_of("us", ZQX29), now=clock.peek)
    alpaca_fake.set_position("ZQX29", -50, 10.0)           # the state issue 26 found after a stop leg fired

    run = run_agent(["--force", "--market", "us", "--mode", "heartbeat"],
                    alpaca_env(alpaca_fake, database_url, tmp_path, [ZQX29]), clock)

    assert run.code == 0, run.out + run.err
    [position] = query(database_url, "SELECT * FROM positions")
    assert (position["side"], position["quantity"], position["origin"]) == ("short", 50, "adopted")
    assert position["stop_price"] > position["entry_price"] > position["target_price"], "a short's levels"
    [adopted] = [m for m in messages(database_url) if m["event"] == "RECONCILE"]
    assert adopted["priority"] == "urgent" and "never sells short" in adopted["body"]
    [stop] = [o for o in alpaca_fake.orders.values() if o["type"] == "stop"]
    assert stop["side"] == "buy" and Decimal(stop["stop_price"]) > Decimal("10"), "the backstop buys above"
    assert alpaca_held(alpaca_fake, "ZQX29") == 0, "covered once: flat, not long"


# --- 3. A full disk does not block the sale either -------------------------------------------------------
def test_an_exit_journal_that_cannot_be_written_keeps_its_records_and_the_database_gets_them(database_url, tmp_path):
    """var/ unwritable (its path runs through a regular file, a real failure even as root): recording the
    exit never raises, so the sale is not blocked; the records wait in memory and the next flush writes
    them, in order."""
    from datetime import datetime, timezone

    from brokers.base import Order, OrderStatus, OrderType
    from core.instruments import Market, OrderSide, PositionSide
    from store.journal import ExitJournal
    from store.trading import TradingStore
    from tests.broker_harness import open_database

    (tmp_path / "var").write_text("a regular file where the var folder should be")
    full = tmp_path / "var" / "exit-journal-intl_claude.jsonl"
    at = datetime(2026, 11, 23, 2, 30, tzinfo=timezone.utc)
    clock = SimClock(at)
    symbol = parse_symbol("700")

    async def scenario():
        db = await open_database(database_url)
        try:
            store = TradingStore(db, "intl_claude", Market.HK)
            position = await store.open_position(
                symbol=symbol, side=PositionSide.LONG, quantity=100, entry_price=Decimal("380"), entry_time=at,
                trading_day=at.date(), stop_price=Decimal("370"), target_price=Decimal("400"))
            journal = ExitJournal(full, "intl_claude", clock)
            sale = Order("b-1", "e-1-x1", symbol, OrderSide.SELL, OrderType.MARKET, 100, OrderStatus.FILLED,
                         filled_quantity=100, avg_fill_price=Decimal("369.8"), fees=Decimal("12.5"))
            journal.record_order(sale, trading_day=at.date(), at=at, cycle_id=None, position_id=position.position_id)
            journal.close_position(position.position_id, exit_price=Decimal("369.8"), exit_time=at,
                                   exit_reason="stop_loss", exit_type="rule", exit_fees=Decimal("12.5"))
            pending = journal.pending()
            written = await journal.flush(store)
            return pending, written, await store.position(position.position_id)
        finally:
            await db.close()

    pending, written, booked = clock.run(scenario())

    assert (pending, written) == (2, 2)
    assert (booked.status, booked.exit_price, booked.exit_reason) == ("closed", Decimal("369.8"), "stop_loss")
    [row] = query(database_url, "SELECT status, filled_quantity FROM orders WHERE client_order_id='e-1-x1'")
    assert (row["status"], row["filled_quantity"]) == ("filled", 100)


def test_the_next_run_writes_a_dead_runs_exit_journal_before_it_reconciles(opend, database_url, tmp_path):
    """A run sold on its stop with the database down and died before the database came back: its exit is
    only in var/exit-journal-<agent>.jsonl. The next run (a heartbeat) books it as the stop it was, before
    reconcile could take the position for one sold outside the agent (or missing)."""
    from store.journal import ExitJournal

    clock = SimClock(local("hk", "11:20"))
    opend.serve_market(series_of("hk", SYNTH), now=clock.peek)
    position_id = seed_lots_bought_at_0945(database_url, SYNTH)[SYNTH].position_id   # the broker holds none now
    sold_at = local("hk", "11:05")
    dead_run = ExitJournal(tmp_path / "exit-journal-intl_claude.jsonl", "intl_claude", SimClock(sold_at))
    dead_run.close_position(position_id, exit_price=Decimal("32.10"), exit_time=sold_at, exit_reason="stop_loss",
                            exit_type="rule", exit_fees=Decimal("21.35"))

    run = run_agent(["--force", "--mode", "heartbeat"], moomoo_env(opend, database_url, tmp_path, [SYNTH]), clock)

    assert run.code == 0, run.out + run.err
    [position] = query(database_url, "SELECT * FROM positions WHERE position_id=$1", position_id)
    assert (position["status"], position["exit_reason"], position["exit_type"]) == ("closed", "stop_loss", "rule")
    assert (position["exit_price"], position["exit_time"]) == (Decimal("32.10"), sold_at)
    assert not [m for m in messages(database_url) if m["event"] == "RECONCILE"], "nothing for reconcile to put right"
    assert not (tmp_path / "exit-journal-intl_claude.jsonl").read_text().strip(), "written once"
