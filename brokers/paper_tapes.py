"""The paper exchange's market data, precomputed as arrays: each symbol's minute bars (``History``),
one symbol's session as the exchange replays it, four steps a bar with bid, ask and the volume each
step offers (``Tape``, ``SessionTapes``; built only for a symbol that is watched or traded, while
``quote_at`` prices one step of any symbol), and a day's step times across symbols (``Timeline``).
How a bar becomes steps, and what a step's prices are, is told in ``brokers.paper``."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Mapping

import numpy as np
import pandas as pd

from brokers.base import BAR_COLUMNS, Quote
from config.settings import Profile
from core.instruments import HK_SPREAD_PHASE1_DATE, Market, Rounding, Symbol, round_to_tick, tick_size, ticks_away
from core.policy_lab import Steps
from data.bars import BarSeries
from data.calendar import MarketCalendar

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)
BAR_US = 60_000_000
STEP_OFFSETS_US = np.array([0, 15_000_000, 30_000_000, 45_000_000], dtype=np.int64)
STEPS_PER_BAR = len(STEP_OFFSETS_US)
STEP_US = int(STEP_OFFSETS_US[1])
# Average prices are reported to four places, as brokers' deal reports do.



def to_us(t: datetime) -> int:
    return (t - EPOCH) // MICROSECOND


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


def tick_regime(market: Market, day: date, phase2: date | None) -> date:
    # The tick depends on the day only through the spread table in force: one day per table
    # lets the price cache serve every day.
    if market is Market.HK:
        if phase2 is not None and day >= phase2:
            return phase2
        if day >= HK_SPREAD_PHASE1_DATE:
            return HK_SPREAD_PHASE1_DATE
    return date.min


@lru_cache(maxsize=100_000)
def price_with_spread(market: Market, price: float, regime: date, spread_ticks: int, phase2: date | None) -> tuple[Decimal, Decimal, Decimal]:
    last = round_to_tick(market, price, regime, Rounding.NEAREST, phase2)
    ask = ticks_away(market, last, spread_ticks, regime, phase2)
    bid = ticks_away(market, last, -spread_ticks, regime, phase2)
    if bid <= 0:
        bid = tick_size(market, last, regime, phase2)
    return last, bid, ask


# --- Data, precomputed as arrays ------------------------------------------------------------------
@dataclass(frozen=True)
class History:
    """One symbol's minute bars as numpy arrays, with the row range of each trading day."""

    series: BarSeries
    bars: pd.DataFrame                 # the minute bars' BAR_COLUMNS, for slices handed out as bars
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
    daily_close: np.ndarray            # the daily frame's closes, in the same order

    @classmethod
    def of(cls, series: BarSeries, calendar: MarketCalendar) -> "History":
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
            bars=minute[BAR_COLUMNS],
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
            daily_close=series.daily["close"].to_numpy(dtype=float),
        )


def _spread_over_steps(volume: np.ndarray) -> np.ndarray:
    whole = np.rint(volume).astype(np.int64)
    base, extra = np.divmod(whole, STEPS_PER_BAR)
    return (base[:, None] + (np.arange(STEPS_PER_BAR)[None, :] < extra[:, None])).ravel()


@dataclass
class Tape:
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
    _step_of_time: dict[int, int] | None = field(default=None, repr=False, compare=False)

    def step_at_time(self, t_us: int) -> int | None:
        """The step at exactly ``t_us``, or None when the symbol has no bar at that minute."""
        if self._step_of_time is None:
            self._step_of_time = {t: i for i, t in enumerate(self.times_us.tolist())}
        return self._step_of_time.get(t_us)

    def quote(self, i: int) -> Quote:
        return Quote(
            symbol=self.symbol, time=from_us(self.times_us[i]), price=self.prices[i], bid=self.bids[i],
            ask=self.asks[i], volume=self.session_volume[i], open=self.prices[0], high=self.highs[i],
            low=self.lows[i], prev_close=self.prev_close,
        )


def _path(history: History, start: int, end: int) -> np.ndarray:
    """The prices of rows ``start:end`` step by step: open, the nearer extreme, the farther, close."""
    o, h, l, c = (a[start:end] for a in (history.open, history.high, history.low, history.close))
    up, down = h - o, o - l
    high_first = (up < down) | ((up == down) & (c < o))
    return np.column_stack([o, np.where(high_first, h, l), np.where(high_first, l, h), c]).ravel()


