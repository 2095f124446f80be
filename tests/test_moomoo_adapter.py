"""MoomooBroker driving the real moomoo SDK against the fake OpenD on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import SecretStr

from brokers.base import (
    BAR_COLUMNS,
    BrokerError,
    Disconnected,
    InsufficientFunds,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Timeframe,
    UnknownSymbol,
)
from brokers.moomoo import MoomooBroker, TradingEnvironment
from brokers.moomoo_limits import RateLimit, SlidingWindowLimiter
from brokers.moomoo_sdk import load_sdk, restore_sigint
from brokers.moomoo_wire import map_order_status
from core.clock import SimClock, WallClock
from core.instruments import Market, OrderSide, PositionSide, parse_symbol, tick_size
from tests.fakes.fake_opend import (
    HK,
    INIT_CONNECT,
    REAL_ACC,
    TRD_GET_FUNDS,
    TRD_PLACE_ORDER,
    TRD_UNLOCK,
    QOT_GET_SNAPSHOT,
    QOT_REQ_HISTORY_KL,
    SIMULATE_STOP_REFUSAL,
    Instrument,
)
from tests.helpers import async_wait_until

TENCENT, PICC = parse_symbol("700"), parse_symbol("2328")
HKT = timezone(timedelta(hours=8))


@contextlib.asynccontextmanager
async def connected(fake, **options):
    options.setdefault("clock", WallClock())
    options.setdefault("connect_timeout_seconds", 3.0)
    options.setdefault("retry_base_seconds", 0.01)
    options.setdefault("reconnect_seconds", 0.3)
    broker = MoomooBroker("127.0.0.1", fake.port, **options)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


def market_buy(coid: str, quantity: int = 100, symbol=TENCENT) -> OrderRequest:
    return OrderRequest(symbol, OrderSide.BUY, quantity, OrderType.MARKET, coid)


# --- market data --------------------------------------------------------------------------------
async def test_snapshot_reads_board_lot_from_broker_and_tick_from_spread_table(opend):
    async with connected(opend) as broker:
        snaps = await broker.snapshots([TENCENT, PICC])
    today = datetime.now(HKT).date()
    assert snaps[PICC].lot_size == 2000                      # never assumed 100
    assert snaps[TENCENT].lot_size == 100
    assert snaps[PICC].tick == tick_size(Market.HK, Decimal("15.84"), today) == Decimal("0.01")
    assert snaps[TENCENT].tick == Decimal("0.2")
    quote = snaps[PICC].quote
    assert (quote.price, quote.bid, quote.ask) == (Decimal("15.84"), Decimal("15.83"), Decimal("15.85"))
    assert quote.time.tzinfo is not None and quote.time.utcoffset() == timedelta(0)
    assert len(opend.calls_of(QOT_GET_SNAPSHOT)) == 1            # both codes in one request


async def test_snapshots_are_batched_at_400_codes(opend):
    codes = [f"{n:05d}" for n in range(10001, 10451)]
    for code in codes:
        opend.instruments[(HK, code)] = Instrument(HK, code, f"S{code}", 500, 12.0, 11.9)
    async with connected(opend) as broker:
        snaps = await broker.snapshots([parse_symbol(c) for c in codes])
    assert len(snaps) == 450
    assert [len(r.c2s.securityList) for r in opend.calls_of(QOT_GET_SNAPSHOT)] == [400, 50]


async def test_unknown_symbol_names_the_code(opend):
    async with connected(opend) as broker:
        with pytest.raises(UnknownSymbol, match="99999"):
            await broker.snapshots([parse_symbol("99999")])


async def test_history_bars_are_paged_and_indexed_by_open_time_in_utc(opend):
    start = datetime(2026, 1, 5, 9, 30, tzinfo=HKT)
    async with connected(opend, history_page_size=25) as broker:
        bars = await broker.bars(TENCENT, Timeframe.M1, start, start + timedelta(minutes=90))
    requests = opend.calls_of(QOT_REQ_HISTORY_KL)
    assert len(requests) >= 4 and requests[1].c2s.HasField("nextReqKey")
    assert list(bars.columns) == BAR_COLUMNS and len(bars) == 90
    assert bars.index[0] == datetime(2026, 1, 5, 1, 30, tzinfo=timezone.utc)   # 09:30 HKT, Futu key 09:31
    assert bars.index[-1] == datetime(2026, 1, 5, 2, 59, tzinfo=timezone.utc)
    inst = opend.instruments[(HK, "00700")]
    _, o, h, l, c, v = opend.bar_at(inst, datetime(2026, 1, 5, 9, 31), 1)
    assert bars.iloc[0].tolist() == pytest.approx([round(o, 3), round(h, 3), round(l, 3), round(c, 3), v])


async def test_hourly_bars_respect_the_short_bar_before_lunch(opend):
    start = datetime(2026, 1, 5, 9, 30, tzinfo=HKT)
    async with connected(opend) as broker:
        bars = await broker.bars(TENCENT, Timeframe.H1, start, start + timedelta(hours=7))
    opens_hkt = [t.astimezone(HKT).strftime("%H:%M") for t in bars.index]
    assert opens_hkt == ["09:30", "10:30", "11:30", "13:00", "14:00", "15:00"]


def test_bars_never_include_a_bar_that_has_not_closed(opend):
    now = datetime(2026, 1, 5, 10, 0, 30, tzinfo=HKT)
    opend.now_local = lambda: now.replace(tzinfo=None)
    clock = SimClock(now)

    async def main():
        async with connected(opend, clock=clock) as broker:
            return await broker.bars(TENCENT, Timeframe.M1, datetime(2026, 1, 5, 9, 30, tzinfo=HKT),
                                     now + timedelta(hours=1))

    bars = clock.run(main())
    assert bars.index[-1] == datetime(2026, 1, 5, 1, 59, tzinfo=timezone.utc)   # 09:59 bar closed at 10:00
    assert len(bars) == 30


def test_todays_daily_bar_is_withheld_until_the_session_is_over(opend):
    now = datetime(2026, 1, 5, 10, 0, tzinfo=HKT)                 # a Monday morning
    opend.now_local = lambda: now.replace(tzinfo=None)
    clock = SimClock(now)

    async def main():
        async with connected(opend, clock=clock) as broker:
            return await broker.bars(TENCENT, Timeframe.D1, datetime(2026, 1, 1, tzinfo=HKT), now + timedelta(days=1))

    bars = clock.run(main())
    assert bars.index[-1] == datetime(2026, 1, 1, 16, tzinfo=timezone.utc)   # Friday 2 January, HKT midnight


def test_snapshots_stay_within_60_calls_per_30_seconds(opend):
    clock = SimClock(datetime(2026, 1, 5, 10, 0, tzinfo=HKT))

    async def main():
        async with connected(opend, clock=clock) as broker:
            started = clock.now()
            for _ in range(61):
                await broker.snapshots([TENCENT])
            return (clock.now() - started).total_seconds()

    assert clock.run(main()) >= 30.0
    assert len(opend.calls_of(QOT_GET_SNAPSHOT)) == 61


async def test_daily_bars_index_local_midnight_in_utc(opend):
    async with connected(opend) as broker:
        bars = await broker.bars(TENCENT, Timeframe.D1, datetime(2026, 1, 4, 16, tzinfo=timezone.utc),
                                 datetime(2026, 1, 9, 16, tzinfo=timezone.utc))
    assert [t.isoformat() for t in bars.index] == [f"2026-01-0{d}T16:00:00+00:00" for d in (4, 5, 6, 7, 8)]


# --- orders -------------------------------------------------------------------------------------
async def test_market_order_fills_and_carries_client_order_id_in_remark(opend):
    async with connected(opend) as broker:
        order = await broker.place_order(market_buy("hk_20260105_093000_abc123-00700-1", 200))
    assert order.status is OrderStatus.FILLED and order.filled_quantity == 200
    assert order.avg_fill_price == Decimal("380.0") and order.order_type is OrderType.MARKET
    assert order.symbol == TENCENT and order.side is OrderSide.BUY
    assert order.client_order_id == "hk_20260105_093000_abc123-00700-1"
    assert opend.order_by_remark("hk_20260105_093000_abc123-00700-1").order_id == int(order.broker_order_id)


async def test_placing_the_same_client_order_id_twice_places_one_order(opend):
    async with connected(opend) as broker:
        first = await broker.place_order(market_buy("cycle-1-00700-1"))
        again = await broker.place_order(market_buy("cycle-1-00700-1"))
    async with connected(opend) as restarted:                 # a new process after a crash
        after_restart = await restarted.place_order(market_buy("cycle-1-00700-1"))
        found = await restarted.find_order("cycle-1-00700-1")
    assert first.broker_order_id == again.broker_order_id == after_restart.broker_order_id == found.broker_order_id
    assert opend.placements() == 1


async def test_odd_lot_is_refused_locally_with_the_board_lot(opend):
    async with connected(opend) as broker:
        with pytest.raises(OrderRejected, match="board lot 100"):
            await broker.place_order(market_buy("odd-1", 150))
        with pytest.raises(OrderRejected, match="board lot 2000"):
            await broker.place_order(market_buy("odd-2", 1000, PICC))
    assert opend.placements() == 0


async def test_limit_price_off_the_tick_grid_is_refused_locally(opend):
    request = OrderRequest(TENCENT, OrderSide.BUY, 100, OrderType.LIMIT, "tick-1", limit_price=Decimal("380.1"))
    async with connected(opend) as broker:
        with pytest.raises(OrderRejected, match="tick grid"):
            await broker.place_order(request)
    assert opend.placements() == 0


async def test_partial_fill_then_cancel_keeps_the_filled_part(opend):
    opend.fill_plans["partial-1"] = [300]
    request = OrderRequest(TENCENT, OrderSide.BUY, 500, OrderType.LIMIT, "partial-1", limit_price=Decimal("380.0"))
    async with connected(opend) as broker:
        placed = await broker.place_order(request)
        cancelled = await broker.cancel_order(placed.broker_order_id)
        fills = await broker.fills(datetime.now(timezone.utc) - timedelta(hours=1))
        positions = await broker.positions()
    assert placed.status is OrderStatus.PARTIALLY_FILLED and placed.filled_quantity == 300
    assert cancelled.status is OrderStatus.CANCELLED
    assert (cancelled.filled_quantity, cancelled.remaining) == (300, 200)
    assert [(f.quantity, f.price) for f in fills] == [(300, Decimal("380.0"))]
    assert [(p.symbol, p.quantity) for p in positions] == [(TENCENT, 300)]


async def test_cancelling_a_filled_order_returns_it_unchanged(opend):
    async with connected(opend) as broker:
        filled = await broker.place_order(market_buy("filled-1"))
        again = await broker.cancel_order(filled.broker_order_id)
    assert again.status is OrderStatus.FILLED and again.filled_quantity == 100


async def test_stop_order_on_simulate_is_refused_with_the_reason(opend):
    request = OrderRequest(TENCENT, OrderSide.SELL, 100, OrderType.STOP, "stop-1", stop_price=Decimal("361.0"))
    async with connected(opend) as broker:
        assert broker.capabilities.supports_stop_orders is False
        assert broker.capabilities.is_paper is True
        with pytest.raises(OrderRejected, match="stop orders are not supported.*SIMULATE.*no broker-side backstop"):
            await broker.place_order(request)
    assert opend.placements() == 0


async def test_fake_refuses_paper_stop_orders_like_opend(opend):
    """The fake itself must refuse, or the adapter's refusal above would be untested against it."""
    request = OrderRequest(TENCENT, OrderSide.SELL, 100, OrderType.STOP, "stop-2", stop_price=Decimal("361.0"))
    async with connected(opend, supports_stop_orders=True) as broker:
        with pytest.raises(OrderRejected, match="only supports limit orders"):
            await broker.place_order(request)
    assert SIMULATE_STOP_REFUSAL.startswith("Paper trading")


