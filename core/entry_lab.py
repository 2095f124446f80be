"""Entry tiers side by side: which (symbol, cycle time) entries a tier's levels take, and what they earned.

``scripts/entry_study.py`` measures, for every symbol at every cycle time of a data set, the features
the rules brain reads (volume ratio, change %, RSI14 on 5-minute bars, a bullish pattern) and the net %
of that entry held to the session's time exit. Here are the pure parts: a tier's conditions as the
rules brain applies them when there is no news (``runner.brains.RulesBrain.choose``), the mean of a
set of entries with its spread, and the walk-forward choice of levels on the first half.

Pure functions of the rows: no clock, no broker, no database.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from typing import Hashable, Iterable, Mapping, Sequence, TypeVar

from config.settings import EntryPolicy, EntryTier

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class EntryRow:
    """One symbol at one cycle time: what the tools said, and what the entry earned held to the time exit."""

    day: date
    cycle: str                   # the cycle's market-local time, HH:MM
    symbol: str
    volume_ratio: float | None   # as get_quote gives it (2 decimals)
    change_pct: float            # as get_quote gives it; 0 when unknown, as the brain reads it
    rsi: float | None            # get_technicals' rsi14 on 5-minute bars (2 decimals); None when not needed
    bullish: bool                # detect_patterns found a bullish pattern on 5-minute bars
    net_pct: float               # bought at the ask, sold at the time exit, fees included
    move_pct: float = 0.0        # the last price's move over the same time: net_pct less this is the costs


@dataclass(frozen=True)
class EntryLevels:
    """One tier's conditions without news: volume ratio above, RSI within, change above, a pattern or not."""

    min_volume_ratio: float
    rsi_min: float
    rsi_max: float
    min_change_pct: float | None = None
    pattern: bool = False

    @classmethod
    def of(cls, tier: EntryTier) -> "EntryLevels | None":
        """The tier as ``RulesBrain.choose`` reads it when no news is known (None: it can never hold)."""
        if tier.setup == "pattern_and_catalyst":
            return None
        if tier.setup == "pattern_or_catalyst":
            return cls(tier.min_volume_ratio, tier.rsi_min, tier.rsi_max, None, pattern=True)
        # Momentum: "a pattern or a volume ratio above the tier's" always holds once the ratio check passed.
        return cls(tier.min_volume_ratio, tier.rsi_min, tier.rsi_max, tier.min_change_pct or 0.0, pattern=False)

    def holds(self, row: EntryRow) -> bool:
        ratio, rsi = row.volume_ratio, row.rsi
        if ratio is None or rsi is None or ratio <= self.min_volume_ratio or not self.rsi_min <= rsi <= self.rsi_max:
            return False
        if self.pattern and not row.bullish:
            return False
        return self.min_change_pct is None or row.change_pct > self.min_change_pct

    def label(self) -> str:
        parts = [f"ratio>{self.min_volume_ratio:g}", f"RSI {self.rsi_min:g}-{self.rsi_max:g}"]
        if self.min_change_pct is not None:
            parts.append(f"chg>{self.min_change_pct:g}%")
        parts.append("pattern" if self.pattern else "no pattern")
        return ", ".join(parts)


def passes_brain(row: EntryRow, policy: EntryPolicy) -> bool:
    """The brain's checks before any tier: RSI and volume ratio known, RSI within the pass band, ratio >= 1."""
    if row.rsi is None or row.volume_ratio is None:
        return False
    return policy.pass_rsi_below <= row.rsi <= policy.pass_rsi_above and row.volume_ratio >= 1


def first_tier(row: EntryRow, policy: EntryPolicy, tiers: Sequence[tuple[int, EntryLevels | None]]) -> int | None:
    """The number of the first tier that holds, in the order given, as ``RulesBrain.choose`` picks it."""
    if not passes_brain(row, policy):
        return None
    return next((n for n, levels in tiers if levels is not None and levels.holds(row)), None)


@dataclass(frozen=True)
class Figure:
    """The mean of a set of entries' net %, with two spreads: ``se`` treats every entry as independent;
    ``se_day`` lets entries of one session move together (entries on one day share the market's move,
    so ``se`` understates the noise)."""

    n: int
    mean: float
    se: float
    se_day: float

    def cell(self) -> str:
        if not self.n:
            return f"{'-':>7} {'':>13} {0:4d}"
        return f"{self.mean:+7.3f} ±{self.se:.3f}/{self.se_day:.3f} {self.n:4d}"


def figure(values: Sequence[float], days: Sequence[Hashable]) -> Figure:
    """Mean, standard error and the standard error clustered by ``days`` (one label per value)."""
    n = len(values)
    if n == 0:
        return Figure(0, math.nan, math.nan, math.nan)
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(n) if n > 1 else math.nan
    by_day: dict[Hashable, float] = defaultdict(float)
    for v, d in zip(values, days):
        by_day[d] += v - mean
    clusters = len(by_day)
    # The cluster-robust variance of a mean, with the small-sample factor G/(G-1).
    se_day = (math.sqrt(sum(s * s for s in by_day.values()) * clusters / (clusters - 1)) / n
              if clusters > 1 else math.nan)
    return Figure(n, mean, se, se_day)


def rows_figure(rows: Iterable[EntryRow]) -> Figure:
    rows = list(rows)
    return figure([r.net_pct for r in rows], [r.day for r in rows])


def choose_best(figures: Mapping[K, Figure], min_count: int) -> K | None:
    """The key with the best mean among those with at least ``min_count`` entries (ties: the one given
    first); None when none has enough."""
    best: K | None = None
    for key, f in figures.items():
        if f.n >= min_count and not math.isnan(f.mean) and (best is None or f.mean > figures[best].mean):
            best = key
    return best


def cycle_means(rows: Iterable[EntryRow]) -> dict[tuple[date, str], float]:
    """The mean net % of every entry at each (session, cycle time): what a random pick would average there."""
    sums: dict[tuple[date, str], list[float]] = defaultdict(list)
    for r in rows:
        sums[(r.day, r.cycle)].append(r.net_pct)
    return {k: statistics.fmean(v) for k, v in sums.items()}


def excess_figure(rows: Iterable[EntryRow], means: Mapping[tuple[date, str], float]) -> Figure:
    """The entries' net % less the mean of all entries at the same cycle: the market's move of that day
    and hour taken out, so what is left is what the choice of symbol was worth."""
    rows = list(rows)
    return figure([r.net_pct - means[(r.day, r.cycle)] for r in rows], [r.day for r in rows])
