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
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
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
    InsufficientFunds,
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
from brokers.fees import execution_fees
from core.clock import Clock
from config.settings import Profile
from data.bars import BarSeries, empty_bars, resample
from data.calendar import MarketCalendar, SessionState
from core.policy_lab import Steps
from core.instruments import (
    HK_SPREAD_PHASE1_DATE,
    Market,
    OrderSide,
    PositionSide,
    Rounding,
    Symbol,
    SymbolError,
    check_lot_multiple,
    is_on_tick,
    parse_symbol,
    round_to_tick,
    tick_size,
    ticks_away,
)

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)
BAR_US = 60_000_000
STEP_OFFSETS_US = np.array([0, 15_000_000, 30_000_000, 45_000_000], dtype=np.int64)
STEPS_PER_BAR = len(STEP_OFFSETS_US)
STEP_US = int(STEP_OFFSETS_US[1])
# Average prices are reported to four places, as brokers' deal reports do.
AVG_PRICE_PLACES = Decimal("0.0001")

CAPABILITIES = Capabilities(
    supports_stop_orders=True,
    supports_bracket=False,
    supports_quote_push=True,
    supports_order_push=True,
    is_paper=True,
    name="paper",
)


def _us(t: datetime) -> int:
    return (t - EPOCH) // MICROSECOND


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def _tick_regime(market: Market, day: date, phase2: date | None) -> date:
    # The tick depends on the day only through the spread table in force: one day per table
    # lets the price cache serve every day.
    if market is Market.HK:
        if phase2 is not None and day >= phase2:
            return phase2
        if day >= HK_SPREAD_PHASE1_DATE:
            return HK_SPREAD_PHASE1_DATE
    return date.min


@lru_cache(maxsize=100_000)
def _price_with_spread(market: Market, price: float, regime: date, spread_ticks: int, phase2: date | None) -> tuple[Decimal, Decimal, Decimal]:
    last = round_to_tick(market, price, regime, Rounding.NEAREST, phase2)
    ask = ticks_away(market, last, spread_ticks, regime, phase2)
    bid = ticks_away(market, last, -spread_ticks, regime, phase2)
    if bid <= 0:
        bid = tick_size(market, last, regime, phase2)
    return last, bid, ask


# --- Data, precomputed as arrays ------------------------------------------------------------------
@dataclass(frozen=True)
class _History:
    """One symbol's minute bars as numpy arrays, with the row range of each trading day."""

    series: BarSeries
    open_us: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    liquidity_volume: np.ndarray       # volume, with unrecorded (zero) volume carried forward
    days: list[date]
    day_rows: dict[date, tuple[int, int]]
    daily_days: np.ndarray             # the daily frame's dates as datetime64[D], sorted

    @classmethod
    def of(cls, series: BarSeries, calendar: MarketCalendar) -> "_History":
        minute = series.minute
        index = pd.DatetimeIndex(minute.index)
        # Rows are in time order, so each trading day is one contiguous run of rows.
        local_midnights = index.tz_convert(calendar.tz).tz_localize(None).normalize().as_unit("us").asi8
        midnights, firsts = np.unique(local_midnights, return_index=True)
        ends = [*firsts[1:].tolist(), len(index)]
        days = [ts.date() for ts in pd.to_datetime(midnights, unit="us")]
        day_rows = {d: (int(start), int(end)) for d, start, end in zip(days, firsts, ends)}
        volume = minute["volume"].to_numpy(dtype=float)
        liquidity = pd.Series(np.where(volume > 0, volume, np.nan)).ffill().fillna(0).to_numpy()
        return cls(
            series=series,
            open_us=index.as_unit("us").asi8 if len(index) else np.array([], dtype=np.int64),
            open=minute["open"].to_numpy(dtype=float),
            high=minute["high"].to_numpy(dtype=float),
            low=minute["low"].to_numpy(dtype=float),
            close=minute["close"].to_numpy(dtype=float),
            volume=volume,
            liquidity_volume=liquidity,
            days=sorted(day_rows),
            day_rows=day_rows,
            daily_days=pd.DatetimeIndex(series.daily.index).to_numpy().astype("datetime64[D]"),
        )


def _spread_over_steps(volume: np.ndarray) -> np.ndarray:
    whole = np.rint(volume).astype(np.int64)
    base, extra = np.divmod(whole, STEPS_PER_BAR)
    return (base[:, None] + (np.arange(STEPS_PER_BAR)[None, :] < extra[:, None])).ravel()


