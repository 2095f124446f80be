"""The fakes' market-data mode: what a venue shows at a moment, read from 1-minute bars.

``FakeOpenD.serve_market`` and ``FakeAlpaca.serve_market`` hand each symbol's ``BarSeries`` to a
``BarTape`` and ask it, at the venue's "now" (``SimClock.peek`` in end-to-end tests), for the
last price, the day's open/high/low, the session volume so far, the previous close and the
K-lines. The rule is SPEC section 12's: each 1-minute bar trades as four prices at +0/+15/+30/+45 s
(open, the extreme nearer the open, the other extreme, close), its volume spread evenly over the
four steps. The paper exchange replays bars the same way, so a fake venue and ``make run`` show
the same market at the same moment; the implementation here is separate on purpose (a bug in one
is not silently shared by the other).

No look-ahead: nothing after ``at`` is visible. The bar still forming at ``at`` is served partly
formed (open, the extremes so far, the current price as close, the volume so far), as a venue
serves it; the adapters must drop it themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

STEP = timedelta(seconds=15)
MINUTE = timedelta(minutes=1)
_NS = 1_000_000_000


@dataclass(frozen=True)
class MarketState:
    """The market in one symbol at one moment."""

    time: datetime              # when the current price printed (UTC): the step's time
    day: date                   # the local trading day it belongs to
    price: float
    open: float
    high: float
    low: float
    volume: int                 # the day's volume so far
    prev_close: float | None


class Bar(NamedTuple):
    open_time: datetime         # UTC, the bar's open (daily bars: local midnight of the day, in UTC)
    open: float
    high: float
    low: float
    close: float
    volume: int


def _cum_volume(volume: float, step: int) -> int:
    """Volume traded in a bar through ``step`` (0..3) when it is spread evenly over four steps."""
    base, extra = divmod(int(round(volume)), 4)
    return (step + 1) * base + min(step + 1, extra)


class BarTape:
    def __init__(self, series, tz: str | ZoneInfo) -> None:
        self.series = series
        self.tz = ZoneInfo(tz) if isinstance(tz, str) else tz
        minute = series.minute
        index = pd.DatetimeIndex(minute.index)
        self.open_ns = index.as_unit("ns").asi8 if len(index) else np.array([], dtype=np.int64)
        self.o = minute["open"].to_numpy(dtype=float)
        self.h = minute["high"].to_numpy(dtype=float)
        self.l = minute["low"].to_numpy(dtype=float)
        self.c = minute["close"].to_numpy(dtype=float)
        self.v = minute["volume"].to_numpy(dtype=float)
        days = [d.date() for d in index.tz_convert(self.tz).tz_localize(None).normalize()]
        self.days = days
        n = len(days)
        self.first_row = [0] * n
        # What the day had traded before each bar: its high, low and volume (for quick lookups).
        self.high_before = np.full(n, -np.inf)
        self.low_before = np.full(n, np.inf)
        self.volume_before = np.zeros(n)
        for i in range(n):
            if i and days[i - 1] == days[i]:
                self.first_row[i] = self.first_row[i - 1]
                self.high_before[i] = max(self.high_before[i - 1], self.h[i - 1])
                self.low_before[i] = min(self.low_before[i - 1], self.l[i - 1])
                self.volume_before[i] = self.volume_before[i - 1] + self.v[i - 1]
            else:
                self.first_row[i] = i
        opens = [t.to_pydatetime() for t in index.tz_convert("UTC")]
        self.bars = [Bar(*row) for row in zip(opens, self.o.tolist(), self.h.tolist(), self.l.tolist(),
                                              self.c.tolist(), np.rint(self.v).astype(np.int64).tolist())]
        daily = series.daily
        self.daily_days = [pd.Timestamp(d).date() for d in daily.index]
        self.daily = daily
        self._prev_close: dict[date, float | None] = {}

    # --- one moment -----------------------------------------------------------------------------
    def _path(self, row: int) -> list[float]:
        o, h, l, c = self.o[row], self.h[row], self.l[row], self.c[row]
        up, down = h - o, o - l
        high_first = up < down or (up == down and c < o)
        return [o, h if high_first else l, l if high_first else h, c]

    def _row_at(self, at: datetime) -> int:
        return int(np.searchsorted(self.open_ns, _ns(at), "right")) - 1

    def _step(self, row: int, at: datetime) -> int:
        return int(min(3, (_ns(at) - int(self.open_ns[row])) // (15 * _NS)))

    def state(self, at: datetime) -> MarketState | None:
        """The market at ``at``, or None before the first bar."""
        row = self._row_at(at)
        if row < 0:
            return None
        today = at.astimezone(self.tz).date()
        bar_day = self.days[row]
        if bar_day != today:   # before today's first bar: yesterday's close, nothing traded yet
            price = float(self.c[row])
            when = _utc(self.open_ns[row]) + MINUTE
            return MarketState(when, today, price, price, price, price, 0, price)
        first = self.first_row[row]
        step = self._step(row, at)
        path = self._path(row)[: step + 1]
        high = max(max(path), self.high_before[row])
        low = min(min(path), self.low_before[row])
        volume = int(self.volume_before[row]) + _cum_volume(self.v[row], step)
        when = _utc(self.open_ns[row]) + STEP * step
        return MarketState(when, bar_day, float(path[-1]), float(self.o[first]), float(high), float(low), volume,
                           self.prev_close(bar_day))

    def prev_close(self, day: date) -> float | None:
        if day not in self._prev_close:
            earlier = [i for i, d in enumerate(self.daily_days) if d < day]
            rows = [i for i, d in enumerate(self.days) if d < day]
            self._prev_close[day] = (float(self.daily["close"].iloc[earlier[-1]]) if earlier
                                     else float(self.c[rows[-1]]) if rows else None)
        return self._prev_close[day]

    # --- history --------------------------------------------------------------------------------
    def minute_bars(self, start: datetime, end: datetime, at: datetime) -> list[Bar]:
        """1-minute bars with open time in [start, end] that had opened by ``at`` (the forming one partly)."""
        lo = int(np.searchsorted(self.open_ns, _ns(start), "left"))
        hi = int(np.searchsorted(self.open_ns, min(_ns(end), _ns(at)), "right"))
        out = self.bars[lo:hi]
        if out and at < out[-1].open_time + MINUTE:        # the last one is still forming
            row = hi - 1
            step = self._step(row, at)
            path = self._path(row)[: step + 1]
            out[-1] = Bar(out[-1].open_time, path[0], max(path), min(path), path[-1], _cum_volume(self.v[row], step))
        return out

    def daily_bars(self, first: date, last: date, at: datetime) -> list[Bar]:
        """Daily bars of the days in [first, last] up to ``at``: earlier days from the daily data,
        today's still forming (from today's minute bars so far)."""
        today = at.astimezone(self.tz).date()
        out = []
        for i, day in enumerate(self.daily_days):
            if first <= day <= last and day < today:
                row = self.daily.iloc[i]
                out.append(Bar(self.midnight(day), float(row["open"]), float(row["high"]), float(row["low"]),
                               float(row["close"]), int(round(row["volume"]))))
        state = self.state(at)
        if first <= today <= last and state is not None and state.volume > 0:
            out.append(Bar(self.midnight(today), state.open, state.high, state.low, state.price, state.volume))
        return out

    def midnight(self, day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=self.tz).astimezone(timezone.utc)


def _ns(t: datetime) -> int:
    return int(pd.Timestamp(t).as_unit("ns").value)


def _utc(ns) -> datetime:
    return datetime.fromtimestamp(int(ns) / _NS, timezone.utc)


# --- The exchange's price grid (what a venue quotes around the last price) -----------------------
# HKEX spread table before 2025-08-04 (upper bound inclusive, tick) and phase 1 from then on.
_HK_ORIGINAL = ((0.25, 0.001), (0.5, 0.005), (10, 0.01), (20, 0.02), (100, 0.05), (200, 0.1), (500, 0.2),
                (1000, 0.5), (2000, 1), (5000, 2), (9995, 5))
_HK_PHASE1 = ((0.25, 0.001), (0.5, 0.005), (10, 0.01), (20, 0.01), (50, 0.02), (100, 0.05), (200, 0.1), (500, 0.2),
              (1000, 0.5), (2000, 1), (5000, 2), (9995, 5))
_HK_PHASE1_FROM = date(2025, 8, 4)


def tick_below(price: float, market: str, day: date) -> float:
    """The price step downwards from ``price`` (HK bands are inclusive of their upper bound)."""
    if market == "US":
        return 0.01 if price > 1 else 0.0001
    for upper, tick in _HK_ORIGINAL if day < _HK_PHASE1_FROM else _HK_PHASE1:
        if price <= upper + 1e-9:
            return tick
    return 5.0


def tick_above(price: float, market: str, day: date) -> float:
    if market == "US":
        return 0.01 if price >= 1 else 0.0001
    for upper, tick in _HK_ORIGINAL if day < _HK_PHASE1_FROM else _HK_PHASE1:
        if price < upper - 1e-9:
            return tick
    return 5.0


def bid_ask(price: float, market: str, day: date) -> tuple[float, float]:
    """One tick either side of the last price, as the paper exchange quotes by default."""
    places = 4 if market == "US" else 3
    return (round(price - tick_below(price, market, day), places), round(price + tick_above(price, market, day), places))
