"""Market data for the tools and the monitor, the same over every broker.

* Quotes with a real volume ratio: today's volume so far divided by the average volume by the
  same minute of the session over the last ``volume_lookback_sessions`` sessions. Where intraday
  history is missing, the daily average volume scaled by a U-shaped session volume profile is
  the baseline. (The original divided volume by half of itself: every ratio was 2.0.)
* Bars at 1m/5m/15m/1h/1d (resampled, lunch respected), technicals (data/indicators.py), patterns.
* A scan over an index list (or the paper exchange's universe) ranked by momentum.

Only closed bars are used: the broker returns bars closed by now, nothing later.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Sequence

import numpy as np
import pandas as pd

from brokers.base import Broker, BrokerError, Snapshot, Timeframe, UnknownSymbol
from core.clock import Clock
from config.settings import Profile
from data.bars import empty_bars, resample
from data.calendar import MarketCalendar, Session
from data.indicators import Technicals, compute_exit_indicators, compute_technicals
from data.patterns import Pattern, detect_patterns
from core.instruments import Symbol
from signals import ExitTechnicals
from store.trading import PositionRecord

log = logging.getLogger(__name__)

# How many bars each timeframe's technicals look at (enough for SMA50 and MACD 26/9 to settle).
BARS_WANTED = 120
# Recent per-minute volume for the volume_dying exit signal is the mean of this many closed bars.
VOLUME_RATE_BARS = 5


def usual_volume_by(baseline: np.ndarray | float, minute: int, session: Session) -> float:
    """The usual cumulative volume ``minute`` minutes into ``session``: the mean curve of past sessions
    (``MarketData._baseline``), or a daily average spread on the U-shaped profile. 0 at the open."""
    if minute <= 0:
        return 0.0
    if isinstance(baseline, np.ndarray):
        return float(baseline[min(minute, len(baseline)) - 1])
    return baseline * u_shaped_cumulative_share(minute / session.trading_minutes)


def u_shaped_cumulative_share(fraction_of_session: float) -> float:
    """Share of a session's volume traded by ``fraction_of_session`` (0..1) under a U-shaped profile.

    Per-minute weight w(x) = 1 + 2(2x - 1)^2 (three times busier at the open and close than at
    midday, as in the real 09988 and MSFT minute files); its integral, normalised to 1.
    """
    x = min(max(fraction_of_session, 0.0), 1.0)
    return (x + ((2 * x - 1) ** 3 + 1) / 3) / (5 / 3)


@dataclass(frozen=True)
class QuoteView:
    symbol: Symbol
    name: str
    synthetic: bool
    price: Decimal
    bid: Decimal
    ask: Decimal
    volume: int
    volume_ratio: float | None
    change_pct: float | None
    high: Decimal | None
    low: Decimal | None
    open: Decimal | None
    prev_close: Decimal | None
    lot_size: int
    tick: Decimal
    time: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "symbol": str(self.symbol), "name": self.name + (" [synthetic]" if self.synthetic else ""),
            "price": str(self.price), "bid": str(self.bid), "ask": str(self.ask), "volume": self.volume,
            "volume_ratio": None if self.volume_ratio is None else round(self.volume_ratio, 2),
            "change_pct": None if self.change_pct is None else round(self.change_pct, 2),
            "day_high": _s(self.high), "day_low": _s(self.low), "open": _s(self.open),
            "prev_close": _s(self.prev_close), "lot_size": self.lot_size, "tick": str(self.tick),
            "time": self.time.isoformat(),
        }


def _s(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


class MarketData:
    def __init__(self, broker: Broker, clock: Clock, calendar: MarketCalendar, profile: Profile,
                 universe: Sequence[Symbol] = ()) -> None:
        self.broker = broker
        self.clock = clock
        self.calendar = calendar
        self.profile = profile
        self.universe = list(universe)
        self._baselines: dict[tuple[Symbol, date], np.ndarray | float | None] = {}
        self._history_errors: dict[tuple[Symbol, date], str] = {}
        self._curves: dict[tuple[Symbol, date], np.ndarray | None] = {}
        self._curves_from: date | None = None  # the first day of the lookback the curves were pruned to
        # (symbol, day, start, timeframe): the bars before that day (``_history_before``)
        self._history: dict[tuple[Symbol, date, datetime, Timeframe], pd.DataFrame] = {}
        self._bars_at: datetime | None = None
        self._bars_memo: dict[tuple[Symbol, Timeframe, int], pd.DataFrame] = {}

    # --- quotes ---------------------------------------------------------------------------------
    async def quotes(self, symbols: Sequence[Symbol]) -> dict[Symbol, QuoteView]:
        snaps = await self.broker.snapshots(list(symbols))
        # The moment the volumes were read: fetching the baselines below can take a while on a
        # rate-limited broker, and each volume must be compared with the baseline at this minute.
        read_at = self.clock.now()
        return {sym: await self._view(snap, read_at) for sym, snap in snaps.items()}

    async def quote(self, symbol: Symbol) -> QuoteView:
        return (await self.quotes([symbol]))[symbol]

    async def _view(self, snap: Snapshot, read_at: datetime) -> QuoteView:
        q = snap.quote
        change = None
        if q.prev_close:
            change = float((q.price - q.prev_close) / q.prev_close * 100)
        return QuoteView(
            symbol=q.symbol, name=snap.name, synthetic=snap.synthetic, price=q.price, bid=q.bid, ask=q.ask,
            volume=q.volume, volume_ratio=await self.volume_ratio(q.symbol, q.volume, read_at), change_pct=change,
            high=q.high, low=q.low, open=q.open, prev_close=q.prev_close, lot_size=snap.lot_size, tick=snap.tick,
            time=q.time,
        )

    async def volume_ratio(self, symbol: Symbol, volume_so_far: int, at: datetime | None = None) -> float | None:
        """``volume_so_far`` (the session's volume at ``at``, default now) over the usual volume by then."""
        now = at or self.clock.now()
        session = self.calendar.session_at(now)
        if session is None:
            return None
        minute = int(session.minutes_since_open(now))
        if minute < 1:
            return None
        baseline = await self._baseline(symbol, session)
        if baseline is None:
            return None
        expected = usual_volume_by(baseline, minute, session)
        return volume_so_far / expected if expected > 0 else None

    async def _baseline(self, symbol: Symbol, session: Session) -> np.ndarray | float | None:
        """Average cumulative volume by minute of session over past sessions (or a daily average)."""
        key = (symbol, session.day)
        if key in self._baselines:
            return self._baselines[key]
        try:
            baseline = await self._fetch_baseline(symbol, session)
        except BrokerError as exc:
            # One symbol's history failing must not blind the whole scan: no ratio for it now, and
            # asked again next time (not cached). A scan where every symbol fails is a data outage.
            log.warning("no volume baseline for %s: %s", symbol, exc)
            self._history_errors[key] = str(exc)
            return None
        self._history_errors.pop(key, None)
        self._baselines[key] = baseline
        return baseline

    async def _fetch_baseline(self, symbol: Symbol, session: Session) -> np.ndarray | float | None:
        lookback = self.profile.scan.volume_lookback_sessions
        past = self.calendar.previous_sessions(session.day, lookback)
        baseline: np.ndarray | float | None = None
        if past:
            curves = [c for c in await self._volume_curves(symbol, past) if c is not None]
            full = [c for c in curves if len(c) == session.trading_minutes]
            if full:
                baseline = np.mean(np.vstack(full), axis=0)
            else:
                daily = await self.broker.bars(symbol, Timeframe.D1, past[0].open - timedelta(days=1), session.open)
                volumes = daily["volume"].tail(lookback)
                if len(volumes) and volumes.mean() > 0:
                    baseline = float(volumes.mean())
        return baseline

    async def _volume_curves(self, symbol: Symbol, past: Sequence[Session]) -> list[np.ndarray | None]:
        """The cumulative volume by minute of each of ``past`` (None: under 90% of its bars, or no volume).

        A finished session's curve never changes: each is read from the broker once, so a new day
        fetches one session of bars, not the whole lookback again.
        """
        missing = [s for s in past if (symbol, s.day) not in self._curves]
        if missing:
            minute = await self.broker.bars(symbol, Timeframe.M1, missing[0].open, past[-1].close)
            step = bar_step_minutes(minute)
            if not minute.index.is_monotonic_increasing:
                minute = minute.sort_index()
            times = pd.DatetimeIndex(minute.index).as_unit("ns").asi8
            volume = minute["volume"].to_numpy(dtype=float)
            for s in missing:
                lo, hi = np.searchsorted(times, [pd.Timestamp(s.open).value, pd.Timestamp(s.close).value])
                curve = None
                if (hi - lo) * step >= s.trading_minutes * 0.9 and volume[lo:hi].sum() > 0:
                    vol = volume[lo:hi] if step == 1 else _per_minute(minute.iloc[lo:hi], s, step)
                    curve = np.cumsum(vol[: s.trading_minutes])
                self._curves[(symbol, s.day)] = curve
        if past and past[0].day != self._curves_from:
            # Days only move forward: curves older than this lookback are never asked for again.
            self._curves_from = past[0].day
            self._curves = {k: v for k, v in self._curves.items() if k[1] >= past[0].day}
        return [self._curves[(symbol, s.day)] for s in past]

    def without_history(self, symbols: Sequence[Symbol]) -> dict[Symbol, str]:
        """Those of ``symbols`` whose volume baseline was looked up today and could not be had, with
        why: the broker's error, or no past bars."""
        session = self.calendar.session_at(self.clock.now())
        if session is None:
            return {}
        missing = {}
        for symbol in symbols:
            key = (symbol, session.day)
            if key in self._history_errors:
                missing[symbol] = f"broker: {self._history_errors[key]}"
            elif key in self._baselines and self._baselines[key] is None:
                missing[symbol] = "no bars before this session"
        return missing

    # --- bars and technicals ------------------------------------------------------------------------
    async def bars(self, symbol: Symbol, timeframe: Timeframe, count: int = BARS_WANTED) -> pd.DataFrame:
        now = self.clock.now()
        # The same bars asked twice at the same instant (technicals, then patterns) are read and
        # resampled once; a copy each time, so no caller sees another's changes.
        key = (symbol, timeframe, count)
        if self._bars_at != now:
            self._bars_at, self._bars_memo = now, {}
        if key not in self._bars_memo:
            self._bars_memo[key] = await self._read_bars(symbol, timeframe, count, now)
        return self._bars_memo[key].copy()

    async def _read_bars(self, symbol: Symbol, timeframe: Timeframe, count: int, now: datetime) -> pd.DataFrame:
        if timeframe is Timeframe.D1:
            start = now - timedelta(days=int(count * 1.6) + 10)
            return (await self.broker.bars(symbol, Timeframe.D1, start, now)).tail(count)
        sessions_needed = max(1, int(np.ceil(count * timeframe.minutes / 330)) + 1)
        day = self.calendar.trading_day(now)
        past = self.calendar.previous_sessions(day, sessions_needed)
        session = self.calendar.session(day)
        # One start a day (the history cache's key), even with no sessions before today in the calendar.
        start = past[0].open if past else (session.open if session else now) - timedelta(days=3)
        today_open = min(session.open, now) if session else now
        history = await self._history_before(symbol, day, start, today_open, timeframe)
        today = await self.broker.bars(symbol, Timeframe.M1, today_open, now) if now > today_open else empty_bars()
        if timeframe is Timeframe.M1:
            return _joined(history.tail(max(0, count - len(today))), today.tail(count))
        return _joined(history, resample(today, timeframe, self.calendar)).tail(count)

    async def _history_before(self, symbol: Symbol, day: date, start: datetime, today_open: datetime,
                              timeframe: Timeframe) -> pd.DataFrame:
        """Closed ``timeframe`` bars from ``start`` to today's open: read once a day, and resampled once
        a day (bars never span a session, so only today's minutes are resampled at each call)."""
        key = (symbol, day, start, timeframe)
        if key not in self._history:
            if timeframe is Timeframe.M1:
                # Days only move forward: earlier days' history is never read again (flat memory over a long replay).
                self._history = {k: v for k, v in self._history.items() if k[1] == day}
                minute = await self.broker.bars(symbol, Timeframe.M1, start, today_open)
                self._history[key] = minute[minute.index >= start]
            else:
                minute = await self._history_before(symbol, day, start, today_open, Timeframe.M1)
                self._history[key] = resample(minute, timeframe, self.calendar)
        return self._history[key]

    async def technicals(self, symbol: Symbol, timeframe: Timeframe) -> Technicals:
        bars = await self.bars(symbol, timeframe)
        return compute_technicals(bars, self.calendar, timeframe)

    async def patterns(self, symbol: Symbol, timeframe: Timeframe) -> list[Pattern]:
        bars = await self.bars(symbol, timeframe)
        return detect_patterns(bars, symbol.market, self.calendar.trading_day(self.clock.now()), timeframe)

    async def exit_technicals(self, position: PositionRecord) -> ExitTechnicals | None:
        """What the exit signals need: RSI, MACD (with the previous bar), EMA9, VWAP, volume rate."""
        bars = await self.bars(position.symbol, Timeframe.M1)
        if bars.empty:
            return None
        tech = compute_exit_indicators(bars, self.calendar)
        return ExitTechnicals(
            rsi=tech.rsi14, macd=tech.macd, macd_signal=tech.macd_signal, macd_prev=tech.macd_prev,
            macd_signal_prev=tech.macd_signal_prev, ema9=tech.ema9, vwap=tech.vwap,
            volume_rate=await self.volume_pace(position.symbol, bars),
        )

    @staticmethod
    def recent_volume_rate(minute_bars: pd.DataFrame) -> float | None:
        """Mean volume per minute of the last few closed minute bars (None without data)."""
        if minute_bars.empty:
            return None
        # Replay data of 5-minute bars: each bar holds five minutes' volume.
        return float(minute_bars["volume"].tail(VOLUME_RATE_BARS).mean()) / bar_step_minutes(minute_bars)

    async def volume_pace(self, symbol: Symbol, minute_bars: pd.DataFrame) -> float | None:
        """The last few minutes' volume over the usual volume of those minutes of the session (1.0: usual).

        Volume is U-shaped through the day: a raw rate taken at 09:45 falls by half by 10:30 on any
        ordinary day, so ``volume_dying`` compares paces, not raw rates (docs/exit-quality.md). None
        without a baseline or before a few minutes of the session have traded.
        """
        raw = self.recent_volume_rate(minute_bars)
        now = self.clock.now()
        session = self.calendar.session_at(now)
        if raw is None or session is None:
            return None
        minute = int(session.minutes_since_open(now))
        if minute < VOLUME_RATE_BARS:
            return None
        baseline = await self._baseline(symbol, session)
        if baseline is None:
            return None
        expected = (usual_volume_by(baseline, minute, session)
                    - usual_volume_by(baseline, minute - VOLUME_RATE_BARS, session)) / VOLUME_RATE_BARS
        return raw / expected if expected > 0 else None

    # --- scan ------------------------------------------------------------------------------------
    def scan_list(self, index: str) -> list[Symbol]:
        index = index.upper()
        configured = self.profile.scan.indices
        if index in configured:
            from core.instruments import parse_symbol

            return [parse_symbol(s) for s in configured[index]]
        if index == "ALL" and self.universe:
            return list(self.universe)
        if self.universe:
            return list(self.universe)
        known = ", ".join(sorted(configured)) or "none configured"
        raise UnknownSymbol(f"no symbol list for index {index!r} (configured: {known}); add it under scan.indices")

    async def scan(self, index: str, limit: int, min_volume_ratio: float | None, max_price: Decimal | None) -> list[dict[str, Any]]:
        symbols = self.scan_list(index)
        views = await self.quotes(symbols)
        rows = []
        for view in views.values():
            if max_price is not None and view.price > max_price:
                continue
            ratio = view.volume_ratio
            if min_volume_ratio is not None and (ratio is None or ratio < min_volume_ratio):
                continue
            change = view.change_pct or 0.0
            momentum = change * min(ratio or 0.0, 5.0)
            rows.append({
                "symbol": str(view.symbol), "name": view.name + (" [synthetic]" if view.synthetic else ""),
                "price": str(view.price), "change_pct": round(change, 2),
                "volume_ratio": None if ratio is None else round(ratio, 2), "momentum_score": round(momentum, 2),
            })
        rows.sort(key=lambda r: (-r["momentum_score"], r["symbol"]))
        return rows[:limit]


def bar_step_minutes(bars: pd.DataFrame) -> int:
    """The spacing of intraday bars in minutes: 1, or 5 for replay data of 5-minute bars (every gap a
    multiple of five minutes; 1-minute bars with minutes missing stay 1-minute bars)."""
    if len(bars) < 2:
        return 1
    gaps = np.diff(bars.index.to_numpy(dtype="datetime64[s]")).astype(np.int64)
    gaps = gaps[gaps > 0]
    return 5 if len(gaps) and gaps.min() == 300 and not (gaps % 300).any() else 1


def _per_minute(day_bars: pd.DataFrame, session: Session, step: int) -> np.ndarray:
    """Volume per minute of the session from bars ``step`` minutes wide (each bar's volume spread evenly)."""
    parts = [pd.date_range(start, end, freq="1min", inclusive="left").tz_convert("UTC") for start, end in session.parts]
    grid = parts[0].append(parts[1:])
    spread = (day_bars["volume"].astype(float) / step).reindex(grid, method="ffill", limit=step - 1)
    return spread.fillna(0.0).to_numpy()


def _joined(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    if before.empty:
        return after
    return pd.concat([before, after]) if not after.empty else before
