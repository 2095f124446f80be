"""Which sessions the paper exchange can trade: the data's full sessions, and the feed for them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date

from config.settings import Profile
from data.bars import KNOWN_LOT_SIZES, BarSeries, load_bars, load_samples, symbols_in
from data.calendar import MarketCalendar, Session
from data.universe import build_universe
from instruments import Market, Symbol

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

    @property
    def universe(self) -> list[Symbol]:
        return self.real_symbols + self.synthetic_symbols

    def trading_in(self, session: Session) -> list[Symbol]:
        """The symbols with bars in ``session``: a replay scans these (the others did not trade, as far
        as the data knows, and have no price to quote)."""
        return [s for s in self.universe
                if ((self.series[s].minute.index >= session.open) & (self.series[s].minute.index < session.close)).any()]

    def has_history_before(self, session: Session) -> bool:
        """Whether any symbol has bars (minute or daily) before ``session``: without them no volume
        ratio exists, so nothing can be ranked."""
        return any((not s.minute.empty and s.minute.index.min() < session.open)
                   or (not s.daily.empty and s.daily.index.min().date() < session.day) for s in self.series.values())


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


def sample_feed(profile: Profile, calendar: MarketCalendar, last_only: bool = True) -> PaperFeed:
    """The bundled real bars plus the seeded synthetic universe, for the latest sample session."""
    real = load_samples(profile.market)
    sessions = full_sessions(real, calendar)
    if not sessions:
        raise ValueError(f"no full {profile.market.value} session in the bundled samples")
    chosen = sessions[-1:] if last_only else sessions
    return _with_universe(real, chosen, profile, calendar, synthetic=True)


def replay_feed(path, profile: Profile, calendar: MarketCalendar, start: date | None, end: date | None) -> PaperFeed:
    """User bars (a CSV or a folder) for the replay; only the data's own symbols are traded."""
    series = {s: v for s, v in load_bars(path, profile.market).items() if s.market is profile.market}
    if not series:
        others = [s for s in symbols_in(path) if s.market is not profile.market]
        if others:
            market = others[0].market.value
            raise NoReplayData(f"{path}: no {profile.market.value} bars here, only {market} bars "
                               f"({', '.join(s.short for s in others)}): add --market {market.lower()}")
        raise NoReplayData(f"{path}: no {profile.market.value} bars found (files like 09988_1m_*.csv or AAPL.csv)")
    sessions = [s for s in full_sessions(series, calendar)
                if (start is None or s.day >= start) and (end is None or s.day <= end)]
    if not sessions:
        raise NoReplayData(f"{path}: no full {profile.market.value} session between {start or 'the start'} and {end or 'the end'}")
    lots = profile.paper.lot_sizes
    series = {s: dataclasses.replace(v, lot_size=lots[str(s)]) if str(s) in lots else v for s, v in series.items()}
    assumed = {s: v.lot_size for s, v in series.items()
               if s.market is Market.HK and str(s) not in lots and s not in KNOWN_LOT_SIZES}
    return dataclasses.replace(_with_universe(series, sessions, profile, calendar, synthetic=False), assumed_lots=assumed)


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