async def test_real_account_unlocks_and_rests_a_stop_that_fills_when_price_trades_through(opend):
    opend.accounts[REAL_ACC].positions.clear()
    async with connected(opend, trd_env=TradingEnvironment.REAL, live=True,
                         trade_password=SecretStr("123456")) as broker:
        assert broker.capabilities.supports_stop_orders and not broker.capabilities.is_paper
        await broker.place_order(market_buy("real-entry-1"))
        stop = await broker.place_order(OrderRequest(TENCENT, OrderSide.SELL, 100, OrderType.STOP, "real-stop-1",
                                                     stop_price=Decimal("361.0")))
        assert stop.status is OrderStatus.SUBMITTED and stop.stop_price == Decimal("361.0")
        opend.push_quote_sync(HK, "00700", 360.0)
        final = await broker.get_order(stop.broker_order_id)
        fills = await broker.fills(datetime.now(timezone.utc) - timedelta(hours=1))
    assert final.status is OrderStatus.FILLED and final.avg_fill_price == Decimal("360.0")
    assert sorted((f.side, f.quantity) for f in fills) == [(OrderSide.BUY, 100), (OrderSide.SELL, 100)]
    assert all(f.fill_id.startswith("800") for f in fills)          # deal ids from the deal list


async def test_wrong_trade_password_never_appears_in_errors_or_logs(opend, caplog):
    caplog.set_level(logging.DEBUG)
    opend.fail_next[TRD_UNLOCK] = "Password error: hunter2-secret rejected"
    with pytest.raises(BrokerError, match="refused to unlock") as raised:
        async with connected(opend, trd_env="REAL", live=True, trade_password=SecretStr("hunter2-secret")):
            pass
    assert "hunter2-secret" not in str(raised.value)
    assert "hunter2-secret" not in caplog.text
    assert len(opend.calls_of(TRD_UNLOCK)) == 1                    # never retried: it would lock the account


