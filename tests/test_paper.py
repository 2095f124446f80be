"""The paper exchange as a trader sees it: prices, fills, fees, refusals, sessions, no look-ahead.

Real bars of 09988 (HKEX) and MSFT where the data shows the behaviour; small synthetic series
where a test needs a price path or a volume written out.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from functools import lru_cache

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.base import (
    InsufficientFunds,
    MarketClosed,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Quote,
    Timeframe,
    UnknownSymbol,
)
from brokers.fees import hk_fees, us_fees
from brokers.paper import PaperExchange
from core.clock import SimClock
from config.settings import HKFees, PaperExchange as PaperSettings, Profile, USFees
from data.bars import BarSeries, empty_bars, load_samples, resample
from data.calendar import MarketCalendar
from core.instruments import Market, OrderSide, Symbol, is_on_tick

HK, US = Market.HK, Market.US
ALIBABA = Symbol(HK, "09988")
MSFT = Symbol(US, "MSFT")
CALENDARS = {HK: MarketCalendar(HK), US: MarketCalendar(US)}
START_CASH = Decimal("1000000")


@lru_cache(maxsize=None)
def samples(market: Market) -> dict[Symbol, BarSeries]:
    return load_samples(market)


def profile(market: Market = HK, **paper) -> Profile:
    return Profile(market=market, agent_id="test", paper=PaperSettings(starting_cash=START_CASH, **paper))


def local(market: Market, day: date, hhmm: str, second: int = 0) -> datetime:
    h, m = map(int, hhmm.split(":"))
    return CALENDARS[market].at_local(day, time(h, m, second))


def exchange_at(t: datetime, series: dict[Symbol, BarSeries] | None = None, market: Market = HK, **paper) -> tuple[PaperExchange, SimClock]:
    clock = SimClock(t)
    return PaperExchange(series if series is not None else samples(market), clock, CALENDARS[market], profile(market, **paper)), clock


def market_order(symbol: Symbol, side: OrderSide, quantity: int, cid: str) -> OrderRequest:
    return OrderRequest(symbol, side, quantity, OrderType.MARKET, cid)


def synthetic_series(code: str, day: date, price: float, volume: float, path: dict[str, tuple[float, float, float, float, float]] | None = None, lot: int = 100) -> BarSeries:
    """One HK session of flat bars at ``price``, with the bars named in ``path`` (HH:MM local) replaced."""
    session = CALENDARS[HK].session(day)
    assert session is not None
    rows = {t: (price, price, price, price, volume) for t in session.minute_grid()}
    for hhmm, bar in (path or {}).items():
        rows[local(HK, day, hhmm)] = bar
    index = pd.DatetimeIndex(sorted(rows), tz="UTC")
    minute = pd.DataFrame([rows[t] for t in index], index=index, columns=["open", "high", "low", "close", "volume"])
    symbol = Symbol(HK, code)
    return BarSeries(symbol=symbol, name=f"synthetic {code}", lot_size=lot, synthetic=True, minute=minute, daily=empty_bars(utc_index=False))


# --- Replay ------------------------------------------------------------------------------------
JUNE_15 = date(2022, 6, 15)


def test_replaying_the_real_09988_session_gives_330_bars_and_1320_quotes_on_the_tick_grid():
    session = CALENDARS[HK].session(JUNE_15)
    exchange, clock = exchange_at(session.open)
    quotes: list[Quote] = []

    async def replay():
        exchange.subscribe_quotes([ALIBABA], quotes.append)
        await exchange.run(session.close)
        return await exchange.bars(ALIBABA, Timeframe.M1, session.open, session.close)

    bars = clock.run(replay())

    assert len(bars) == 330
    assert len(quotes) == 1320
    assert clock.now() == session.close
    hkt = [CALENDARS[HK].local(q.time) for q in quotes]
    assert not [t for t in hkt if t.hour == 12], "no quote may fall in the 12:00-12:59 lunch break"
    assert (hkt[0].time(), hkt[-1].time()) == (time(9, 30), time(15, 59, 45))
    assert all(a.time < b.time for a, b in zip(quotes, quotes[1:]))
    for q in quotes:
        for price in (q.price, q.bid, q.ask):
            assert is_on_tick(HK, price, JUNE_15), f"{price} at {q.time} is off the HKEX tick grid"
        assert q.bid < q.price < q.ask
    # The real open and close of the day, as the first and last prices a trader saw.
    assert (quotes[0].price, quotes[-1].price) == (Decimal("104.5"), Decimal("105.6"))
    assert quotes[-1].high == Decimal(str(bars["high"].max())) and quotes[-1].low == Decimal(str(bars["low"].min()))


def test_each_bar_replays_open_nearer_extreme_other_extreme_close():
    # 02:00 UTC bar of 2022-06-15: open 105.2, high 105.3 (0.1 away), low 105.0 (0.2 away), close 105.2.
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"))
    quotes: list[Quote] = []

    async def replay():
        exchange.subscribe_quotes([ALIBABA], quotes.append)
        await exchange.run(local(HK, JUNE_15, "10:01") - timedelta(seconds=1))

    clock.run(replay())
    assert [q.price for q in quotes] == [Decimal("105.2"), Decimal("105.3"), Decimal("105.0"), Decimal("105.2")]
    assert [CALENDARS[HK].local(q.time).second for q in quotes] == [0, 15, 30, 45]


def test_the_nearer_extreme_comes_first_and_ties_follow_the_bar_direction():
    bars = synthetic_series("08004", JUNE_15, 50.0, 40_000, {
        "10:00": (50.0, 50.5, 49.9, 50.2, 40_000),   # low nearer
        "10:01": (50.0, 50.5, 49.5, 50.2, 40_000),   # equally far, rising: low first
        "10:02": (50.0, 50.5, 49.5, 49.8, 40_000),   # equally far, falling: high first
    })
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"), {bars.symbol: bars})
    quotes: list[Quote] = []

    async def replay():
        exchange.subscribe_quotes([bars.symbol], quotes.append)
        await exchange.run(local(HK, JUNE_15, "10:02", 45))

    clock.run(replay())
    prices = [float(q.price) for q in quotes]
    assert prices == [50.0, 49.9, 50.5, 50.2, 50.0, 49.5, 50.5, 50.2, 50.0, 50.5, 49.5, 49.8]


def test_a_replay_run_in_pieces_pushes_every_step_exactly_once():
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"))
    quotes: list[Quote] = []

    async def replay():
        exchange.subscribe_quotes([ALIBABA], quotes.append)
        for end in ("10:00:15", "10:00:15", "10:01:00", "10:02:00"):
            h, m, sec = map(int, end.split(":"))
            await exchange.run(local(HK, JUNE_15, f"{h:02d}:{m:02d}", sec))

    clock.run(replay())
    times = [q.time for q in quotes]
    assert times == [local(HK, JUNE_15, "10:00") + timedelta(seconds=15 * k) for k in range(9)]


def test_background_replay_pushes_quotes_while_the_agent_waits_and_stop_ends_it():
    session = CALENDARS[HK].session(JUNE_15)
    exchange, clock = exchange_at(session.open)
    quotes: list[Quote] = []

    async def agent():
        exchange.subscribe_quotes([ALIBABA], quotes.append)
        exchange.start(session.close)
        assert exchange.running
        await clock.sleep(5 * 60 + 1)   # just past 09:35:00, so the 09:35:00 step is in
        seen = len(quotes)
        await exchange.stop()
        await clock.sleep(5 * 60)
        return seen

    seen = clock.run(agent())
    assert seen == 5 * 4 + 1      # 09:30:00 .. 09:35:00 inclusive
    assert len(quotes) == seen, "no quote may arrive after stop()"
    assert not exchange.running


# --- Fills and fees ----------------------------------------------------------------------------
def test_market_buy_fills_at_the_ask_with_hand_computed_hk_fees():
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00", 5))

    async def buy():
        quote = (await exchange.snapshots([ALIBABA]))[ALIBABA].quote
        order = await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 100, "buy-1"))
        return quote, order, await exchange.account(), await exchange.positions()

    quote, order, account, positions = clock.run(buy())

    assert (quote.price, quote.bid, quote.ask) == (Decimal("105.2"), Decimal("105.1"), Decimal("105.3"))
    assert order.status is OrderStatus.FILLED and order.avg_fill_price == Decimal("105.3")
    # 100 x 105.30 = HKD 10,530.00
    #   commission 0.03 %   = 3.159     -> 3.16 (above the HKD 3 minimum)
    #   stamp duty 0.1 %    = 10.53     -> 11.00 (rounded up to the dollar)
    #   trading fee 0.00565 % = 0.594945 -> 0.59
    #   SFC levy 0.0027 %   = 0.28431   -> 0.28
    #   AFRC levy 0.00015 % = 0.015795  -> 0.02
    #   total 15.05
    assert order.fees == Decimal("15.05")
    assert account.cash == START_CASH - Decimal("10530.00") - Decimal("15.05")
    assert positions[0].quantity == 100 and positions[0].avg_cost == Decimal("105.3")
    assert account.equity == account.cash + 100 * Decimal("105.2")


def test_hk_fee_rounding_rules():
    small = hk_fees(Decimal("2010.00"), HKFees())
    assert small.stamp_duty == Decimal("3.00"), "HKD 2.01 of stamp duty is charged as HKD 3"
    assert small.commission == Decimal("3.00"), "0.603 is below the HKD 3 minimum"
    assert small.afrc_levy == Decimal("0.00")  # 0.003015: no minimum
    assert small.sfc_levy == Decimal("0.05")   # 0.05427
    assert small.trading_fee == Decimal("0.11")  # 0.1135650
    tiny = hk_fees(Decimal("100.00"), HKFees())
    assert (tiny.sfc_levy, tiny.trading_fee) == (Decimal("0.01"), Decimal("0.01")), "both have a one-cent minimum"
    second_fill = hk_fees(Decimal("2010.00"), HKFees(), order_value_before=Decimal("2010.00"))
    assert second_fill.commission == Decimal("0.00"), "the commission minimum is charged once per order"
    assert hk_fees(Decimal("2010.00"), HKFees(platform_fee=Decimal("15"))).platform_fee == Decimal("15.00")


def test_us_sell_pays_sec_fee_and_finra_taf_and_the_buy_pays_neither():
    day = date(2022, 6, 14)
    exchange, clock = exchange_at(local(US, day, "10:00"), market=US)

    async def round_trip():
        buy = await exchange.place_order(market_order(MSFT, OrderSide.BUY, 100, "msft-buy"))
        await clock.sleep_until(local(US, day, "11:00"))
        sell = await exchange.place_order(market_order(MSFT, OrderSide.SELL, 100, "msft-sell"))
        return buy, sell, await exchange.account()

    buy, sell, account = clock.run(round_trip())

    # 10:00 ET bar opens at 243.58 (ask 243.59); 11:00 ET bar opens at 243.27 (bid 243.26).
    assert (buy.avg_fill_price, buy.fees) == (Decimal("243.59"), Decimal("0"))
    assert sell.avg_fill_price == Decimal("243.26")
    # 100 x 243.26 = USD 24,326.00
    #   SEC fee 27.80 per million = 0.6762628 -> 0.68 (rounded up to the cent)
    #   FINRA TAF 100 x 0.000166  = 0.0166    -> 0.02 (rounded up to the cent)
    assert sell.fees == Decimal("0.70")
    assert account.cash == START_CASH - Decimal("24359.00") + Decimal("24326.00") - Decimal("0.70")


def test_finra_taf_is_capped_per_trade():
    fees = us_fees(OrderSide.SELL, 60_000, Decimal("600000"), USFees())
    assert fees.finra_taf == Decimal("8.30")   # 60,000 x 0.000166 = 9.96 capped
    assert fees.sec_fee == Decimal("16.68")    # 600,000 x 27.80 / 1e6
    assert us_fees(OrderSide.BUY, 60_000, Decimal("600000"), USFees()).total == Decimal("0")


def test_limit_buy_fills_only_when_the_ask_reaches_the_limit_and_at_the_ask():
    dip = synthetic_series("08001", JUNE_15, 50.0, 40_000, {"10:00": (50.0, 50.0, 49.5, 49.6, 40_000)})
    exchange, clock = exchange_at(local(HK, JUNE_15, "09:45"), {dip.symbol: dip})

    async def trade():
        buy = await exchange.place_order(OrderRequest(dip.symbol, OrderSide.BUY, 100, OrderType.LIMIT, "dip-buy", limit_price=Decimal("49.80")))
        untouched = await exchange.place_order(OrderRequest(dip.symbol, OrderSide.BUY, 100, OrderType.LIMIT, "deep-buy", limit_price=Decimal("49.00")))
        await exchange.run(local(HK, JUNE_15, "10:00", 29))
        before = await exchange.get_order(buy.broker_order_id)
        await exchange.run(local(HK, JUNE_15, "10:05"))
        return buy, before, await exchange.get_order(buy.broker_order_id), await exchange.get_order(untouched.broker_order_id), await exchange.fills(local(HK, JUNE_15, "09:00"))

    placed, before, after, untouched, fills = clock.run(trade())

    assert placed.status is OrderStatus.SUBMITTED, "50.05 ask is above the 49.80 limit"
    assert before.status is OrderStatus.SUBMITTED, "10:00:00 and 10:00:15 stay at 50.00"
    assert after.status is OrderStatus.FILLED
    assert [(f.price, f.time) for f in fills] == [(Decimal("49.55"), local(HK, JUNE_15, "10:00", 30))]
    assert untouched.status is OrderStatus.SUBMITTED and untouched.filled_quantity == 0


def test_stop_sell_triggered_by_a_gap_down_fills_at_the_gapped_price_not_the_stop():
    # Real data: 09988 closed 2022-06-13 at 103.6 and opened 2022-06-14 at 98.2.
    exchange, clock = exchange_at(local(HK, date(2022, 6, 13), "15:30"))

    async def hold_overnight():
        await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 100, "entry"))
        await clock.sleep_until(local(HK, date(2022, 6, 13), "16:30"))
        stop = await exchange.place_order(OrderRequest(ALIBABA, OrderSide.SELL, 100, OrderType.STOP, "backstop", stop_price=Decimal("100.0")))
        await exchange.run(local(HK, date(2022, 6, 14), "09:35"))
        return stop, await exchange.get_order(stop.broker_order_id), await exchange.fills(local(HK, date(2022, 6, 14), "00:00")), await exchange.positions()

    placed, done, fills, positions = clock.run(hold_overnight())

    assert placed.status is OrderStatus.SUBMITTED, "a stop placed after the close waits for the next open"
    assert done.status is OrderStatus.FILLED
    assert [(f.price, f.time) for f in fills] == [(Decimal("98.15"), local(HK, date(2022, 6, 14), "09:30"))]
    assert done.avg_fill_price < Decimal("100.0") - Decimal("1.8")
    assert positions == []


# --- Refusals ----------------------------------------------------------------------------------
def test_odd_lot_off_tick_and_malformed_orders_are_refused_with_an_actionable_reason():
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"))

    async def attempts():
        reasons = {}
        for name, request in {
            "odd_lot": market_order(ALIBABA, OrderSide.BUY, 150, "a"),
            "off_tick": OrderRequest(ALIBABA, OrderSide.BUY, 100, OrderType.LIMIT, "a", limit_price=Decimal("105.25")),
            "zero": market_order(ALIBABA, OrderSide.BUY, 0, "a"),
            "unknown": market_order(Symbol(HK, "00700"), OrderSide.BUY, 100, "a"),
            "no_limit": OrderRequest(ALIBABA, OrderSide.BUY, 100, OrderType.LIMIT, "a"),
        }.items():
            with pytest.raises(OrderRejected) as refused:
                await exchange.place_order(request)
            reasons[name] = str(refused.value)
        recorded = await exchange.find_order("a")
        fixed = await exchange.place_order(OrderRequest(ALIBABA, OrderSide.BUY, 100, OrderType.LIMIT, "a", limit_price=Decimal("105.2")))
        return reasons, recorded, fixed

    reasons, recorded, fixed = clock.run(attempts())

    assert "150" in reasons["odd_lot"] and "board lot 100" in reasons["odd_lot"] and "try 100" in reasons["odd_lot"]
    assert "105.25" in reasons["off_tick"] and "tick 0.1" in reasons["off_tick"] and "105.2 or 105.3" in reasons["off_tick"]
    assert "must be positive" in reasons["zero"]
    assert "HK.00700" in reasons["unknown"] and "HK.09988" in reasons["unknown"]
    assert "needs a limit price" in reasons["no_limit"]
    assert recorded is None, "a refused request is not recorded"
    assert fixed.status is not OrderStatus.REJECTED, "the same client id may be sent again once fixed"


def test_selling_more_than_held_and_buying_beyond_cash_are_refused():
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"))

    async def attempts():
        await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 100, "entry"))
        await exchange.place_order(OrderRequest(ALIBABA, OrderSide.SELL, 100, OrderType.STOP, "stop", stop_price=Decimal("100.0")))
        with pytest.raises(OrderRejected) as short:
            await exchange.place_order(market_order(ALIBABA, OrderSide.SELL, 100, "exit"))
        with pytest.raises(InsufficientFunds) as broke:
            await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 10_000, "too-big"))
        return str(short.value), str(broke.value), await exchange.positions()

    short, broke, positions = clock.run(attempts())
    assert "holding 100, of which 100 already in open sell orders" in short
    assert "buying 10000 HK.09988 at about 105.3 needs HKD 1,054," in broke
    assert "available HKD 989,454.95" in broke
    assert positions[0].quantity == 100


def test_lunch_break_refuses_market_orders_and_queues_limit_orders_until_13_00():
    exchange, clock = exchange_at(local(HK, JUNE_15, "12:30"))

    async def lunch():
        with pytest.raises(MarketClosed) as closed:
            await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 100, "lunch-market"))
        limit = await exchange.place_order(OrderRequest(ALIBABA, OrderSide.BUY, 100, OrderType.LIMIT, "lunch-limit", limit_price=Decimal("107.0")))
        await exchange.run(local(HK, JUNE_15, "12:59", 59))
        during = await exchange.get_order(limit.broker_order_id)
        await exchange.run(local(HK, JUNE_15, "13:01"))
        return str(closed.value), limit, during, await exchange.fills(local(HK, JUNE_15, "12:00"))

    reason, placed, during, fills = clock.run(lunch())
    assert "market closed (lunch break until 13:00 HKT)" in reason
    assert placed.status is OrderStatus.SUBMITTED and during.status is OrderStatus.SUBMITTED
    # 13:00 bar opens at 105.9: the queued order takes the ask at the first afternoon step.
    assert [(f.price, f.time) for f in fills] == [(Decimal("106.0"), local(HK, JUNE_15, "13:00"))]


def test_after_the_close_market_orders_name_the_next_open_and_day_orders_expire():
    exchange, clock = exchange_at(local(HK, JUNE_15, "15:00"))

    async def evening():
        resting = await exchange.place_order(OrderRequest(ALIBABA, OrderSide.BUY, 100, OrderType.LIMIT, "low-bid", limit_price=Decimal("90.0")))
        await exchange.run(local(HK, JUNE_15, "16:30"))
        with pytest.raises(MarketClosed) as closed:
            await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 100, "late"))
        return str(closed.value), await exchange.get_order(resting.broker_order_id)

    reason, expired = clock.run(evening())
    assert "market closed; next open 2022-06-16 09:30 HKT" in reason
    assert expired.status is OrderStatus.EXPIRED


# --- Liquidity and idempotency -------------------------------------------------------------------
def test_a_large_order_in_a_thin_market_fills_over_several_steps():
    # 4,000 shares a minute -> 1,000 a step -> 25 % participation = 250 -> 200 in board lots of 100.
    thin = synthetic_series("08002", JUNE_15, 9.0, 4_000)
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"), {thin.symbol: thin})
    updates: list[Order] = []

    async def trade():
        exchange.subscribe_orders(updates.append)
        first = await exchange.place_order(market_order(thin.symbol, OrderSide.BUY, 1000, "big"))
        await exchange.run(local(HK, JUNE_15, "10:02"))
        return first, await exchange.get_order(first.broker_order_id), await exchange.fills(local(HK, JUNE_15, "10:00"))

    first, done, fills = clock.run(trade())

    assert first.status is OrderStatus.PARTIALLY_FILLED and first.filled_quantity == 200
    assert [f.quantity for f in fills] == [200] * 5
    assert [f.time - fills[0].time for f in fills] == [timedelta(seconds=15 * k) for k in range(5)]
    assert done.status is OrderStatus.FILLED and done.avg_fill_price == Decimal("9.01")
    assert [u.status for u in updates] == [OrderStatus.SUBMITTED] + [OrderStatus.PARTIALLY_FILLED] * 4 + [OrderStatus.FILLED]
    # Each execution of 200 x 9.01 = 1,802.00: stamp 1.802 -> 2.00, trading fee 0.1018 -> 0.10,
    # SFC 0.0487 -> 0.05, AFRC 0.0027 -> 0.00; the commission (0.03 % of 9,010 = 2.703, so the
    # HKD 3.00 minimum) is charged once for the order: 3.00 + 5 x 2.15 = 13.75.
    assert [f.fees for f in fills] == [Decimal("5.15")] + [Decimal("2.15")] * 4
    assert done.fees == Decimal("13.75")


def test_the_same_client_order_id_never_places_twice():
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"))

    async def retry():
        first = await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 100, "cycle1-09988-1"))
        again = await exchange.place_order(market_order(ALIBABA, OrderSide.BUY, 100, "cycle1-09988-1"))
        return first, again, await exchange.positions(), await exchange.list_orders(open_only=False), await exchange.find_order("cycle1-09988-1")

    first, again, positions, orders, found = clock.run(retry())
    assert again.broker_order_id == first.broker_order_id
    assert len(orders) == 1 and positions[0].quantity == 100
    assert found == again


def test_snapshot_reports_the_board_lot_tick_and_synthetic_label():
    thin = synthetic_series("08003", JUNE_15, 10.0, 4_000, lot=2000)
    exchange, clock = exchange_at(local(HK, JUNE_15, "10:00"), {**samples(HK), thin.symbol: thin})
    snaps = clock.run(exchange.snapshots([ALIBABA, thin.symbol]))
    assert (snaps[ALIBABA].lot_size, snaps[ALIBABA].tick, snaps[ALIBABA].synthetic) == (100, Decimal("0.1"), False)
    assert (snaps[thin.symbol].lot_size, snaps[thin.symbol].tick, snaps[thin.symbol].synthetic) == (2000, Decimal("0.01"), True)
    with pytest.raises(UnknownSymbol, match="HK.00700"):
        clock.run(exchange.snapshots([Symbol(HK, "00700")]))


@pytest.mark.parametrize("symbol, day", [(ALIBABA, JUNE_15), (MSFT, date(2022, 6, 14))])
def test_a_snapshot_of_a_symbol_nobody_watches_quotes_what_a_subscriber_was_pushed(symbol, day):
    # A scan quotes every symbol of the universe; the exchange prices those from the bars without
    # building the session's steps. Each must equal the quote pushed at the same step.
    market = symbol.market
    session = CALENDARS[market].session(day)
    watched, watched_clock = exchange_at(session.open, market=market)
    pushed: list[Quote] = []

    async def push_all():
        watched.subscribe_quotes([symbol], pushed.append)
        await watched.run(session.close)

    watched_clock.run(push_all())
    unwatched, clock = exchange_at(session.open, market=market)

    async def snapshot_each_step():
        seen = []
        for q in pushed:
            await unwatched.run(q.time)
            seen.append((await unwatched.snapshots([symbol]))[symbol].quote)
        return seen

    assert len(pushed) == 4 * len(session.minute_grid())
    assert clock.run(snapshot_each_step()) == pushed
    assert not unwatched._tapes, "a snapshot must not build the session's steps"


# --- No look-ahead -----------------------------------------------------------------------------
def test_mid_session_bars_stop_at_the_last_closed_minute_and_daily_bars_before_today():
    t = local(HK, JUNE_15, "10:00", 30)
    exchange, clock = exchange_at(t)

    async def look():
        return (
            await exchange.bars(ALIBABA, Timeframe.M1, t - timedelta(hours=1), t + timedelta(hours=1)),
            await exchange.bars(ALIBABA, Timeframe.M5, t - timedelta(hours=1), t + timedelta(hours=1)),
            await exchange.bars(ALIBABA, Timeframe.D1, t - timedelta(days=10), t + timedelta(days=10)),
        )

    m1, m5, d1 = clock.run(look())
    assert m1.index[-1] == local(HK, JUNE_15, "09:59"), "the 10:00 bar is still forming"
    assert m5.index[-1] == local(HK, JUNE_15, "09:55")
    assert CALENDARS[HK].local(d1.index[-1].to_pydatetime()).date() == date(2022, 6, 14)


def test_a_caller_that_changes_the_bars_it_was_given_changes_nothing_the_exchange_gives_next():
    t = local(HK, JUNE_15, "10:00", 30)
    exchange, clock = exchange_at(t)

    async def read_change_read():
        first = await exchange.bars(ALIBABA, Timeframe.M1, t - timedelta(hours=1), t)
        untouched = first.copy()
        first["close"] = 0.0
        first.iloc[0, first.columns.get_loc("high")] = -1.0
        return untouched, await exchange.bars(ALIBABA, Timeframe.M1, t - timedelta(hours=1), t)

    untouched, again = clock.run(read_change_read())
    pd.testing.assert_frame_equal(again, untouched)


def bar_close(label: datetime, timeframe: Timeframe) -> datetime:
    """A bar closes after its length or at the end of its session part (lunch, close), whichever is first."""
    session = CALENDARS[HK].session_at(label)
    part_end = next(end for start, end in session.parts if start <= label < end)
    return min(label + timedelta(minutes=timeframe.minutes), part_end)


SAMPLE_START = datetime(2022, 5, 19, 1, 30, tzinfo=timezone.utc)   # the first 09988 minute bar
SAMPLE_END = datetime(2022, 6, 15, 9, 0, tzinfo=timezone.utc)


@settings(max_examples=60, deadline=None)
@given(
    t=st.datetimes(min_value=SAMPLE_START.replace(tzinfo=None), max_value=SAMPLE_END.replace(tzinfo=None), timezones=st.just(timezone.utc)),
    timeframe=st.sampled_from([Timeframe.M1, Timeframe.M5, Timeframe.H1]),
)
def test_nothing_returned_at_time_t_closes_after_t(t, timeframe):
    exchange, clock = exchange_at(t)
    minute = samples(HK)[ALIBABA].minute

    async def look():
        return (
            await exchange.bars(ALIBABA, timeframe, SAMPLE_START, SAMPLE_END),
            await exchange.bars(ALIBABA, Timeframe.D1, SAMPLE_START - timedelta(days=30), SAMPLE_END + timedelta(days=1)),
            (await exchange.snapshots([ALIBABA]))[ALIBABA].quote,
        )

    bars, daily, quote = clock.run(look())

    if timeframe is Timeframe.M1:
        assert (bars.index + timedelta(minutes=1) <= t).all()
        assert len(bars) == int((minute.index + timedelta(minutes=1) <= t).sum()), "every closed bar, and only those"
    else:
        everything = resample(minute, timeframe, CALENDARS[HK])
        closes = [bar_close(label.to_pydatetime(), timeframe) for label in everything.index]
        expected = everything[[c <= t for c in closes]]
        assert list(bars.index) == list(expected.index), "every closed bar, and only those"
        assert (bars.to_numpy() == expected.to_numpy()).all(), "a closed bar holds all of its minutes"
    today = CALENDARS[HK].trading_day(t)
    assert all(CALENDARS[HK].local(d.to_pydatetime()).date() < today for d in daily.index)
    assert quote.time <= t
    last_open = minute.index[minute.index <= t][-1].to_pydatetime()
    assert quote.time == last_open + timedelta(seconds=15 * min(3, (t - last_open) // timedelta(seconds=15)))
