"""AlpacaBroker with the real alpaca-py SDK against the fake Alpaca on 127.0.0.1."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from brokers.alpaca import AlpacaBroker
from brokers.alpaca_convert import order_status
from brokers.base import (
    BAR_COLUMNS,
    BrokerError,
    Disconnected,
    InsufficientFunds,
    OrderPurpose,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    RateLimited,
    Timeframe,
    UnknownSymbol,
)
from core.clock import SimClock, WallClock
from config.settings import ConfigError, Secrets
from core.instruments import OrderSide, PositionSide, parse_symbol
from tests.fakes.alpaca_fixtures import alpaca_secrets_for
from tests.helpers import async_wait_until

AAPL = parse_symbol("AAPL")
MSFT = parse_symbol("MSFT")


@contextlib.asynccontextmanager
async def connected(fake, clock=None, **kwargs):
    broker = AlpacaBroker(alpaca_secrets_for(fake), clock or WallClock(),
                          trading_stream_url=fake.trading_stream_url, data_stream_url=fake.data_stream_url,
                          rate_limit_backoff_seconds=0.01, **kwargs)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


def market_buy(qty: int, coid: str, **kwargs) -> OrderRequest:
    return OrderRequest(AAPL, OrderSide.BUY, qty, OrderType.MARKET, coid, **kwargs)


def secret_free(text: str, fake) -> bool:
    return fake.secret_key not in text and fake.api_key not in text


# --- market data ----------------------------------------------------------------------------
async def test_snapshot_maps_quote_lot_tick_and_name(alpaca_fake):
    alpaca_fake.set_price("AAPL", 9.050000190734863)          # float noise from a data feed
    async with connected(alpaca_fake) as broker:
        snaps = await broker.snapshots([AAPL, parse_symbol("PENNY")])
    aapl = snaps[AAPL]
    assert aapl.quote.symbol == AAPL
    assert aapl.quote.price == Decimal("9.05") and str(aapl.quote.price) == "9.05"
    assert (aapl.quote.bid, aapl.quote.ask) == (Decimal("9.04"), Decimal("9.06"))
    assert aapl.lot_size == 1 and aapl.tick == Decimal("0.01")
    assert aapl.name == "Apple Inc. Common Stock"
    assert isinstance(aapl.quote.volume, int) and aapl.quote.volume > 0
    assert aapl.quote.prev_close == Decimal("188.10")
    assert aapl.quote.time.tzinfo is not None
    penny = snaps[parse_symbol("PENNY")]
    assert penny.tick == Decimal("0.0001") and penny.quote.price == Decimal("0.5000")


async def test_snapshot_of_unknown_or_non_us_symbol_says_which(alpaca_fake):
    async with connected(alpaca_fake) as broker:
        with pytest.raises(UnknownSymbol, match="US.NOPE"):
            await broker.snapshots([AAPL, parse_symbol("NOPE")])
        with pytest.raises(UnknownSymbol, match="HK.00700"):
            await broker.snapshots([parse_symbol("700")])


async def test_bars_follow_pagination_and_return_only_closed_bars(alpaca_fake_factory):
    fake = alpaca_fake_factory(bars_page_size=50)
    start = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
    clock = SimClock(start + timedelta(minutes=120, seconds=30))      # bar 14:30+119 is still open
    async with connected(fake, clock) as broker:
        frame = await broker.bars(AAPL, Timeframe.M1, start, start + timedelta(hours=3))
    assert fake.count("GET", "/v2/stocks/bars") == 3                   # 50 + 50 + 20
    assert list(frame.columns) == BAR_COLUMNS
    assert all(str(dtype) == "float64" for dtype in frame.dtypes)
    assert str(frame.index.tz) == "UTC"
    assert len(frame) == 120
    assert frame.index[0] == start
    assert frame.index[-1] == start + timedelta(minutes=119)          # closed at 16:30:00 <= now
    assert frame.index.is_monotonic_increasing


async def test_bars_exclude_end_and_daily_bars_are_supported(alpaca_fake):
    start = datetime(2026, 1, 5, 14, 30, tzinfo=timezone.utc)
    clock = SimClock(datetime(2026, 1, 20, tzinfo=timezone.utc))
    async with connected(alpaca_fake, clock) as broker:
        minutes = await broker.bars(AAPL, Timeframe.M5, start, start + timedelta(minutes=30))
        days = await broker.bars(AAPL, Timeframe.D1, datetime(2026, 1, 5, tzinfo=timezone.utc),
                                 datetime(2026, 1, 12, tzinfo=timezone.utc))
    assert list(minutes.index) == [start + timedelta(minutes=5 * i) for i in range(6)]
    assert len(days) == 5 and all(t.weekday() < 5 for t in days.index)


# --- orders -----------------------------------------------------------------------------------
async def test_market_buy_fills_and_maps(alpaca_fake):
    async with connected(alpaca_fake) as broker:
        order = await broker.place_order(market_buy(10, "us_20260105_c1_001"))
    assert order.status is OrderStatus.FILLED
    assert order.filled_quantity == 10 and order.quantity == 10
    assert order.avg_fill_price == Decimal("190")
    assert order.side is OrderSide.BUY and order.order_type is OrderType.MARKET
    assert order.symbol == AAPL and order.client_order_id == "us_20260105_c1_001"
    body = alpaca_fake.bodies("POST", "/v2/orders")[0]
    assert body == {"symbol": "AAPL", "qty": 10, "side": "buy", "type": "market", "time_in_force": "day",
                    "client_order_id": "us_20260105_c1_001"}


async def test_bracket_entry_take_profit_fills_and_stop_leg_is_cancelled(alpaca_fake):
    async with connected(alpaca_fake) as broker:
        entry = await broker.place_order(market_buy(5, "br-1", take_profit_price=Decimal("200"),
                                                    stop_loss_price=Decimal("185")))
        body = alpaca_fake.bodies("POST", "/v2/orders")[0]
        assert body["order_class"] == "bracket"
        assert body["take_profit"] == {"limit_price": 200.0} and body["stop_loss"] == {"stop_price": 185.0}
        assert entry.status is OrderStatus.FILLED and len(entry.legs) == 2
        legs = {leg.purpose: leg for leg in entry.legs}
        assert legs[OrderPurpose.BACKSTOP_TARGET].limit_price == Decimal("200")
        assert legs[OrderPurpose.BACKSTOP_STOP].stop_price == Decimal("185")
        assert all(leg.status is OrderStatus.SUBMITTED and leg.side is OrderSide.SELL for leg in entry.legs)
        assert all(leg.parent_order_id == entry.broker_order_id for leg in entry.legs)

        alpaca_fake.set_price("AAPL", 201.0)
        after = await broker.get_order(entry.broker_order_id)
        legs = {leg.purpose: leg for leg in after.legs}
        target, stop = legs[OrderPurpose.BACKSTOP_TARGET], legs[OrderPurpose.BACKSTOP_STOP]
        assert target.status is OrderStatus.FILLED and target.filled_quantity == 5
        assert target.avg_fill_price == Decimal("201")
        assert stop.status is OrderStatus.CANCELLED and stop.filled_quantity == 0
        assert await broker.positions() == []
        assert await broker.list_orders(open_only=True) == []
        everything = await broker.list_orders(open_only=False, symbol=AAPL)
        assert [o.broker_order_id for o in everything] == [entry.broker_order_id]


async def test_partial_fill_then_cancel_keeps_filled_quantity(alpaca_fake_factory):
    fake = alpaca_fake_factory(fill_market_orders=False)
    async with connected(fake) as broker:
        order = await broker.place_order(OrderRequest(AAPL, OrderSide.BUY, 500, OrderType.LIMIT, "part-1",
                                                      limit_price=Decimal("189.50")))
        assert order.status is OrderStatus.SUBMITTED and order.filled_quantity == 0
        fake.fill(order.broker_order_id, 300, 189.5)
        partial = await broker.get_order(order.broker_order_id)
        assert partial.status is OrderStatus.PARTIALLY_FILLED and partial.filled_quantity == 300
        assert partial.remaining == 200
        cancelled = await broker.cancel_order(order.broker_order_id)
        fills = await broker.fills(datetime.now(timezone.utc) - timedelta(minutes=5), AAPL)
    assert cancelled.status is OrderStatus.CANCELLED
    assert cancelled.filled_quantity == 300 and cancelled.avg_fill_price == Decimal("189.5")
    assert [(f.quantity, f.price, f.side) for f in fills] == [(300, Decimal("189.5"), OrderSide.BUY)]
    assert fills[0].broker_order_id == order.broker_order_id


async def test_automatic_partial_fill_maps_to_partially_filled(alpaca_fake_factory):
    fake = alpaca_fake_factory(partial_fill_ratio=0.6)
    async with connected(fake) as broker:
        order = await broker.place_order(market_buy(500, "auto-part"))
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.filled_quantity == 300


async def test_same_client_order_id_places_one_order(alpaca_fake):
    async with connected(alpaca_fake) as broker:
        first = await broker.place_order(market_buy(10, "dup-1"))
        second = await broker.place_order(market_buy(10, "dup-1"))
    assert second.broker_order_id == first.broker_order_id
    assert alpaca_fake.count("POST", "/v2/orders") == 1
    assert len(alpaca_fake.orders) == 1


async def test_duplicate_id_error_returns_the_existing_order(alpaca_fake):
    async with connected(alpaca_fake) as broker:
        first = await broker.place_order(market_buy(10, "race-1"))
        # The look-up misses (as in a race with another process), so the adapter sends the order;
        # Alpaca answers "client_order_id must be unique" and the adapter returns the existing one.
        alpaca_fake.inject_error("GET", "/v2/orders:by_client_order_id", 404, "order not found")
        second = await broker.place_order(market_buy(10, "race-1"))
    assert second.broker_order_id == first.broker_order_id
    assert sum(1 for o in alpaca_fake.orders.values() if o["client_order_id"] == "race-1") == 1


async def test_sub_penny_prices_are_rounded_before_sending(alpaca_fake_factory):
    fake = alpaca_fake_factory(fill_market_orders=False)
    async with connected(fake) as broker:
        order = await broker.place_order(OrderRequest(
            AAPL, OrderSide.BUY, 10, OrderType.LIMIT, "px-1", limit_price=Decimal("189.123456"),
            take_profit_price=Decimal("200.004999"), stop_loss_price=Decimal("185.0049")))
        await broker.place_order(OrderRequest(AAPL, OrderSide.SELL, 1, OrderType.STOP, "px-2",
                                              stop_price=Decimal("180.006")))
    limit_body, stop_body = fake.bodies("POST", "/v2/orders")
    assert limit_body["limit_price"] == 189.12                       # buy limit: down
    assert limit_body["take_profit"]["limit_price"] == 200.01        # sell limit: up
    assert limit_body["stop_loss"]["stop_price"] == 185.0            # stop: nearest
    assert stop_body["stop_price"] == 180.01
    assert order.limit_price == Decimal("189.12")


async def test_insufficient_buying_power_without_secrets(alpaca_fake, caplog):
    caplog.set_level(logging.DEBUG)
    async with connected(alpaca_fake) as broker:
        with pytest.raises(InsufficientFunds) as info:
            await broker.place_order(market_buy(10_000, "big-1"))
    message = str(info.value)
    assert "insufficient buying power" in message and "AAPL" in message
    assert secret_free(message, alpaca_fake) and secret_free(repr(info.value.args), alpaca_fake)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert secret_free(caplog.text, alpaca_fake)


async def test_422_is_order_rejected_with_alpacas_message(alpaca_fake):
    alpaca_fake.inject_error("POST", "/v2/orders", 422, "qty must be > 0 for this asset")
    async with connected(alpaca_fake) as broker:
        with pytest.raises(OrderRejected, match="qty must be > 0 for this asset"):
            await broker.place_order(market_buy(10, "rej-1"))


async def test_server_error_is_a_broker_error(alpaca_fake):
    alpaca_fake.inject_error("GET", "/v2/positions", 500, "internal server error")
    async with connected(alpaca_fake) as broker:
        with pytest.raises(BrokerError, match="server error 500 while reading positions"):
            await broker.positions()


async def test_rate_limit_is_retried_then_reported(alpaca_fake):
    async with connected(alpaca_fake, rate_limit_retries=2) as broker:
        alpaca_fake.inject_error("GET", "/v2/account", 429, "too many requests", times=2)
        account = await broker.account()                          # two 429s, then an answer
        assert account.currency == "USD"
        alpaca_fake.inject_error("GET", "/v2/account", 429, "too many requests", times=3)
        with pytest.raises(RateLimited) as info:
            await broker.account()
    assert info.value.retry_after_seconds is not None


async def test_cancelling_a_filled_order_returns_it_filled(alpaca_fake):
    async with connected(alpaca_fake) as broker:
        order = await broker.place_order(market_buy(3, "fill-then-cancel"))
        again = await broker.cancel_order(order.broker_order_id)
    assert again.status is OrderStatus.FILLED and again.filled_quantity == 3


async def test_invalid_requests_are_refused_before_sending(alpaca_fake):
    async with connected(alpaca_fake) as broker:
        with pytest.raises(OrderRejected, match="needs limit_price"):
            await broker.place_order(OrderRequest(AAPL, OrderSide.BUY, 1, OrderType.LIMIT, "bad-1"))
        with pytest.raises(OrderRejected, match="wrong sides"):
            await broker.place_order(market_buy(1, "bad-2", take_profit_price=Decimal("180"),
                                                stop_loss_price=Decimal("185")))
        with pytest.raises(UnknownSymbol):
            await broker.place_order(OrderRequest(parse_symbol("700"), OrderSide.BUY, 100, OrderType.MARKET, "b3"))
    assert alpaca_fake.count("POST", "/v2/orders") == 0


# --- account -----------------------------------------------------------------------------------
async def test_positions_map_sides_explicitly(alpaca_fake):
    alpaca_fake.set_position("AAPL", 10, 180.0)
    alpaca_fake.set_position("MSFT", -5, 420.0)
    async with connected(alpaca_fake) as broker:
        positions = {p.symbol: p for p in await broker.positions()}
        account = await broker.account()
    assert positions[AAPL].side is PositionSide.LONG and positions[AAPL].quantity == 10
    assert positions[AAPL].avg_cost == Decimal("180.0000") and positions[AAPL].market_price == Decimal("190")
    assert positions[MSFT].side is PositionSide.SHORT and positions[MSFT].quantity == 5
    assert account.cash == Decimal("100000.00") and account.buying_power == Decimal("200000.00")


async def test_fills_come_from_account_activities_across_pages(alpaca_fake, monkeypatch):
    monkeypatch.setattr("brokers.alpaca._ACTIVITY_PAGE_SIZE", 2)
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    async with connected(alpaca_fake) as broker:
        for n in range(3):
            await broker.place_order(market_buy(n + 1, f"fill-{n}"))
        await broker.place_order(OrderRequest(MSFT, OrderSide.SELL, 2, OrderType.MARKET, "fill-msft"))
        every = await broker.fills(since)
        only_aapl = await broker.fills(since, AAPL)
    assert [f.quantity for f in every] == [1, 2, 3, 2]                  # oldest first
    assert every[-1].side is OrderSide.SELL and every[-1].symbol == MSFT
    assert [f.quantity for f in only_aapl] == [1, 2, 3]
    assert alpaca_fake.count("GET", "/v2/account/activities/FILL") >= 3   # pages of two


# --- streams and polling -------------------------------------------------------------------------
async def test_order_stream_delivers_fills_on_the_event_loop_thread(alpaca_fake):
    seen: list[tuple[int, OrderStatus, int]] = []
    async with connected(alpaca_fake) as broker:
        subscription = broker.subscribe_orders(
            lambda order: seen.append((threading.get_ident(), order.status, order.filled_quantity)))
        assert await asyncio.to_thread(alpaca_fake.wait_for_stream_clients, 1, 0)
        await broker.place_order(market_buy(7, "stream-1"))
        await async_wait_until(lambda: any(status is OrderStatus.FILLED for _, status, _ in seen), 5, "the FILLED push")
        subscription.close()
    loop_thread = threading.get_ident()
    assert {thread for thread, _, _ in seen} == {loop_thread}
    assert (loop_thread, OrderStatus.FILLED, 7) in seen


async def test_quote_stream_delivers_price_moves_on_the_event_loop_thread(alpaca_fake):
    quotes, witness = [], []
    async with connected(alpaca_fake) as broker:
        subscription = broker.subscribe_quotes([AAPL], lambda q: quotes.append((threading.get_ident(), q)))
        still_open = broker.subscribe_quotes([AAPL], witness.append)
        assert await asyncio.to_thread(alpaca_fake.wait_for_stream_clients, 0, 1)
        alpaca_fake.set_price("AAPL", 191.234)
        await async_wait_until(lambda: any(q.price == Decimal("191.23") for _, q in quotes), 5, "the 191.23 quote")
        subscription.close()
        count = len(quotes)
        alpaca_fake.set_price("AAPL", 192.0)
        # the move reaches the subscription still open: the closed one was passed over in the same delivery
        await async_wait_until(lambda: any(q.price == Decimal("192.00") for q in witness), 5,
                               "the 192.00 quote on the subscription still open")
        still_open.close()
    assert len(quotes) == count                                   # closed: no more callbacks
    assert {thread for thread, _ in quotes} == {threading.get_ident()}
    assert quotes[-1][1].symbol == AAPL and quotes[-1][1].bid == Decimal("191.22")


async def test_polling_fallback_delivers_quotes_and_order_changes(alpaca_fake_factory):
    fake = alpaca_fake_factory(fill_market_orders=False)
    orders, quotes = [], []
    async with connected(fake, streaming=False, poll_seconds=0.05) as broker:
        assert broker.capabilities.supports_order_push is False
        broker.subscribe_orders(orders.append)
        broker.subscribe_quotes([AAPL], quotes.append)
        placed = await broker.place_order(market_buy(4, "poll-1"))
        await async_wait_until(lambda: any(o.broker_order_id == placed.broker_order_id for o in orders), 5,
                               "the polled order")
        fake.set_price("AAPL", 195.0)
        await async_wait_until(lambda: any(o.status is OrderStatus.FILLED for o in orders), 5, "the polled fill")
        await async_wait_until(lambda: any(q.price == Decimal("195.00") for q in quotes), 5, "the polled quote")
    assert fake.count("POST", "/v2/orders") == 1


# --- connection, configuration, vocabulary ------------------------------------------------------
async def test_closed_port_gives_disconnected_naming_host_and_port_quickly():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secrets = Secrets(alpaca_api_key="PKCLOSED", alpaca_secret_key="closed-port-secret",
                      alpaca_base_url=f"http://127.0.0.1:{port}", alpaca_data_url=f"http://127.0.0.1:{port}")
    broker = AlpacaBroker(secrets, WallClock())
    started = time.monotonic()
    with pytest.raises(Disconnected) as info:
        await broker.connect()
    assert time.monotonic() - started < 3
    assert f"127.0.0.1:{port}" in str(info.value) and "closed-port-secret" not in str(info.value)
    await broker.close()


def test_simulated_time_stands_still_while_alpaca_answers(alpaca_fake):
    start = datetime(2026, 1, 5, 15, 0, tzinfo=timezone.utc)
    clock = SimClock(start)

    async def main():
        sleeper = asyncio.ensure_future(clock.sleep(60))       # a timer the virtual loop could jump to
        async with connected(alpaca_fake, clock) as broker:
            await broker.place_order(market_buy(1, "sim-1"))
            await broker.account()
            during = clock.now()
        sleeper.cancel()
        return during

    assert clock.run(main()) - start < timedelta(seconds=1)


def test_capabilities_and_mode_guard():
    paper = AlpacaBroker(Secrets(alpaca_api_key="k", alpaca_secret_key="s"), WallClock())
    caps = paper.capabilities
    assert (caps.name, caps.is_paper, caps.supports_bracket, caps.supports_stop_orders) == ("alpaca", True, True, True)
    assert caps.supports_quote_push and caps.supports_order_push
    live = AlpacaBroker(Secrets(alpaca_api_key="k", alpaca_secret_key="s"), WallClock(), live=True)
    assert live.capabilities.is_paper is False
    with pytest.raises(ConfigError, match="LIVE endpoint"):
        AlpacaBroker(Secrets(alpaca_api_key="k", alpaca_secret_key="s",
                             alpaca_base_url="https://api.alpaca.markets"), WallClock())
    with pytest.raises(ConfigError, match="ALPACA_API_KEY"):
        AlpacaBroker(Secrets(), WallClock())


@pytest.mark.parametrize("word, filled, qty, expected", [
    ("new", 0, 10, OrderStatus.SUBMITTED),
    ("accepted", 0, 10, OrderStatus.SUBMITTED),
    ("pending_new", 0, 10, OrderStatus.SUBMITTED),
    ("held", 0, 10, OrderStatus.SUBMITTED),
    ("partially_filled", 4, 10, OrderStatus.PARTIALLY_FILLED),
    ("pending_cancel", 4, 10, OrderStatus.PARTIALLY_FILLED),
    ("filled", 10, 10, OrderStatus.FILLED),
    ("canceled", 0, 10, OrderStatus.CANCELLED),
    ("canceled", 4, 10, OrderStatus.CANCELLED),
    ("rejected", 0, 10, OrderStatus.REJECTED),
    ("expired", 0, 10, OrderStatus.EXPIRED),
    ("calculated", 10, 10, OrderStatus.FILLED),
    ("something_new", 0, 10, OrderStatus.SUBMITTED),
])
def test_status_mapping(word, filled, qty, expected):
    assert order_status(word, filled, qty) is expected
