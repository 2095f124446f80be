"""The in-process paper exchange: the ``Broker`` contract over historical bars on an injected clock.

Replay
    Each 1-minute bar is replayed as four steps at +0, +15, +30 and +45 s: the open, the extreme
    nearer the open, the other extreme, the close (equally distant extremes: a rising bar visits
    the low first, a falling bar the high). The bar's volume is split evenly over its steps.
    ``run(until)`` walks the steps on the clock (``await clock.sleep_until``), matches working
    orders and pushes quotes and order updates to subscribers; ``start(until)`` runs it as a
    background task and ``stop()`` ends it. Steps before the moment a run starts are not
    replayed (their prices still show in snapshots). Without a running replay the exchange
    still answers from the data at ``clock.now()`` and fills marketable orders at once; only
    resting orders wait for the replay.

What is visible at ``now`` (no look-ahead)
    Quotes are the latest step at or before now. ``bars()`` returns only bars whose close
    (open + length) is at or before now: the forming bar is never returned. Daily bars are only
    those of days before today's trading day (today's daily bar includes the closing auction,
    which the minute bars do not show). Intraday bars of more than a minute are anchored on the
    session part and never span the lunch break (``data.bars.resample``). Daily bars are indexed
    by their trading date at market-local midnight, in UTC.

Prices
    Last price on the instrument's tick grid; bid/ask are ``spread_ticks`` ticks either side.
    Market orders buy at the ask and sell at the bid, ``slippage_ticks`` worse. Limit orders fill
    when the market reaches them (buy when ask <= limit, at the ask, never above the limit).
    Stop orders trigger when the last price trades through the stop (sell: at or below) and then
    fill like market orders at the first step that can fill them: after a gap they fill at the
    gapped price, not at the stop. Stops must be placed on the far side of the last price.

Liquidity
    A step fills at most ``max_volume_participation`` x its volume (in whole board lots), shared
    by every order in that symbol; the rest of an order keeps working (PARTIALLY_FILLED) in the
    following steps. A bar with no recorded volume (the HK opening bar: the samples lack the
    auction volume) offers the volume of the last bar that had some, so orders at 09:30 fill.

Refusals: raised, never returned
    ``place_order`` raises ``OrderRejected`` (``InsufficientFunds``, ``MarketClosed``) with a reason a
    person can act on: unknown symbol, quantity not a positive whole number of board lots, price
    missing or off the tick grid, stop on the wrong side of the price, selling more than is held
    and not already offered (no short selling), cash short for a buy (cash less what open buys
    reserve), bracket legs (``supports_bracket`` is False). A refused request is not recorded, so
    the same ``client_order_id`` may be sent again once fixed. Orders never reach REJECTED.

Sessions
    Like a broker: outside continuous trading (before the open, at the HK lunch break, after the
    close, holidays) market orders raise ``MarketClosed`` ("market closed (lunch break until
    13:00 HKT)", "market closed; next open 2022-06-16 09:30 HKT"); limit and stop orders are
    accepted and wait for the next open. Orders are day orders: what is still working at the
    close of the session they were placed for (the next session, when placed outside one)
    becomes EXPIRED, keeping any partial fill.

Money
    Fees per ``brokers.fees`` (commission minimum once per order), accumulated on the order and
    taken from cash. Positions are long only; average cost excludes fees. Equity is cash plus
    positions at the last price.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from brokers.base import (
    BAR_COLUMNS,
    Account,
    BrokerError,
    BrokerPosition,
    CallbackSubscription,
    Capabilities,
    Fill,
    MarketClosed,
    Order,
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Quote,
    Snapshot,
    Subscription,
    Timeframe,
    UnknownSymbol,
)
from brokers.paper_matching import AVG_PRICE_PLACES, Holding, OrderMatching, WorkingOrder
from brokers.paper_tapes import (
    BAR_US, STEP_OFFSETS_US, STEP_US, STEPS_PER_BAR, History, Tape, Timeline, build_tape, from_us, quote_at, to_us,
)
from core.clock import Clock
from config.settings import Profile
from data.bars import BarSeries, empty_bars, resample
from data.calendar import MarketCalendar, SessionState
from core.instruments import (
    OrderSide,
    PositionSide,
    Symbol,
    SymbolError,
    parse_symbol,
    tick_size,
)

log = logging.getLogger(__name__)


CAPABILITIES = Capabilities(
    supports_stop_orders=True,
    supports_bracket=False,
    supports_quote_push=True,
    supports_order_push=True,
    is_paper=True,
    name="paper",
)


class PaperExchange(OrderMatching):
    """The paper broker; see the module docstring for every behaviour a trader would notice."""

    def __init__(
        self,
        series: Mapping[Symbol, BarSeries],
        clock: Clock,
        calendar: MarketCalendar,
        profile: Profile,
    ) -> None:
        foreign = [str(s) for s in series if s.market is not profile.market]
        if foreign:
            raise ValueError(f"the {profile.market.value} paper exchange cannot trade {', '.join(foreign)}; give it {profile.market.value} bars only")
        if calendar.market is not profile.market:
            raise ValueError(f"calendar is {calendar.market.value} but the profile trades {profile.market.value}")
        self._clock = clock
        self._calendar = calendar
        self._profile = profile
        self._market = profile.market
        self._history = {symbol: History.of(s, calendar) for symbol, s in series.items()}
        self._rank = {symbol: k for k, symbol in enumerate(self._history)}
        self._tapes: dict[tuple[Symbol, date], Tape] = {}
        self._timelines: dict[date, Timeline] = {}
        self._cash = profile.paper.starting_cash
        self._holdings: dict[Symbol, Holding] = {}
        self._orders: dict[str, WorkingOrder] = {}
        self._by_client_id: dict[str, str] = {}
        self._working: dict[Symbol, list[WorkingOrder]] = {}
        self._fills: list[Fill] = []
        self._liquidity_used: dict[Symbol, tuple[int, int]] = {}   # symbol -> (step time, shares taken)
        self._quote_listeners: dict[Symbol, list[Callable[[Quote], None]]] = {}
        self._order_listeners: list[Callable[[Order], None]] = []
        self._order_ids = itertools.count(1)
        self._replayed_until_us: int | None = None
        self._driver: asyncio.Task[None] | None = None

    # --- Broker: lifecycle ----------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        await self.stop()

    # --- The replay driver ----------------------------------------------------------------------
    async def run(self, until: datetime) -> None:
        """Replay every step from now to ``until`` on the clock, then leave the clock at ``until``."""
        until_us = to_us(until)
        floor_us = to_us(self._clock.now()) - 1
        if self._replayed_until_us is not None:
            floor_us = max(floor_us, self._replayed_until_us)
        for day in self._days_between(self._calendar.trading_day(from_us(floor_us + 1)), self._calendar.trading_day(until)):
            timeline = self._timeline(day)
            first = int(np.searchsorted(np.asarray(timeline.times_us, dtype=np.int64), floor_us, "right"))
            for i in range(first, len(timeline.times_us)):
                t = timeline.times_us[i]
                if t > until_us:
                    break
                await self._clock.sleep_until(from_us(t))
                self._replayed_until_us = t
                self._apply_steps(day, t)
            if timeline.close_us is not None and floor_us < timeline.close_us <= until_us:
                await self._clock.sleep_until(from_us(timeline.close_us))
                self._replayed_until_us = timeline.close_us
                self._expire_orders_through(day)
        await self._clock.sleep_until(until)
        self._replayed_until_us = max(self._replayed_until_us or until_us, until_us)

    def start(self, until: datetime) -> asyncio.Task[None]:
        """Run the replay to ``until`` as a background task on the running loop."""
        if self.running:
            raise RuntimeError("the paper replay is already running; stop() it before starting another")
        self._driver = asyncio.get_running_loop().create_task(self.run(until), name="paper-replay")
        return self._driver

    async def stop(self) -> None:
        """Stop the background replay (if any) and wait until it has stopped."""
        driver, self._driver = self._driver, None
        if driver is None or driver.done():
            return
        driver.cancel()
        try:
            await driver
        except asyncio.CancelledError:
            pass

    @property
    def running(self) -> bool:
        return self._driver is not None and not self._driver.done()

    def _days_between(self, first: date, last: date) -> list[date]:
        days = {d for h in self._history.values() for d in h.days if first <= d <= last}
        return sorted(days)

    def _timeline(self, day: date) -> Timeline:
        cached = self._timelines.get(day)
        if cached is not None:
            return cached
        # Every step time of the day across symbols. A symbol's tape is built only when it is quoted
        # or traded: most of a universe is never looked at step by step.
        opens = [h.open_us[slice(*h.day_rows[day])] for h in self._history.values() if day in h.day_rows]
        minutes = np.unique(np.concatenate(opens)) if opens else np.zeros(0, dtype=np.int64)
        times = np.unique((minutes[:, None] + STEP_OFFSETS_US[None, :]).ravel())
        session = self._calendar.session(day)
        timeline = Timeline(times.tolist(), to_us(session.close) if session else None)
        # The replay moves forward a day at a time: keep memory flat over long replays (a 1 GB box).
        self._timelines = {day: timeline}
        self._tapes = {key: tape for key, tape in self._tapes.items() if key[1] >= day}
        return timeline

    def _apply_steps(self, day: date, t: int) -> None:
        # Symbols in the universe's order, as when every symbol's step was walked; only those with a
        # working order or a quote listener can notice a step.
        watched = {*(s for s, w in self._working.items() if w), *(s for s, ls in self._quote_listeners.items() if ls)}
        for symbol in sorted(watched, key=self._rank.__getitem__):
            if day not in self._history[symbol].day_rows:
                continue
            tape = self._tape(symbol, day)
            i = tape.step_at_time(t)
            if i is None:
                continue
            working = self._working.get(symbol)
            if working:
                for w in list(working):
                    self._try_fill(w, tape, i)
            listeners = self._quote_listeners.get(symbol)
            if listeners:
                quote = tape.quote(i)
                for listener in list(listeners):
                    _call(listener, quote)

    def _expire_orders_through(self, day: date) -> None:
        for working in list(self._working.values()):
            for w in list(working):
                if w.session_day <= day:
                    self._finish(w, OrderStatus.EXPIRED)

    # --- Market data ----------------------------------------------------------------------------
    def _tape(self, symbol: Symbol, day: date) -> Tape:
        key = (symbol, day)
        tape = self._tapes.get(key)
        if tape is None:
            tape = build_tape(self._history[symbol], day, self._profile)
            self._tapes[key] = tape
        return tape

    def _step_at(self, symbol: Symbol, now: datetime) -> tuple[Tape, int] | None:
        """The latest replay step of ``symbol`` at or before ``now``, or None before its data."""
        located = self._locate(symbol, now)
        return (self._tape(symbol, located[0]), located[1]) if located else None

    def _locate(self, symbol: Symbol, now: datetime) -> tuple[date, int] | None:
        """The trading day and step of the latest replay step of ``symbol`` at or before ``now``."""
        history = self._history[symbol]
        now_us = to_us(now)
        row = int(np.searchsorted(history.open_us, now_us, "right")) - 1
        if row < 0:
            return None
        day = self._calendar.trading_day(from_us(history.open_us[row]))
        first_row, _ = history.day_rows[day]
        elapsed_steps = min(STEPS_PER_BAR - 1, (now_us - int(history.open_us[row])) // STEP_US)
        return day, (row - first_row) * STEPS_PER_BAR + elapsed_steps

    def _quote(self, symbol: Symbol, now: datetime) -> Quote | None:
        """The quote at ``now``, or None before the symbol's data."""
        located = self._locate(symbol, now)
        return self._quote_at_step(symbol, *located) if located else None

    def _quote_at_step(self, symbol: Symbol, day: date, i: int) -> Quote:
        # From the day's tape when it is built, else from the bars directly.
        tape = self._tapes.get((symbol, day))
        return tape.quote(i) if tape is not None else quote_at(self._history[symbol], day, i, self._profile)

    def _known(self, symbol: Symbol | str) -> Symbol:
        try:
            canonical = parse_symbol(symbol)
        except SymbolError as e:
            raise UnknownSymbol(str(e)) from None
        if canonical not in self._history:
            raise UnknownSymbol(self._unknown_message([canonical]))
        return canonical

    def _unknown_message(self, symbols: Iterable[Symbol]) -> str:
        known = ", ".join(str(s) for s in sorted(self._history)) or "none"
        names = ", ".join(str(s) for s in symbols)
        return f"unknown symbol(s) {names}: the paper exchange only has bars for {known}"

    def _no_price_message(self, symbol: Symbol, now: datetime) -> str:
        history = self._history[symbol]
        start = from_us(history.open_us[0]).isoformat() if len(history.open_us) else "nowhere (no minute bars)"
        return f"no price for {symbol} at {now.isoformat()}: its bars start at {start}"

    async def snapshots(self, symbols: Sequence[Symbol]) -> dict[Symbol, Snapshot]:
        canonical = []
        unknown = []
        for s in symbols:
            try:
                canonical.append(self._known(s))
            except UnknownSymbol:
                unknown.append(s)
        if unknown:
            raise UnknownSymbol(self._unknown_message(unknown))
        now = self._clock.now()
        out: dict[Symbol, Snapshot] = {}
        for symbol in canonical:
            located = self._locate(symbol, now)
            if located is None:
                raise BrokerError(self._no_price_message(symbol, now))
            day, i = located
            quote = self._quote_at_step(symbol, day, i)
            series = self._history[symbol].series
            out[symbol] = Snapshot(
                quote=quote,
                lot_size=series.lot_size,
                tick=tick_size(self._market, quote.price, day, self._profile.ticks.hk_phase2_date),
                name=series.name,
                synthetic=series.synthetic,
            )
        return out

    async def history_quota(self) -> None:
        return None         # the bars are the replay's own: nothing is counted

    async def bars(self, symbol: Symbol, timeframe: Timeframe, start: datetime, end: datetime) -> pd.DataFrame:
        symbol = self._known(symbol)
        now = self._clock.now()
        if timeframe is Timeframe.D1:
            return self._daily_bars(symbol, start, end, now)
        width = timedelta(minutes=timeframe.minutes)
        minute = self._closed_minute_bars(symbol, start, end + width if timeframe is not Timeframe.M1 else end, now)
        if timeframe is Timeframe.M1:
            return minute
        out = resample(minute, timeframe, self._calendar)
        if out.empty:
            return empty_bars()
        out = out[(out.index >= start) & (out.index < end)]
        if not out.empty and self._bar_close(out.index[-1], width) > now:
            out = out.iloc[:-1]
        return out

    def _closed_minute_bars(self, symbol: Symbol, start: datetime, end: datetime, now: datetime) -> pd.DataFrame:
        history = self._history[symbol]
        last_open = min(to_us(end), to_us(now) - BAR_US + 1)
        lo = int(np.searchsorted(history.open_us, to_us(start), "left"))
        hi = int(np.searchsorted(history.open_us, last_open, "left"))
        # No copy: under pandas' copy-on-write a caller that changes the slice changes its own copy.
        return history.bars.iloc[lo:max(lo, hi)]

    def _bar_close(self, label: pd.Timestamp, width: timedelta) -> datetime:
        opened = label.to_pydatetime()
        session = self._calendar.session_at(opened)
        part_ends = [end for start, end in (session.parts if session else []) if start <= opened < end]
        return min([opened + width, *part_ends])

    def _daily_bars(self, symbol: Symbol, start: datetime, end: datetime, now: datetime) -> pd.DataFrame:
        daily = self._history[symbol].series.daily
        today = pd.Timestamp(self._calendar.trading_day(now))
        out = daily[daily.index < today][BAR_COLUMNS].copy()
        out.index = pd.DatetimeIndex(out.index).tz_localize(self._calendar.tz).tz_convert("UTC")
        return out[(out.index >= start) & (out.index < end)]

    # --- Orders ---------------------------------------------------------------------------------
    async def place_order(self, request: OrderRequest) -> Order:
        existing = self._by_client_id.get(request.client_order_id)
        if existing is not None:
            return self._orders[existing].order
        now = self._clock.now()
        symbol = self._symbol_for_order(request)
        self._check_shape(request, symbol, now)
        state = self._calendar.state(now)
        if request.order_type is OrderType.MARKET and state is not SessionState.OPEN:
            raise MarketClosed(f"{request.side.value} {request.quantity} {symbol} at market refused: {self._closed_reason(now, state)}")
        step = self._step_at(symbol, now)
        if step is None:
            raise OrderRejected(self._no_price_message(symbol, now))
        tape, i = step
        if request.order_type is OrderType.MARKET and tape.day != self._calendar.trading_day(now):
            raise OrderRejected(f"no trade in {symbol} yet today ({now.isoformat()}); the market order would have no price. Use a limit order.")
        self._check_stop_side(request, symbol, tape.prices[i])
        if request.side is OrderSide.SELL:
            self._check_sellable(request, symbol)
        else:
            self._check_cash(request, symbol, tape, i)

        working = self._accept(request, symbol, now, state)
        if state is SessionState.OPEN and tape.day == self._calendar.trading_day(now):
            self._try_fill(working, tape, i)
        return working.order

    async def cancel_order(self, broker_order_id: str) -> Order:
        w = self._working_order(broker_order_id)
        if not w.order.status.is_final:
            self._finish(w, OrderStatus.CANCELLED)
        return w.order

    async def get_order(self, broker_order_id: str) -> Order:
        return self._working_order(broker_order_id).order

    def _working_order(self, broker_order_id: str) -> WorkingOrder:
        w = self._orders.get(broker_order_id)
        if w is None:
            raise BrokerError(f"no paper order with id {broker_order_id!r}; ids look like PAPER-000001 (list_orders(open_only=False) shows them all)")
        return w

    async def find_order(self, client_order_id: str) -> Order | None:
        broker_id = self._by_client_id.get(client_order_id)
        return self._orders[broker_id].order if broker_id else None

    async def list_orders(self, open_only: bool = True, symbol: Symbol | None = None) -> list[Order]:
        wanted = self._known(symbol) if symbol is not None else None
        return [
            w.order for w in self._orders.values()
            if (not open_only or not w.order.status.is_final) and (wanted is None or w.order.symbol == wanted)
        ]

    # --- Account --------------------------------------------------------------------------------
    def _last_price(self, symbol: Symbol) -> Decimal | None:
        quote = self._quote(symbol, self._clock.now())
        return quote.price if quote else None

    async def positions(self) -> list[BrokerPosition]:
        return [
            BrokerPosition(
                symbol=symbol, side=PositionSide.LONG, quantity=h.quantity,
                avg_cost=(h.cost / h.quantity).quantize(AVG_PRICE_PLACES), market_price=self._last_price(symbol),
            )
            for symbol, h in sorted(self._holdings.items())
        ]

    async def account(self) -> Account:
        marked = sum(
            ((self._last_price(symbol) or h.cost / h.quantity) * h.quantity for symbol, h in self._holdings.items()),
            Decimal(0),
        )
        return Account(
            cash=self._cash,
            equity=self._cash + marked,
            currency=self._market.currency,
            buying_power=self._cash - self._reserved_for_buys(),
        )

    async def fills(self, since: datetime, symbol: Symbol | None = None) -> list[Fill]:
        wanted = self._known(symbol) if symbol is not None else None
        return [f for f in self._fills if f.time >= since and (wanted is None or f.symbol == wanted)]

    # --- Push -----------------------------------------------------------------------------------
    def subscribe_quotes(self, symbols: Sequence[Symbol], on_quote: Callable[[Quote], None]) -> Subscription:
        canonical = [self._known(s) for s in symbols]
        for symbol in canonical:
            self._quote_listeners.setdefault(symbol, []).append(on_quote)

        def unsubscribe() -> None:
            for symbol in canonical:
                listeners = self._quote_listeners.get(symbol, [])
                if on_quote in listeners:
                    listeners.remove(on_quote)
                if not listeners:
                    self._quote_listeners.pop(symbol, None)

        return CallbackSubscription(unsubscribe)

    def subscribe_orders(self, on_order: Callable[[Order], None]) -> Subscription:
        self._order_listeners.append(on_order)
        return CallbackSubscription(lambda: self._order_listeners.remove(on_order) if on_order in self._order_listeners else None)

    def _publish(self, order: Order) -> None:
        for listener in list(self._order_listeners):
            _call(listener, order)


def _call(listener: Callable, value: object) -> None:
    # A failing subscriber must not stop the exchange (nor the other subscribers).
    try:
        listener(value)
    except Exception:
        log.exception("paper exchange subscriber %r failed on %r", listener, value)
