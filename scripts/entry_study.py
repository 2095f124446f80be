"""What are the entry tiers worth? Every (symbol, cycle time) of a data set, held to the time exit, by half.

    .venv/bin/python scripts/entry_study.py PATH [--market hk|us] [--config FILE] [--min-count 60] [--check 10]

Entries: every symbol at every cycle time of the profile (after the opening range) in every full
session, bought at the ask like a market order (the paper exchange's slippage included), one position
worth ``--value`` (whole board lots; the same value for every tier, so tiers differ only in what they
pick), held to the session's time exit (``policy_lab.time_exit_after``), fees included. The features
are the tools' own: ``MarketData`` over the ``PaperExchange`` on a ``SimClock`` set to each cycle time,
as a replay's cycle sees them (the quote's volume ratio and change %, RSI14 by ``wilder_rsi`` on the
5-minute bars ``get_technicals`` reads, ``detect_patterns`` on the same bars). RSI and patterns are
computed only where the brain would look at them (volume ratio >= 1; patterns where RSI is in the pass
band). ``--check K`` runs the full tool path (``compute_technicals`` and ``RulesBrain.choose``) on every
K-th of those rows and counts any disagreement with the tier conditions used here (0 = none checked).

Printed, per half: all entries (the random baseline), each default tier, the brain's choice (tier 2,
else tier 3) over all symbols and within the scan's top candidates; then a grid over tier 2's and
tier 3's levels, the best mean on the first half with at least ``--min-count`` entries chosen and shown
on the second. Each cell is mean net % ±se/se_day n: se treats entries as independent, se_day lets
entries of one session move together. "vs cycle" is the same less the mean of all entries at the same
cycle time (the day's market move taken out). Read-only: nothing is written, no database is used.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field, replace
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brokers.base import Timeframe  # noqa: E402
from brokers.fees import execution_fees  # noqa: E402
from brokers.paper import PaperExchange  # noqa: E402
from brokers.paper_tapes import SessionTapes, with_slippage  # noqa: E402
from config.settings import Profile, load_profile, profile_path  # noqa: E402
from core.clock import SimClock  # noqa: E402
from core.entry_lab import (  # noqa: E402
    EntryLevels, EntryRow, Figure, choose_best, cycle_means, excess_figure, first_tier, passes_brain, rows_figure,
)
from core.instruments import OrderSide  # noqa: E402
from core.policy_lab import EntryFill, re_exit, time_exit_after  # noqa: E402
from data.calendar import MarketCalendar, Session  # noqa: E402
from data.indicators import RSI_LENGTH, compute_technicals, wilder_rsi  # noqa: E402
from data.market import MarketData  # noqa: E402
from runner.brains import Pass, RulesBrain  # noqa: E402
from runner.sessions import FULL_SESSION_SHARE, PaperFeed, replay_feed, scheduled_cycle_times  # noqa: E402

M5 = Timeframe.M5
TIER2_RATIOS, TIER2_RSI_MAX = (1.0, 1.5, 2.0, 3.0), (65.0, 70.0, 75.0)
TIER3_CHANGES, TIER3_RATIOS = (1.0, 2.0, 3.0, 5.0), (1.3, 2.0, 3.0)


@dataclass
class Collected:
    rows: list[EntryRow] = field(default_factory=list)
    scanned: set[tuple] = field(default_factory=set)   # (day, cycle, symbol) among the scan's candidates
    looked: int = 0                                    # rows the brain would look at (volume ratio >= 1)
    checked: int = 0
    disagreements: list[str] = field(default_factory=list)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--market", default="hk")
    ap.add_argument("--config")
    ap.add_argument("--value", type=float, default=None, help="position value (default: the profile's cap)")
    ap.add_argument("--min-count", type=int, default=60, help="fewest first-half entries a chosen level may have")
    ap.add_argument("--check", type=int, default=10, help="check every K-th looked-at row on the full tool path")
    args = ap.parse_args(argv)
    began = time.perf_counter()
    profile = load_profile(Path(args.config) if args.config else profile_path(args.market))
    calendar = MarketCalendar(profile.market)
    feed = replay_feed(args.path, profile, calendar, None, None, min_coverage=FULL_SESSION_SHARE)
    value = Decimal(str(args.value)) if args.value else profile.risk.max_position_value
    got = asyncio.run(collect(feed, profile, calendar, value, args.check))
    half_day = feed.sessions[len(feed.sessions) // 2].day
    cycles = sorted({r.cycle for r in got.rows})
    print(f"{profile.market.value}: {len(feed.sessions)} sessions ({feed.sessions[0].day} .. {feed.sessions[-1].day}), "
          f"second half from {half_day}; {len(feed.series)} symbols; cycles {', '.join(cycles)}; "
          f"position {profile.currency} {value:,}; held to the time exit, fees included")
    print(f"checked {got.checked} rows on the full tool path (compute_technicals, RulesBrain.choose): "
          f"{len(got.disagreements)} disagreement(s)" + "".join(f"\n  {d}" for d in got.disagreements[:10]))
    report(got, profile, half_day, args.min_count)
    print(f"({time.perf_counter() - began:.0f} s)")
    return 0


async def collect(feed: PaperFeed, profile: Profile, calendar: MarketCalendar, value: Decimal, check: int) -> Collected:
    clock = SimClock(feed.sessions[0].open)
    market = MarketData(PaperExchange(feed.series, clock, calendar, profile), clock, calendar, profile)
    brain = RulesBrain(profile)
    lowest = min(t.min_volume_ratio for t in profile.entry.tiers)
    got = Collected()
    for session in feed.sessions:
        market.universe = feed.trading_in(session)
        tapes = SessionTapes(feed.series, calendar, profile)  # one session's steps at a time: flat memory
        for at in scheduled_cycle_times(profile, calendar, session):
            clock.set(at)
            cycle = calendar.local(at).strftime("%H:%M")
            scan = await market.scan(profile.scan.default_index, brain.candidates, lowest, None)
            got.scanned |= {(session.day, cycle, row["symbol"]) for row in scan}
            views = await market.quotes(market.universe)
            for symbol, view in views.items():
                held = held_to_exit(tapes, session, symbol, view, value, profile)
                if held is None:
                    continue
                quote = view.to_dict()
                row = EntryRow(session.day, cycle, str(symbol), quote["volume_ratio"], quote["change_pct"] or 0.0,
                               None, False, *held)
                if row.volume_ratio is not None and row.volume_ratio >= 1:
                    row = await _looked_at(market, symbol, row, profile)
                    got.checked += await _check(market, brain, symbol, quote, row, session, got, check)
                got.rows.append(row)
    return got


def held_to_exit(tapes: SessionTapes, session: Session, symbol, view, value: Decimal,
                 profile: Profile) -> tuple[float, float] | None:
    """Net % of buying ``symbol`` at the quote's step (ask plus slippage) and selling at the time exit, and
    the last price's move % over the same time."""
    steps = tapes.steps(symbol, session.day)
    if not steps.times or view.time < session.open:
        return None
    price = with_slippage(symbol.market, view.ask, True, session.day, profile)
    lot = view.lot_size
    qty = int((value / (price * lot)).to_integral_value(ROUND_FLOOR)) * lot
    if qty <= 0:
        return None
    fees = execution_fees(symbol.market, OrderSide.BUY, qty, price * qty, profile).total
    entry = EntryFill(symbol, view.time, price, qty, fees)
    sold = re_exit(entry, steps, time_exit_after(session, view.time, profile), profile)
    last_then, last_at_exit = view.price, steps.prices[steps.times.index(sold.time)]
    return sold.net_pct, float((last_at_exit - last_then) / last_then * 100)