def build_tape(history: History, day: date, profile: Profile) -> Tape:
    start, end = history.day_rows[day]
    path = _path(history, start, end)
    times = (history.open_us[start:end, None] + STEP_OFFSETS_US[None, :]).ravel()
    step_volume = _spread_over_steps(history.volume[start:end])
    lot = history.series.lot_size
    fillable = (_spread_over_steps(history.liquidity_volume[start:end]) * profile.paper.max_volume_participation).astype(np.int64) // lot * lot

    market = history.series.symbol.market
    phase2 = profile.ticks.hk_phase2_date
    regime = tick_regime(market, day, phase2)
    spread = profile.paper.spread_ticks

    def priced(values: np.ndarray) -> list[tuple[Decimal, Decimal, Decimal]]:
        return [price_with_spread(market, v, regime, spread, phase2) for v in values.tolist()]

    steps = priced(path)
    return Tape(
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
        prev_close=prev_close(history, day, market, regime, spread, phase2),
    )


def quote_at(history: History, day: date, step: int, profile: Profile) -> Quote:
    """``build_tape(history, day, profile).quote(step)`` without pricing the rest of the session: a
    scan quotes every symbol of the universe once, and trades few of them."""
    start, _ = history.day_rows[day]
    row = start + step // STEPS_PER_BAR
    path = _path(history, start, row + 1)[: step + 1]
    market = history.series.symbol.market
    phase2 = profile.ticks.hk_phase2_date
    regime = tick_regime(market, day, phase2)
    spread = profile.paper.spread_ticks
    last, bid, ask = price_with_spread(market, float(path[-1]), regime, spread, phase2)
    return Quote(
        symbol=history.series.symbol, time=from_us(int(history.open_us[row] + STEP_OFFSETS_US[step % STEPS_PER_BAR])),
        price=last, bid=bid, ask=ask, volume=int(_spread_over_steps(history.volume[start:row + 1])[: step + 1].sum()),
        open=price_with_spread(market, float(path[0]), regime, spread, phase2)[0],
        high=price_with_spread(market, float(path.max()), regime, spread, phase2)[0],
        low=price_with_spread(market, float(path.min()), regime, spread, phase2)[0],
        prev_close=prev_close(history, day, market, regime, spread, phase2),
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
        self._histories: dict[Symbol, History] = {}
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
            history = self._histories[symbol] = History.of(self._series[symbol], self._calendar)
        if day not in history.day_rows:
            return Steps([], [], [], [], [], [])
        tape = build_tape(history, day, self._profile)
        sells = [with_slippage(symbol.market, bid, False, day, self._profile) for bid in tape.bids]
        return Steps([from_us(t) for t in tape.times_us.tolist()], tape.prices, tape.bids, tape.asks, sells, tape.fillable)


def with_slippage(market: Market, price: Decimal, buying: bool, day: date, profile: Profile) -> Decimal:
    """A market order's price: ``slippage_ticks`` worse than the bid or ask (never below a tick)."""
    slippage = profile.paper.slippage_ticks
    if not slippage:
        return price
    worse = ticks_away(market, price, slippage if buying else -slippage, day, profile.ticks.hk_phase2_date)
    return worse if worse > 0 else price


def prev_close(history: History, day: date, market: Market, regime: date, spread: int, phase2: date | None) -> Decimal | None:
    earlier_daily = int(np.searchsorted(history.daily_days, np.datetime64(day, "D"), "left"))
    if earlier_daily > 0:
        return price_with_spread(market, float(history.daily_close[earlier_daily - 1]), regime, spread, phase2)[0]
    earlier_days = [d for d in history.days if d < day]
    if earlier_days:
        _, end = history.day_rows[earlier_days[-1]]
        return price_with_spread(market, float(history.close[end - 1]), regime, spread, phase2)[0]
    return None


@dataclass(frozen=True)
class Timeline:
    """Every step time of one trading day across symbols, in time order, and the session close."""

    times_us: list[int]
    close_us: int | None


