"""Which sessions the paper exchange can trade: the data's full sessions, and the feed for them."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from config.settings import Profile
from data.bars import KNOWN_LOT_SIZES, BarSeries, files_by_symbol, load_bars, load_samples, symbols_in
from data.calendar import MarketCalendar, Session
from data.lots import lots_beside
from data.universe import build_universe
from core.instruments import Market, Symbol, parse_symbol

# A session counts as "in the data" when at least this share of its minute bars is present.
FULL_SESSION_SHARE = 0.9


class NoReplayData(ValueError):
    """The path holds no bars to replay for this market or these dates (bad usage, exit 2)."""


@dataclass(frozen=True)
class PaperFeed:
    series: dict[Symbol, BarSeries]
    sessions: list[Session]          # the sessions to trade, oldest first
    real_symbols: list[Symbol]
    synthetic_symbols: list[Symbol]
    # HK symbols of replay data whose board lot nobody gave (the profile's paper.lot_sizes): the
    # default lot is assumed, and the replay says so.
    assumed_lots: dict[Symbol, int] = field(default_factory=dict)
    # Replay data only: the share of each replayed session's bars the data has (the best-covered
    # symbol's), the sessions left out for --min-coverage, the bar spacing in minutes, and the
    # files of the other market that were not read.
    coverage: dict[date, float] = field(default_factory=dict)
    skipped_sessions: dict[date, float] = field(default_factory=dict)
    resolution_minutes: int = 1
    other_market_files: list[str] = field(default_factory=list)

    @property
    def universe(self) -> list[Symbol]:
        return self.real_symbols + self.synthetic_symbols

    def trading_in(self, session: Session, priced_by: datetime | None = None) -> list[Symbol]:
        """The symbols with bars in ``session``: a replay scans these (the others did not trade, as far
        as the data knows, and have no price to quote). With ``priced_by`` (the session's first cycle),
        only those with a bar before it as well: a symbol whose data starts later that day has no price
        yet, and its scan failed the whole cycle (the US samples' first MSFT day starts at noon)."""
        def scanned(minute) -> bool:  # a BarSeries.minute frame
            index = minute.index
            if not ((index >= session.open) & (index < session.close)).any():
                return False
            return priced_by is None or bool(len(index)) and index.min() < priced_by

        return [s for s in self.universe if scanned(self.series[s].minute)]

    def has_history_before(self, session: Session) -> bool:
        """Whether any symbol has bars (minute or daily) before ``session``: without them no volume
        ratio exists, so nothing can be ranked."""
        return any((not s.minute.empty and s.minute.index.min() < session.open)
                   or (not s.daily.empty and s.daily.index.min().date() < session.day) for s in self.series.values())

    def has_history_in(self, past: list[Session]) -> bool:
        """Whether any symbol has bars in the ``past`` sessions (the volume lookback): after a gap in
        the data longer than the lookback there is nothing to compare volume with."""
        if not past:
            return False
        first, last = past[0], past[-1]
        return any((not s.minute.empty and ((s.minute.index >= first.open) & (s.minute.index < last.close)).any())
                   or (not s.daily.empty and ((s.daily.index.date >= first.day) & (s.daily.index.date <= last.day)).any())
                   for s in self.series.values())


def full_sessions(series: dict[Symbol, BarSeries], calendar: MarketCalendar) -> list[Session]:
    days: set[date] = set()
    for s in series.values():
        if s.minute.empty:
            continue
        local = s.minute.index.tz_convert(calendar.tz)
        counts = local.normalize().value_counts()
        for day, n in counts.items():
            session = calendar.session(day.date())
            if session and n >= session.trading_minutes * FULL_SESSION_SHARE:
                days.add(day.date())
    return [calendar.session(d) for d in sorted(days)]  # type: ignore[misc]


def session_coverage(series: dict[Symbol, BarSeries], calendar: MarketCalendar) -> dict[date, float]:
    """Per session with bars: the share of its bars the best-covered symbol has (1.0 = complete).

    A session's bar count is its trading minutes over the bars' spacing (HK 330 one-minute or 66
    five-minute bars, US 390 or 78)."""
    best: dict[date, float] = {}
    for s in series.values():
        if s.minute.empty:
            continue
        counts = s.minute.index.tz_convert(calendar.tz).normalize().value_counts()
        for day, n in counts.items():
            session = calendar.session(day.date())
            if session is None:
                continue
            share = min(1.0, n / math.ceil(session.trading_minutes / s.resolution_minutes))
            best[day.date()] = max(best.get(day.date(), 0.0), share)
    return dict(sorted(best.items()))


def sample_feed(profile: Profile, calendar: MarketCalendar, last_only: bool = True) -> PaperFeed:
    """The bundled real bars plus the seeded synthetic universe, for the latest sample session."""
    real = load_samples(profile.market)
    sessions = full_sessions(real, calendar)
    if not sessions:
        raise ValueError(f"no full {profile.market.value} session in the bundled samples")
    chosen = sessions[-1:] if last_only else sessions
    return _with_universe(real, chosen, profile, calendar, synthetic=True)


def replay_feed(path, profile: Profile, calendar: MarketCalendar, start: date | None, end: date | None, *,
                tz: str | None = None, min_coverage: float = 0.0) -> PaperFeed:
    """User bars (a CSV or a folder) for the replay; only the data's own symbols are traded.

    Every session with bars is replayed, however few (its coverage is reported), except those
    under ``min_coverage`` (a share, 0..1), which are left out and listed. Naive times are in
    ``tz`` (by default the market's zone). Lots: the profile's ``paper.lot_sizes``, else the
    folder's ``lots.csv``, else the known ones; any other is assumed and listed.
    """
    path = Path(path)
    series = {s: v for s, v in load_bars(path, profile.market, tz=tz).items() if s.market is profile.market}
    if not series:
        others = [s for s in symbols_in(path) if s.market is not profile.market]
        if others:
            market = others[0].market.value
            raise NoReplayData(f"{path}: no {profile.market.value} bars here, only {market} bars "
                               f"({', '.join(s.short for s in others)}): add --market {market.lower()}")
        raise NoReplayData(f"{path}: no {profile.market.value} bars found (files like 09988_1m_*.csv or AAPL.csv)")
    coverage = {d: c for d, c in session_coverage(series, calendar).items()
                if (start is None or d >= start) and (end is None or d <= end)}
    skipped = {d: c for d, c in coverage.items() if c < min_coverage}
    kept = {d: c for d, c in coverage.items() if c >= min_coverage}
    if not kept:
        what = f"{profile.market.value} session" + (f" with {min_coverage:.0%} of its bars" if skipped else "")
        raise NoReplayData(f"{path}: no {what} between {start or 'the start'} and {end or 'the end'}")
    sessions = [calendar.session(d) for d in kept]
    lots = {**lots_beside(path), **{parse_symbol(k): v for k, v in profile.paper.lot_sizes.items()}}
    series = {s: dataclasses.replace(v, lot_size=lots[s]) if s in lots else v for s, v in series.items()}
    assumed = {s: v.lot_size for s, v in series.items()
               if s.market is Market.HK and s not in lots and s not in KNOWN_LOT_SIZES}
    others = sorted(f.name for sym, files in files_by_symbol(path).items() if sym.market is not profile.market
                    for f in files)
    feed = _with_universe(series, sessions, profile, calendar, synthetic=False)  # type: ignore[arg-type]
    return dataclasses.replace(feed, assumed_lots=assumed, coverage=kept, skipped_sessions=skipped,
                               resolution_minutes=max(v.resolution_minutes for v in series.values()),
                               other_market_files=sorted(set(others)))


def _with_universe(real: dict[Symbol, BarSeries], sessions: list[Session], profile: Profile,
                   calendar: MarketCalendar, synthetic: bool) -> PaperFeed:
    series = dict(real)
    synthetic_symbols: list[Symbol] = []
    if synthetic and profile.paper.universe_size:
        lookback = calendar.previous_sessions(sessions[0].day, profile.scan.volume_lookback_sessions)
        universe = build_universe(profile.market, profile.paper.universe_seed, profile.paper.universe_size,
                                  lookback + sessions, calendar)
        series.update(universe)
        synthetic_symbols = sorted(universe)
    return PaperFeed(series, sessions, sorted(real), synthetic_symbols)


def scheduled_cycle_times(profile: Profile, calendar: MarketCalendar, session: Session) -> list[datetime]:
    """When the profile's cycles run in ``session``: each cycle time, but not before the opening range
    of its part of the session has passed; none at or after the close."""
    delay = timedelta(minutes=profile.schedule.opening_range_minutes)
    times = []
    for t in profile.schedule.cycle_times:
        at = calendar.at_local(session.day, t)
        part_start = max((start for start, _end in session.parts if start <= at), default=session.open)
        times.append(max(at, part_start + delay))
    return sorted(t for t in times if t < session.close)