async def _looked_at(market: MarketData, symbol, row: EntryRow, profile: Profile) -> EntryRow:
    """The row with get_technicals' RSI14 (5-minute bars) and, where RSI is in the pass band, patterns."""
    bars = await market.bars(symbol, M5)
    rsi = wilder_rsi(bars.sort_index()["close"].astype(float).to_numpy(), RSI_LENGTH)
    row = replace(row, rsi=None if rsi is None else round(rsi, 2))
    if passes_brain(row, profile.entry):
        found = await market.patterns(symbol, M5)
        row = replace(row, bullish=any(p.direction == "bullish" for p in found))
    return row


async def _check(market: MarketData, brain: RulesBrain, symbol, quote: dict, row: EntryRow, session: Session,
                 got: Collected, every: int) -> int:
    """On every ``every``-th looked-at row: the full tool path must pick the tier the conditions here pick."""
    got.looked += 1
    if every <= 0 or got.looked % every:
        return 0
    tech = (await market.technicals(symbol, M5)).to_dict()
    patterns = [p.to_dict() for p in await market.patterns(symbol, M5)]
    choice = brain.choose(quote, tech, patterns, False, session.day)
    tools_tier = None if isinstance(choice, Pass) else choice[0].tier
    full = replace(row, bullish=any(p["direction"] == "bullish" for p in patterns))
    ours = first_tier(full, brain.profile.entry, default_tiers(brain.profile))
    if tech["rsi14"] != row.rsi or tools_tier != ours:
        got.disagreements.append(f"{session.day} {row.cycle} {row.symbol}: tools RSI {tech['rsi14']} tier {tools_tier}"
                                 f" ({getattr(choice, 'why', '')}), here RSI {row.rsi} tier {ours}")
    return 1