async def test_built_from_profile_and_secrets_as_the_agent_does(opend):
    from config.settings import Profile, Secrets

    profile = Profile(market="HK", agent_id="intl_claude")
    secrets = Secrets(moomoo_host="127.0.0.1", moomoo_port=opend.port, moomoo_trade_pwd=SecretStr("123456"))
    paper = MoomooBroker.from_settings(profile, secrets, WallClock(), live=False)
    live = MoomooBroker.from_settings(profile, secrets, WallClock(), live=True)
    assert (paper.trd_env, paper.market, paper.capabilities.is_paper) == (TradingEnvironment.SIMULATE, Market.HK, True)
    assert (live.trd_env, live.capabilities.supports_stop_orders) == (TradingEnvironment.REAL, True)
    await live.connect()
    try:
        assert opend.unlocked                                      # the password from the secrets unlocked it
    finally:
        await live.close()
    assert "123456" not in repr(live)


def test_real_environment_needs_live(opend):
    with pytest.raises(ValueError, match="live=True"):
        MoomooBroker("127.0.0.1", opend.port, clock=WallClock(), trd_env="REAL")


async def test_broker_rejection_is_final_and_insufficient_funds_is_typed(opend):
    opend.fail_next[TRD_PLACE_ORDER] = "Insufficient buying power"
    async with connected(opend) as broker:
        with pytest.raises(InsufficientFunds, match="Insufficient buying power"):
            await broker.place_order(market_buy("funds-1"))
    assert opend.placements() == 1


