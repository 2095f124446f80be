"""Trading sessions from exchange_calendars: open, lunch break, half days, holidays.

Pure functions of a timestamp; no "now" in here. Times go in and out as timezone-aware
datetimes (any zone); sessions are identified by their market-local date.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import exchange_calendars as xcals
import pandas as pd
from exchange_calendars.exchange_calendar_xhkg import XHKGExchangeCalendar
from exchange_calendars.exchange_calendar_xnys import XNYSExchangeCalendar

from core.instruments import Market

CALENDAR_CODES = {Market.HK: "XHKG", Market.US: "XNYS"}
CALENDAR_TYPES = {Market.HK: XHKGExchangeCalendar, Market.US: XNYSExchangeCalendar}
TIMEZONES = {Market.HK: ZoneInfo("Asia/Hong_Kong"), Market.US: ZoneInfo("America/New_York")}
# Explicit bounds: exchange_calendars refuses questions outside them rather than guessing. The end is
# the installed library's own (``bound_max``: XHKG's lunisolar holidays are tabled up to a year), so
# a newer exchange-calendars extends it; XNYS's holidays are rules without a bound, asked up to here.
CALENDAR_START = date(2000, 1, 1)
UNBOUNDED_END = date(2099, 12, 31)
# How long before the calendar's end status, the daily report and Big Bro are warned.
END_WARNING_DAYS = 60
UPGRADE = "upgrade it (pip install -U exchange-calendars)"


class CalendarRangeError(ValueError):
    pass


class SessionState(str, enum.Enum):
    OPEN = "open"
    LUNCH = "lunch"
    CLOSED = "closed"


@dataclass(frozen=True)
class Session:
    """One trading day. ``break_start``/``break_end`` are None on days without a lunch break."""

    market: Market
    day: date
    open: datetime
    close: datetime
    break_start: datetime | None
    break_end: datetime | None

    @property
    def is_half_day(self) -> bool:
        return self.trading_minutes < MarketCalendar.full_day_minutes(self.market)

    @property
    def parts(self) -> list[tuple[datetime, datetime]]:
        """Continuous-trading stretches: [(open, break_start), (break_end, close)] or [(open, close)]."""
        if self.break_start is None or self.break_end is None:
            return [(self.open, self.close)]
        return [(self.open, self.break_start), (self.break_end, self.close)]

    @property
    def trading_minutes(self) -> int:
        return int(sum((end - start).total_seconds() for start, end in self.parts) // 60)

    def minute_grid(self) -> list[datetime]:
        """Open time of every 1-minute bar of the session (UTC), lunch break excluded."""
        grid: list[datetime] = []
        for start, end in self.parts:
            t = start
            while t < end:
                grid.append(t)
                t += timedelta(minutes=1)
        return grid

    def state_at(self, t: datetime) -> SessionState:
        for start, end in self.parts:
            if start <= t < end:
                return SessionState.OPEN
        if self.break_start is not None and self.break_end is not None and self.break_start <= t < self.break_end:
            return SessionState.LUNCH
        return SessionState.CLOSED

    def minutes_to_close(self, t: datetime) -> float | None:
        """Trading minutes left until the close (lunch not counted); None outside continuous trading."""
        if self.state_at(t) is not SessionState.OPEN:
            return None
        left = 0.0
        for start, end in self.parts:
            if t < end:
                left += (end - max(t, start)).total_seconds()
        return left / 60

    def minutes_to_break(self, t: datetime) -> float | None:
        """Minutes until the lunch break; None when there is none ahead in this session."""
        if self.break_start is None or self.state_at(t) is not SessionState.OPEN or t >= self.break_start:
            return None
        return (self.break_start - t).total_seconds() / 60

    def minutes_since_open(self, t: datetime) -> float:
        """Trading minutes elapsed since the open (lunch not counted), clamped to the session."""
        done = 0.0
        for start, end in self.parts:
            if t > start:
                done += (min(t, end) - start).total_seconds()
        return done / 60


def library_end(market: Market) -> date:
    """The last day the installed exchange-calendars can answer for ``market``."""
    latest = CALENDAR_TYPES[market].bound_max()
    return UNBOUNDED_END if latest is None else min(latest.date(), UNBOUNDED_END)


class MarketCalendar:
    def __init__(self, market: Market, end: date | None = None) -> None:
        """``end``: an earlier last day than the library's (tests of what happens when it comes)."""
        self.market = market
        self.tz = TIMEZONES[market]
        self.end = min(end, library_end(market)) if end else library_end(market)
        self._cal = _exchange_calendar(CALENDAR_CODES[market], self.end)
        self._sessions: dict[date, bool] = {}  # every monitor check asks: the calendar's answer is slow

    @staticmethod
    def full_day_minutes(market: Market) -> int:
        return {Market.HK: 330, Market.US: 390}[market]

    def local(self, t: datetime) -> datetime:
        return _aware(t).astimezone(self.tz)

    def trading_day(self, t: datetime) -> date:
        """The market-local calendar date of ``t`` (the day a session would belong to)."""
        return self.local(t).date()

    def _check_range(self, d: date) -> None:
        if d > self.end:
            raise CalendarRangeError(
                f"the installed exchange-calendars knows {self.market.value} sessions only until {self.end}; {UPGRADE}")
        if d < CALENDAR_START:
            raise CalendarRangeError(f"{d} is outside the {self.market.value} calendar, which starts on {CALENDAR_START}")

    def end_warning(self, t: datetime, within_days: int = END_WARNING_DAYS) -> str | None:
        """What to tell the trader when the calendar ends within ``within_days`` of ``t`` (or has)."""
        left = (self.end - self.trading_day(t)).days
        if left > within_days:
            return None
        when = f"{left} days from now" if left > 1 else {1: "tomorrow", 0: "today"}.get(left, "already past")
        return (f"WARNING: the installed exchange-calendars knows {self.market.value} sessions only until {self.end} "
                f"({when}): {UPGRADE} before then, or trading stops that day")

    def is_session(self, d: date) -> bool:
        known = self._sessions.get(d)
        if known is None:
            self._check_range(d)
            known = self._sessions[d] = bool(self._cal.is_session(pd.Timestamp(d)))
        return known

    def session(self, d: date) -> Session | None:
        """The session on market-local date ``d``, or None on weekends and holidays."""
        return _session(self._cal, self.market, d) if self.is_session(d) else None

    def session_at(self, t: datetime) -> Session | None:
        return self.session(self.trading_day(t))

    def state(self, t: datetime) -> SessionState:
        s = self.session_at(t)
        return s.state_at(_aware(t)) if s else SessionState.CLOSED

    def is_open(self, t: datetime) -> bool:
        return self.state(t) is SessionState.OPEN

    def minutes_to_close(self, t: datetime) -> float | None:
        s = self.session_at(t)
        return s.minutes_to_close(_aware(t)) if s else None

    def minutes_to_break(self, t: datetime) -> float | None:
        s = self.session_at(t)
        return s.minutes_to_break(_aware(t)) if s else None

    def next_open(self, t: datetime) -> datetime:
        """The next moment continuous trading starts strictly after ``t`` (a lunch end counts)."""
        t = _aware(t)
        d = self.trading_day(t)
        for _ in range(30):
            s = self.session(d) if CALENDAR_START <= d <= self.end else None
            if s:
                for start, _end in s.parts:
                    if start > t:
                        return start
            d += timedelta(days=1)
            self._check_range(d)
        raise CalendarRangeError(f"no {self.market.value} session within 30 days after {t}")

    def sessions_between(self, start: date, end: date) -> list[Session]:
        self._check_range(start)
        self._check_range(end)
        days = self._cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
        return [_session(self._cal, self.market, ts.date()) for ts in days]

    def previous_sessions(self, d: date, count: int) -> list[Session]:
        """The ``count`` sessions before date ``d`` (oldest first)."""
        out: list[Session] = []
        day = d - timedelta(days=1)
        while len(out) < count and day >= CALENDAR_START:
            s = self.session(day)
            if s:
                out.append(s)
            day -= timedelta(days=1)
        return list(reversed(out))

    def at_local(self, d: date, hhmm: time) -> datetime:
        return datetime.combine(d, hhmm, tzinfo=self.tz).astimezone(timezone.utc)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t} given to the calendar; pass a timezone-aware time")
    return t.astimezone(timezone.utc)


@lru_cache(maxsize=None)
def _exchange_calendar(code: str, end: date):
    return xcals.get_calendar(code, start=CALENDAR_START.isoformat(), end=end.isoformat())


@lru_cache(maxsize=4096)
def _session(cal, market: Market, d: date) -> Session:
    ts = pd.Timestamp(d)
    open_, close = cal.session_open_close(ts)
    bstart, bend = cal.session_break_start(ts), cal.session_break_end(ts)
    return Session(
        market=market,
        day=d,
        open=open_.to_pydatetime().astimezone(timezone.utc),
        close=close.to_pydatetime().astimezone(timezone.utc),
        break_start=None if pd.isna(bstart) else bstart.to_pydatetime().astimezone(timezone.utc),
        break_end=None if pd.isna(bend) else bend.to_pydatetime().astimezone(timezone.utc),
    )