def default_tiers(profile: Profile) -> list[tuple[int, EntryLevels | None]]:
    return [(t.tier, EntryLevels.of(t)) for t in profile.entry.tiers]


def grids(profile: Profile) -> dict[int, list[EntryLevels]]:
    t2, t3 = profile.tier(2), profile.tier(3)
    return {
        2: [EntryLevels(v, t2.rsi_min, r, None, p) for p in (True, False) for v in TIER2_RATIOS for r in TIER2_RSI_MAX],
        3: [EntryLevels(v, t3.rsi_min, t3.rsi_max, c, p) for p in (False, True) for c in TIER3_CHANGES for v in TIER3_RATIOS],
    }


def report(got: Collected, profile: Profile, half_day, min_count: int) -> None:
    halves = ([r for r in got.rows if r.day < half_day], [r for r in got.rows if r.day >= half_day])
    means = [cycle_means(h) for h in halves]
    policy = profile.entry

    def cells(pick) -> tuple[list[Figure], str]:
        chosen = [[r for r in h if pick(r)] for h in halves]
        figs = [rows_figure(c) for c in chosen]
        excess = [excess_figure(c, m) for c, m in zip(chosen, means)]
        return figs, "  ".join(f"{f.cell()}  {e.mean:+6.3f}±{e.se_day:.3f}" if f.n else f"{f.cell()}  {'':13}"
                               for f, e in zip(figs, excess))

    def line(name: str, pick) -> list[Figure]:
        figs, text = cells(pick)
        print(f"{name:56} {text}")
        return figs

    head = f"{'mean %':>7} {'±se/se_day':>13} {'n':>4}  {'vs cycle':>13}"
    print(f"\n1. Default tiers (no news: tier 1 never holds)\n{'':56} {'first half':^39}  {'second half':^39}")
    print(f"{'entries':56} {head}  {head}")
    tiers = default_tiers(profile)
    line("all entries (the random baseline)", lambda r: True)
    moves = [rows_figure(replace(r, net_pct=r.move_pct) for r in h) for h in halves]
    print(f"{'  of which the price move (last to last)':56} {moves[0].cell()}  {'':13}  {moves[1].cell()}")
    for cycle in sorted({r.cycle for r in got.rows}):
        line(f"  at {cycle}", lambda r, c=cycle: r.cycle == c)
    for n, levels in tiers:
        if levels is not None:
            line(f"tier {n} alone: {levels.label()}", lambda r, lv=levels: passes_brain(r, policy) and lv.holds(r))
    line("the brain: tier 2, else tier 3", lambda r: first_tier(r, policy, tiers) is not None)
    for n, levels in tiers:
        if levels is not None:
            line(f"  the brain's tier {n}", lambda r, n=n: first_tier(r, policy, tiers) == n)
    line("  within the scan's top candidates", lambda r: (r.day, r.cycle, r.symbol) in got.scanned
         and first_tier(r, policy, tiers) is not None)
    line("the scan's top candidates, any", lambda r: (r.day, r.cycle, r.symbol) in got.scanned)

    print(f"\n2. Grid: chosen on the first half, the best mean with at least {min_count} entries")
    chosen: dict[int, EntryLevels | None] = {}
    for n, grid in grids(profile).items():
        print(f"{'tier ' + str(n):56} {head}  {head}")
        figs = {lv: line(f"  {lv.label()}", lambda r, lv=lv: passes_brain(r, policy) and lv.holds(r)) for lv in grid}
        chosen[n] = choose_best({lv: f[0] for lv, f in figs.items()}, min_count)
    print(f"\nChosen on the first half, shown on both\n{'':56} {head}  {head}")
    line("all entries (the random baseline)", lambda r: True)
    for n, levels in chosen.items():
        default = dict(tiers)[n]
        if default is not None:
            line(f"tier {n} default: {default.label()}", lambda r, lv=default: passes_brain(r, policy) and lv.holds(r))
        if levels is None:
            print(f"tier {n} chosen: none has {min_count} first-half entries")
            continue
        line(f"tier {n} chosen: {levels.label()}", lambda r, lv=levels: passes_brain(r, policy) and lv.holds(r))
    both = [(n, chosen.get(n) or lv) for n, lv in tiers]
    line("the brain with the chosen levels", lambda r: first_tier(r, policy, both) is not None)


if __name__ == "__main__":
    raise SystemExit(main())