async def test_rate_limit_answer_is_retried_without_placing_twice(opend):
    opend.fail_next[TRD_PLACE_ORDER] = "Order frequency too high, please try later"
    async with connected(opend) as broker:
        order = await broker.place_order(market_buy("retry-1"))
    assert order.status is OrderStatus.FILLED
    assert opend.placements() == 2 and len(opend.accounts[9001].orders) == 1


async def test_transient_read_failure_is_retried(opend):
    opend.fail_next[TRD_GET_FUNDS] = ["Network timeout", "Network timeout"]
    async with connected(opend) as broker:
        account = await broker.account()
    assert account.equity == Decimal("1000000.0")
    assert len(opend.calls_of(TRD_GET_FUNDS)) == 3


def test_burst_of_orders_never_exceeds_15_per_30_seconds_at_opend(opend):
    clock = SimClock(datetime(2026, 1, 5, 10, 0, tzinfo=HKT))

    async def main():
        opend.clock = asyncio.get_running_loop().time          # the fake stamps placements in virtual time
        async with connected(opend, clock=clock) as broker:
            started = clock.now()
            await asyncio.gather(*(broker.place_order(market_buy(f"burst-{n}")) for n in range(20)))
            return (clock.now() - started).total_seconds()

    elapsed = clock.run(main())
    stamps = sorted(opend.accounts[9001].placement_times)
    assert opend.placements() == 20
    assert opend.max_placements_in_window(window=30.0) <= 15
    assert elapsed >= 30.0
    assert min(b - a for a, b in zip(stamps, stamps[1:])) >= 0.02


def test_order_limiter_spaces_calls_on_a_simulated_clock():
    clock = SimClock(datetime(2026, 1, 5, tzinfo=timezone.utc))

    async def main():
        limiter = SlidingWindowLimiter(RateLimit(3, 10.0, min_interval_seconds=1.0, safety_margin_seconds=0), clock)
        stamps = []
        for _ in range(5):
            await limiter.acquire()
            stamps.append((clock.now() - datetime(2026, 1, 5, tzinfo=timezone.utc)).total_seconds())
        return stamps

    assert clock.run(main()) == pytest.approx([0, 1, 2, 10, 11], abs=0.01)