@dataclass
class _Tape:
    """One symbol's session as replay steps (four per bar), ready to quote and match against."""

    symbol: Symbol
    day: date
    times_us: np.ndarray
    prices: list[Decimal]
    bids: list[Decimal]
    asks: list[Decimal]
    highs: list[Decimal]
    lows: list[Decimal]
    session_volume: list[int]
    fillable: list[int]                # shares a step may fill, in whole board lots
    prev_close: Decimal | None

    def quote(self, i: int) -> Quote:
        return Quote(
            symbol=self.symbol, time=_dt(self.times_us[i]), price=self.prices[i], bid=self.bids[i],
            ask=self.asks[i], volume=self.session_volume[i], open=self.prices[0], high=self.highs[i],
            low=self.lows[i], prev_close=self.prev_close,
        )


def _build_tape(history: _History, day: date, profile: Profile) -> _Tape:
    start, end = history.day_rows[day]
    o, h, l, c = (a[start:end] for a in (history.open, history.high, history.low, history.close))
    up, down = h - o, o - l
    high_first = (up < down) | ((up == down) & (c < o))
    path = np.column_stack([o, np.where(high_first, h, l), np.where(high_first, l, h), c]).ravel()
    times = (history.open_us[start:end, None] + STEP_OFFSETS_US[None, :]).ravel()
    step_volume = _spread_over_steps(history.volume[start:end])
    lot = history.series.lot_size
    fillable = (_spread_over_steps(history.liquidity_volume[start:end]) * profile.paper.max_volume_participation).astype(np.int64) // lot * lot

    market = history.series.symbol.market
    phase2 = profile.ticks.hk_phase2_date
    regime = _tick_regime(market, day, phase2)
    spread = profile.paper.spread_ticks

    def priced(values: np.ndarray) -> list[tuple[Decimal, Decimal, Decimal]]:
        return [_price_with_spread(market, v, regime, spread, phase2) for v in values.tolist()]

    steps = priced(path)
    return _Tape(
        symbol=history.series.symbol,
        day=day,
        times_us=times,
        prices=[s[0] for s in steps],
        bids=[s[1] for s in steps],
        asks=[s[2] for s in steps],
        highs=[s[0] for s in priced(np.maximum.accumulate(path))],
        lows=[s[0] for s in priced(np.minimum.accumulate(path))],
        session_volume=np.cumsum(step_volume).tolist(),
        fillable=fillable.tolist(),
        prev_close=_prev_close(history, day, market, regime, spread, phase2),
    )


class SessionTapes:
    """The steps a replay quotes, per symbol and day, for code that re-walks them (``policy_lab``).

    The same tape the exchange builds (four prices a bar, bid ``spread_ticks`` below the last), so
    a re-exit sees exactly the prices the agent saw. Market sells fill at the bid less the profile's
    slippage, like ``PaperExchange``.
    """

    def __init__(self, series: Mapping[Symbol, BarSeries], calendar: MarketCalendar, profile: Profile) -> None:
        self._series = series
        self._calendar = calendar
        self._profile = profile
        self._histories: dict[Symbol, _History] = {}
        self._steps: dict[tuple[Symbol, date], Steps] = {}

    def steps(self, symbol: Symbol, day: date) -> Steps:
        """The steps of ``symbol`` on ``day`` (built once); empty when it did not trade that day."""
        key = (symbol, day)
        if key not in self._steps:
            self._steps[key] = self._build(symbol, day)
        return self._steps[key]

    def _build(self, symbol: Symbol, day: date) -> Steps:
        history = self._histories.get(symbol)
        if history is None:
            history = self._histories[symbol] = _History.of(self._series[symbol], self._calendar)
        if day not in history.day_rows:
            return Steps([], [], [], [], [])
        tape = _build_tape(history, day, self._profile)
        sells = [_with_slippage(symbol.market, bid, False, day, self._profile) for bid in tape.bids]
        return Steps([_dt(t) for t in tape.times_us.tolist()], tape.prices, tape.bids, tape.asks, sells)


def _with_slippage(market: Market, price: Decimal, buying: bool, day: date, profile: Profile) -> Decimal:
    """A market order's price: ``slippage_ticks`` worse than the bid or ask (never below a tick)."""
    slippage = profile.paper.slippage_ticks
    if not slippage:
        return price
    worse = ticks_away(market, price, slippage if buying else -slippage, day, profile.ticks.hk_phase2_date)
    return worse if worse > 0 else price