# --- connection ---------------------------------------------------------------------------------
async def test_absent_opend_fails_fast_naming_host_and_port(closed_port):
    broker = MoomooBroker("127.0.0.1", closed_port, clock=WallClock(), connect_timeout_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(Disconnected) as raised:
        await asyncio.wait_for(broker.connect(), 10)
    elapsed = time.monotonic() - started
    assert f"127.0.0.1:{closed_port}" in str(raised.value) and "within 1 s" in str(raised.value)
    assert "is OpenD running?" in str(raised.value)
    assert elapsed < 5.0


async def test_silent_listener_fails_within_the_connect_timeout():
    """Something accepts TCP on the port but never speaks the OpenD protocol (a hung OpenD)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)                                         # handshakes complete; nobody answers
        port = silent.getsockname()[1]
        broker = MoomooBroker("127.0.0.1", port, clock=WallClock(), connect_timeout_seconds=1.0)
        started = time.monotonic()
        with pytest.raises(Disconnected, match=f"cannot reach Moomoo OpenD at 127.0.0.1:{port} within 1 s"):
            await asyncio.wait_for(broker.connect(), 10)
        assert time.monotonic() - started < 5.0


async def test_trade_connection_never_blocks_past_the_connect_timeout(opend):
    """OpenSecTradeContext has no is_async_connect: its own constructor would sleep 6 s and retry
    (and the SDK never retries a context whose InitConnect was refused, so connect must fail)."""
    opend.fail_next[INIT_CONNECT] = [None, "OpenD is busy"]     # quote connects; trade's first try fails
    broker = MoomooBroker("127.0.0.1", opend.port, clock=WallClock(), connect_timeout_seconds=1.0)
    started = time.monotonic()
    with pytest.raises(Disconnected, match=f"cannot reach Moomoo OpenD at 127.0.0.1:{opend.port} within 1 s"):
        await asyncio.wait_for(broker.connect(), 15)
    assert time.monotonic() - started < 3.0
    # The SDK cannot close such a context fully; its callback thread must not keep the process alive.
    leftovers = [t for t in threading.enumerate() if not t.daemon
                 and getattr(getattr(t, "_target", None), "__qualname__", "") == "CallbackExecutor.run"]
    assert leftovers == []


async def test_quotes_resume_after_opend_drops_the_connection(opend):
    received = []
    async with connected(opend) as broker:
        broker.subscribe_quotes([TENCENT], received.append)
        await async_wait_until(lambda: opend.subscribed("00700"), 5, "the quote subscription at OpenD")
        opend.push_quote_sync(HK, "00700", 381.0)
        await async_wait_until(lambda: len(received) == 1, 5, "the first pushed quote")

        connects_before = opend.init_connects
        opend.drop_connections_sync()
        await async_wait_until(lambda: opend.init_connects >= connects_before + 2 and opend.subscribed("00700"), 10,
                               "the adapter to reconnect and subscribe again")
        await async_wait_until(lambda: broker.reconnects >= 1, 5, "the adapter to count its reconnect")
        opend.push_quote_sync(HK, "00700", 382.4)
        await async_wait_until(lambda: len(received) == 2, 5, "the quote pushed after the reconnect")
    assert [q.price for q in received] == [Decimal("381.0"), Decimal("382.4")]
    assert all(q.symbol == TENCENT for q in received)


async def test_order_push_delivers_the_fill_on_the_event_loop_thread(opend):
    pushed = []
    loop_thread = threading.get_ident()
    request = OrderRequest(TENCENT, OrderSide.BUY, 100, OrderType.LIMIT, "push-1", limit_price=Decimal("370.0"))
    async with connected(opend) as broker:
        broker.subscribe_orders(lambda order: pushed.append((order, threading.get_ident())))
        resting = await broker.place_order(request)
        assert resting.status is OrderStatus.SUBMITTED
        opend.fill(resting.broker_order_id, price=370.0)
        await async_wait_until(lambda: any(o.status is OrderStatus.FILLED for o, _ in pushed), 5, "the FILLED push")
    fill_push = next(o for o, _ in pushed if o.status is OrderStatus.FILLED)
    assert fill_push.client_order_id == "push-1" and fill_push.filled_quantity == 100
    assert fill_push.avg_fill_price == Decimal("370.0")
    assert {thread for _, thread in pushed} == {loop_thread}


async def test_closed_subscription_stops_callbacks(opend):
    received, witness = [], []
    async with connected(opend) as broker:
        subscription = broker.subscribe_quotes([TENCENT], received.append)
        still_open = broker.subscribe_quotes([TENCENT], witness.append)
        await async_wait_until(lambda: opend.subscribed("00700"), 5, "the quote subscription at OpenD")
        subscription.close()
        opend.push_quote_sync(HK, "00700", 381.0)
        # the push reaches the subscription still open: the closed one was passed over in the same delivery
        await async_wait_until(lambda: len(witness) == 1, 5, "the push on the subscription still open")
        still_open.close()
    assert received == []


# --- account ------------------------------------------------------------------------------------
async def test_positions_and_funds_are_mapped_to_canonical_values(opend):
    opend.seed_position("00700", 300, 350.0)
    opend.seed_position("09988", -100, 82.0)
    async with connected(opend) as broker:
        positions = {p.symbol: p for p in await broker.positions()}
        account = await broker.account()
    tencent, baba = positions[TENCENT], positions[parse_symbol("9988")]
    assert (tencent.side, tencent.quantity, tencent.avg_cost) == (PositionSide.LONG, 300, Decimal("350.0"))
    assert tencent.market_price == Decimal("380.0")
    assert (baba.side, baba.quantity) == (PositionSide.SHORT, 100)
    cash = Decimal("1000000") - 300 * Decimal("350") + 100 * Decimal("82")
    assert account.cash == cash and account.currency == "HKD"
    assert account.equity == cash + 300 * Decimal("380") - 100 * Decimal("80")


async def test_list_orders_open_only(opend):
    resting = OrderRequest(TENCENT, OrderSide.BUY, 100, OrderType.LIMIT, "open-1", limit_price=Decimal("370.0"))
    async with connected(opend) as broker:
        await broker.place_order(market_buy("done-1"))
        await broker.place_order(resting)
        open_orders = await broker.list_orders()
        all_orders = await broker.list_orders(open_only=False, symbol=TENCENT)
    assert [o.client_order_id for o in open_orders] == ["open-1"]
    assert {o.client_order_id for o in all_orders} == {"open-1", "done-1"}


# --- vocabulary and SDK side effects ------------------------------------------------------------
@pytest.mark.parametrize(("sdk_status", "filled", "expected"), [
    ("WAITING_SUBMIT", 0, OrderStatus.SUBMITTED),
    ("SUBMITTING", 0, OrderStatus.SUBMITTED),
    ("SUBMITTED", 0, OrderStatus.SUBMITTED),
    ("FILLED_PART", 300, OrderStatus.PARTIALLY_FILLED),
    ("CANCELLING_PART", 300, OrderStatus.PARTIALLY_FILLED),
    ("FILLED_ALL", 500, OrderStatus.FILLED),
    ("CANCELLED_PART", 300, OrderStatus.CANCELLED),
    ("CANCELLED_ALL", 0, OrderStatus.CANCELLED),
    ("FAILED", 0, OrderStatus.REJECTED),
    ("SUBMIT_FAILED", 0, OrderStatus.REJECTED),
    ("DISABLED", 0, OrderStatus.REJECTED),
    ("DISABLED", 100, OrderStatus.CANCELLED),
    ("DELETED", 0, OrderStatus.REJECTED),
])
def test_order_status_mapping(sdk_status, filled, expected):
    assert map_order_status(sdk_status, filled) is expected


def test_moomoos_ctrl_c_handler_is_undone():
    """``import moomoo`` installs a SIGINT handler calling os._exit(0): Ctrl-C would exit with status 0."""
    def quit_handler(sig, frame):   # what moomoo installs, by name and module
        raise AssertionError("not to be called")
    quit_handler.__module__ = "moomoo"

    def previous(sig, frame):
        pass

    original = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, quit_handler)
        restore_sigint(previous)
        assert signal.getsignal(signal.SIGINT) is previous
        signal.signal(signal.SIGINT, quit_handler)
        restore_sigint(None)                                     # no Python handler before: the default
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, original)


def test_loaded_sdk_is_quiet_and_leaves_ctrl_c_alone():
    load_sdk()
    assert getattr(signal.getsignal(signal.SIGINT), "__name__", "") != "quit_handler"
    from moomoo.common.ft_logger import logger

    assert logger.console_level == logging.ERROR