def _prev_close(history: _History, day: date, market: Market, regime: date, spread: int, phase2: date | None) -> Decimal | None:
    daily = history.series.daily
    earlier_daily = int(np.searchsorted(history.daily_days, np.datetime64(day, "D"), "left"))
    if earlier_daily > 0:
        return _price_with_spread(market, float(daily["close"].iloc[earlier_daily - 1]), regime, spread, phase2)[0]
    earlier_days = [d for d in history.days if d < day]
    if earlier_days:
        _, end = history.day_rows[earlier_days[-1]]
        return _price_with_spread(market, float(history.close[end - 1]), regime, spread, phase2)[0]
    return None


@dataclass(frozen=True)
class _Timeline:
    """Every step of one trading day across symbols, in time order, and the session close."""

    times_us: list[int]
    groups: list[list[tuple[_Tape, int]]]
    close_us: int | None


# --- Orders and holdings ----------------------------------------------------------------------------
@dataclass
class _WorkingOrder:
    order: Order
    session_day: date
    value_filled: Decimal = Decimal(0)
    fills: int = 0
    triggered: bool = False


@dataclass
class _Holding:
    quantity: int = 0
    cost: Decimal = Decimal(0)


class PaperExchange:
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
        self._history = {symbol: _History.of(s, calendar) for symbol, s in series.items()}
        self._tapes: dict[tuple[Symbol, date], _Tape] = {}
        self._timelines: dict[date, _Timeline] = {}
        self._cash = profile.paper.starting_cash
        self._holdings: dict[Symbol, _Holding] = {}
        self._orders: dict[str, _WorkingOrder] = {}
        self._by_client_id: dict[str, str] = {}
        self._working: dict[Symbol, list[_WorkingOrder]] = {}
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
        until_us = _us(until)
        floor_us = _us(self._clock.now()) - 1
        if self._replayed_until_us is not None:
            floor_us = max(floor_us, self._replayed_until_us)
        for day in self._days_between(self._calendar.trading_day(_dt(floor_us + 1)), self._calendar.trading_day(until)):
            timeline = self._timeline(day)
            first = int(np.searchsorted(np.asarray(timeline.times_us, dtype=np.int64), floor_us, "right"))
            for i in range(first, len(timeline.times_us)):
                t = timeline.times_us[i]
                if t > until_us:
                    break
                await self._clock.sleep_until(_dt(t))
                self._replayed_until_us = t
                self._apply_steps(timeline.groups[i])
            if timeline.close_us is not None and floor_us < timeline.close_us <= until_us:
                await self._clock.sleep_until(_dt(timeline.close_us))
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

    def _timeline(self, day: date) -> _Timeline:
        cached = self._timelines.get(day)
        if cached is not None:
            return cached
        tapes = [self._tape(symbol, day) for symbol, history in self._history.items() if day in history.day_rows]
        # Every symbol's steps in time order (ties in symbol order: a stable sort), grouped by time.
        times_us = np.concatenate([t.times_us for t in tapes]) if tapes else np.zeros(0, dtype=np.int64)
        tape_of = np.concatenate([np.full(len(t.times_us), k) for k, t in enumerate(tapes)]) if tapes else times_us
        step_of = np.concatenate([np.arange(len(t.times_us)) for t in tapes]) if tapes else times_us
        order = np.argsort(times_us, kind="stable")
        times_us, tape_of, step_of = times_us[order], tape_of[order].tolist(), step_of[order].tolist()
        distinct, firsts = np.unique(times_us, return_index=True)
        bounds = [*firsts.tolist(), len(times_us)]
        times = distinct.tolist()
        groups = [[(tapes[k], i) for k, i in zip(tape_of[a:b], step_of[a:b])] for a, b in zip(bounds, bounds[1:])]
        session = self._calendar.session(day)
        timeline = _Timeline(times, groups, _us(session.close) if session else None)
        # The replay moves forward a day at a time: keep memory flat over long replays (a 1 GB box).
        self._timelines = {day: timeline}
        self._tapes = {key: tape for key, tape in self._tapes.items() if key[1] >= day}
        return timeline

    def _apply_steps(self, group: list[tuple[_Tape, int]]) -> None:
        for tape, i in group:
            working = self._working.get(tape.symbol)
            if working:
                for w in list(working):
                    self._try_fill(w, tape, i)
            listeners = self._quote_listeners.get(tape.symbol)
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
    def _tape(self, symbol: Symbol, day: date) -> _Tape:
        key = (symbol, day)
        tape = self._tapes.get(key)
        if tape is None:
            tape = _build_tape(self._history[symbol], day, self._profile)
            self._tapes[key] = tape
        return tape

    def _step_at(self, symbol: Symbol, now: datetime) -> tuple[_Tape, int] | None:
        """The latest replay step of ``symbol`` at or before ``now``, or None before its data."""
        history = self._history[symbol]
        now_us = _us(now)
        row = int(np.searchsorted(history.open_us, now_us, "right")) - 1
        if row < 0:
            return None
        day = self._calendar.trading_day(_dt(history.open_us[row]))
        first_row, _ = history.day_rows[day]
        elapsed_steps = min(STEPS_PER_BAR - 1, (now_us - int(history.open_us[row])) // STEP_US)
        return self._tape(symbol, day), (row - first_row) * STEPS_PER_BAR + elapsed_steps

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
        start = _dt(history.open_us[0]).isoformat() if len(history.open_us) else "nowhere (no minute bars)"
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
            step = self._step_at(symbol, now)
            if step is None:
                raise BrokerError(self._no_price_message(symbol, now))
            tape, i = step
            series = self._history[symbol].series
            out[symbol] = Snapshot(
                quote=tape.quote(i),
                lot_size=series.lot_size,
                tick=tick_size(self._market, tape.prices[i], tape.day, self._profile.ticks.hk_phase2_date),
                name=series.name,
                synthetic=series.synthetic,
            )
        return out

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
        last_open = min(_us(end), _us(now) - BAR_US + 1)
        lo = int(np.searchsorted(history.open_us, _us(start), "left"))
        hi = int(np.searchsorted(history.open_us, last_open, "left"))
        return history.series.minute.iloc[lo:max(lo, hi)][BAR_COLUMNS].copy()

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

    def _symbol_for_order(self, request: OrderRequest) -> Symbol:
        try:
            return self._known(request.symbol)
        except UnknownSymbol as e:
            raise OrderRejected(f"order {request.client_order_id} refused: {e}") from None

    def _check_shape(self, request: OrderRequest, symbol: Symbol, now: datetime) -> None:
        what = f"order {request.client_order_id} ({symbol})"
        if not isinstance(request.side, OrderSide):
            raise OrderRejected(f"{what}: side must be OrderSide.BUY or OrderSide.SELL, got {request.side!r}")
        if not isinstance(request.quantity, int) or isinstance(request.quantity, bool):
            raise OrderRejected(f"{what}: quantity must be a whole number of shares, got {request.quantity!r}")
        lot_problem = check_lot_multiple(request.quantity, self._history[symbol].series.lot_size)
        if lot_problem:
            raise OrderRejected(f"{what}: {lot_problem}")
        if request.take_profit_price is not None or request.stop_loss_price is not None:
            raise OrderRejected(f"{what}: the paper exchange does not hold bracket legs (supports_bracket is False); place the stop as a separate stop order after the fill")
        needed = {OrderType.LIMIT: ("limit", request.limit_price), OrderType.STOP: ("stop", request.stop_price)}
        if request.order_type in needed:
            label, price = needed[request.order_type]
            if price is None:
                raise OrderRejected(f"{what}: a {label} order needs a {label} price")
            self._check_price(what, label, price, now)

    def _check_price(self, what: str, label: str, price: Decimal, now: datetime) -> None:
        if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
            raise OrderRejected(f"{what}: {label} price must be a positive Decimal, got {price!r}")
        day = self._calendar.trading_day(now)
        phase2 = self._profile.ticks.hk_phase2_date
        if not is_on_tick(self._market, price, day, phase2):
            tick = tick_size(self._market, price, day, phase2)
            below = round_to_tick(self._market, price, day, Rounding.DOWN, phase2)
            above = round_to_tick(self._market, price, day, Rounding.UP, phase2)
            raise OrderRejected(f"{what}: {label} price {price} is off the tick grid (tick {tick} at this price); use {below} or {above}")

    def _check_stop_side(self, request: OrderRequest, symbol: Symbol, last: Decimal) -> None:
        if request.order_type is not OrderType.STOP:
            return
        stop = request.stop_price
        assert stop is not None
        if request.side is OrderSide.SELL and stop >= last:
            raise OrderRejected(f"sell stop {stop} for {symbol} is at or above the last price {last} and would trigger at once; put it below the price, or sell with a market or limit order")
        if request.side is OrderSide.BUY and stop <= last:
            raise OrderRejected(f"buy stop {stop} for {symbol} is at or below the last price {last} and would trigger at once; put it above the price, or buy with a market or limit order")

    def _check_sellable(self, request: OrderRequest, symbol: Symbol) -> None:
        held = self._holdings.get(symbol, _Holding()).quantity
        offered = sum(w.order.remaining for w in self._working.get(symbol, []) if w.order.side is OrderSide.SELL)
        if request.quantity > held - offered:
            raise OrderRejected(
                f"cannot sell {request.quantity} {symbol}: holding {held}, of which {offered} already in open sell orders; "
                "the paper exchange does not sell short (cancel the other sell orders first)"
            )

    def _check_cash(self, request: OrderRequest, symbol: Symbol, tape: _Tape, i: int) -> None:
        price = self._reference_price(request.order_type, request.limit_price, request.stop_price, tape.asks[i])
        cost = self._cost_with_fees(symbol, request.quantity, price)
        reserved = self._reserved_for_buys()
        available = self._cash - reserved
        if cost > available:
            currency = self._market.currency
            raise InsufficientFunds(
                f"buying {request.quantity} {symbol} at about {price} needs {currency} {cost:,.2f} with fees; "
                f"available {currency} {available:,.2f} (cash {self._cash:,.2f} less {reserved:,.2f} reserved for open buy orders)"
            )

    def _reference_price(self, order_type: OrderType, limit: Decimal | None, stop: Decimal | None, ask: Decimal) -> Decimal:
        if order_type is OrderType.LIMIT and limit is not None:
            return limit
        if order_type is OrderType.STOP and stop is not None:
            return max(stop, ask)
        return ask

    def _cost_with_fees(self, symbol: Symbol, quantity: int, price: Decimal) -> Decimal:
        value = price * quantity
        return value + execution_fees(self._market, OrderSide.BUY, quantity, value, self._profile).total

    def _reserved_for_buys(self) -> Decimal:
        reserved = Decimal(0)
        for symbol, working in self._working.items():
            for w in working:
                if w.order.side is OrderSide.BUY and w.order.remaining > 0:
                    step = self._step_at(symbol, self._clock.now())
                    ask = step[0].asks[step[1]] if step else Decimal(0)
                    price = self._reference_price(w.order.order_type, w.order.limit_price, w.order.stop_price, ask)
                    reserved += self._cost_with_fees(symbol, w.order.remaining, price)
        return reserved

    def _closed_reason(self, now: datetime, state: SessionState) -> str:
        next_open = self._calendar.local(self._calendar.next_open(now))
        if state is SessionState.LUNCH:
            return f"market closed (lunch break until {next_open:%H:%M %Z})"
        return f"market closed; next open {next_open:%Y-%m-%d %H:%M %Z}"

    def _accept(self, request: OrderRequest, symbol: Symbol, now: datetime, state: SessionState) -> _WorkingOrder:
        broker_id = f"PAPER-{next(self._order_ids):06d}"
        # Outside a session the order is for the next one (and expires at that session's close).
        session_day = self._calendar.trading_day(self._calendar.next_open(now) if state is SessionState.CLOSED else now)
        order = Order(
            broker_order_id=broker_id,
            client_order_id=request.client_order_id,
            symbol=symbol,
            side=request.side,
            order_type=request.order_type,
            quantity=request.quantity,
            status=OrderStatus.SUBMITTED,
            limit_price=request.limit_price if request.order_type is OrderType.LIMIT else None,
            stop_price=request.stop_price if request.order_type is OrderType.STOP else None,
            created_at=now,
            updated_at=now,
            purpose=request.purpose,
        )
        working = _WorkingOrder(order, session_day)
        self._orders[broker_id] = working
        self._by_client_id[request.client_order_id] = broker_id
        self._working.setdefault(symbol, []).append(working)
        self._publish(order)
        return working

    # --- Matching -------------------------------------------------------------------------------
    def _try_fill(self, w: _WorkingOrder, tape: _Tape, i: int) -> None:
        if w.session_day < tape.day:
            # The replay did not pass that session's close: the day order has lapsed all the same.
            self._finish(w, OrderStatus.EXPIRED)
            return
        price = self._execution_price(w, tape, i)
        if price is None:
            return
        quantity = min(w.order.remaining, self._liquidity_left(tape, i))
        if quantity > 0:
            self._take_liquidity(tape, i, quantity)
            self._execute(w, quantity, price)

    def _execution_price(self, w: _WorkingOrder, tape: _Tape, i: int) -> Decimal | None:
        order = w.order
        buying = order.side is OrderSide.BUY
        if order.order_type is OrderType.LIMIT:
            assert order.limit_price is not None
            if buying:
                return tape.asks[i] if tape.asks[i] <= order.limit_price else None
            return tape.bids[i] if tape.bids[i] >= order.limit_price else None
        if order.order_type is OrderType.STOP and not w.triggered:
            assert order.stop_price is not None
            last = tape.prices[i]
            w.triggered = last >= order.stop_price if buying else last <= order.stop_price
            if not w.triggered:
                return None
        return self._with_slippage(tape.asks[i] if buying else tape.bids[i], buying, tape.day)

    def _with_slippage(self, price: Decimal, buying: bool, day: date) -> Decimal:
        return _with_slippage(self._market, price, buying, day, self._profile)

    def _liquidity_left(self, tape: _Tape, i: int) -> int:
        step_time = int(tape.times_us[i])
        used_at, used = self._liquidity_used.get(tape.symbol, (None, 0))
        return tape.fillable[i] - (used if used_at == step_time else 0)

    def _take_liquidity(self, tape: _Tape, i: int, quantity: int) -> None:
        step_time = int(tape.times_us[i])
        used_at, used = self._liquidity_used.get(tape.symbol, (None, 0))
        self._liquidity_used[tape.symbol] = (step_time, (used if used_at == step_time else 0) + quantity)

    def _execute(self, w: _WorkingOrder, quantity: int, price: Decimal) -> None:
        now = self._clock.now()
        order = w.order
        value = price * quantity
        fees = execution_fees(self._market, order.side, quantity, value, self._profile, order_value_before=w.value_filled).total
        self._book(order.symbol, order.side, quantity, value, fees)
        w.value_filled += value
        w.fills += 1
        filled = order.filled_quantity + quantity
        w.order = order.with_(
            filled_quantity=filled,
            avg_fill_price=(w.value_filled / filled).quantize(AVG_PRICE_PLACES),
            fees=order.fees + fees,
            status=OrderStatus.FILLED if filled == order.quantity else OrderStatus.PARTIALLY_FILLED,
            updated_at=now,
        )
        self._fills.append(Fill(
            broker_order_id=order.broker_order_id, symbol=order.symbol, side=order.side, quantity=quantity,
            price=price, time=now, fees=fees, fill_id=f"{order.broker_order_id}-{w.fills}",
        ))
        if w.order.status is OrderStatus.FILLED:
            self._forget_working(w)
        self._publish(w.order)

    def _book(self, symbol: Symbol, side: OrderSide, quantity: int, value: Decimal, fees: Decimal) -> None:
        holding = self._holdings.setdefault(symbol, _Holding())
        if side is OrderSide.BUY:
            self._cash -= value + fees
            holding.cost += value
            holding.quantity += quantity
            return
        self._cash += value - fees
        holding.cost -= holding.cost * quantity / holding.quantity
        holding.quantity -= quantity
        if holding.quantity == 0:
            del self._holdings[symbol]

    def _finish(self, w: _WorkingOrder, status: OrderStatus) -> None:
        w.order = w.order.with_(status=status, updated_at=self._clock.now())
        self._forget_working(w)
        self._publish(w.order)

    def _forget_working(self, w: _WorkingOrder) -> None:
        working = self._working.get(w.order.symbol, [])
        if w in working:
            working.remove(w)
        if not working:
            self._working.pop(w.order.symbol, None)

    async def cancel_order(self, broker_order_id: str) -> Order:
        w = self._working_order(broker_order_id)
        if not w.order.status.is_final:
            self._finish(w, OrderStatus.CANCELLED)
        return w.order

    async def get_order(self, broker_order_id: str) -> Order:
        return self._working_order(broker_order_id).order

    def _working_order(self, broker_order_id: str) -> _WorkingOrder:
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
        step = self._step_at(symbol, self._clock.now())
        return step[0].prices[step[1]] if step else None

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
