"""Where should a stop sit? Barrier exits over every (symbol, cycle time) of a data set, by half.

    .venv/bin/python scripts/exit_study.py PATH [--market hk|us] [--config FILE] [--hold 60]

Entries: every symbol at every cycle time of the profile (after the opening range), bought at the
ask like a market order, one position worth ``--value`` (whole board lots). Each entry is exited
by ``policy_lab.re_exit`` under a grid of stops, either a fixed % below the fill or a multiple of
the symbol's noise (``risk.noise_stop_distance``: per-minute volatility of the two sessions before,
scaled to ``--hold`` minutes), each with a target at ``--rr`` times the risk or none, then the
session's time exit. Mean net % per trade (fees included) is printed for the first and second half
of the sessions, so a value chosen on one half can be checked on the other. Read-only: nothing is
written, no database is used.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brokers.fees import execution_fees  # noqa: E402
from brokers.paper_tapes import SessionTapes  # noqa: E402
from config.settings import load_profile, profile_path  # noqa: E402
from data.calendar import MarketCalendar  # noqa: E402
from data.indicators import minute_volatility_pct  # noqa: E402
from core.instruments import OrderSide, Rounding, round_to_tick  # noqa: E402
from core.policy_lab import EntryFill, re_exit, time_exit_after  # noqa: E402
from runner.sessions import FULL_SESSION_SHARE, replay_feed, scheduled_cycle_times  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--market", default="hk")
    ap.add_argument("--config")
    ap.add_argument("--hold", type=float, default=60, help="expected holding minutes for the noise scale")
    ap.add_argument("--value", type=float, default=None, help="position value (default: the profile's cap)")
    ap.add_argument("--rr", type=float, default=2.0)
    args = ap.parse_args(argv)
    profile = load_profile(Path(args.config) if args.config else profile_path(args.market))
    calendar = MarketCalendar(profile.market)
    # The study's figures (docs/exit-quality.md) are over full sessions, as when they were measured.
    feed = replay_feed(args.path, profile, calendar, None, None, min_coverage=FULL_SESSION_SHARE)
    tapes = SessionTapes(feed.series, calendar, profile)
    value = Decimal(str(args.value)) if args.value else profile.risk.max_position_value
    sessions = feed.sessions[2:]  # two sessions of history for the noise measure
    half = len(sessions) // 2
    fixed = [Decimal(x) for x in ("0.5", "1", "1.5", "2", "3", "5")]
    multiples = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
    policies = ([("close", None, False)] + [(f"fixed {p}%", ("pct", p), t) for p in fixed for t in (False, True)]
                + [(f"noise x{m:g}", ("noise", m), t) for m in multiples for t in (False, True)]
                + [(f"target only, noise x{m:g}", ("target", m), False) for m in multiples]
                + [(f"noise x{m:g} on closes", ("closes", m), False) for m in multiples])
    results: dict[str, list[list[float]]] = {name + (" +target" if t else ""): [[], []] for name, _, t in policies}
    sigmas: list[float] = []
    for n, session in enumerate(sessions):
        part = 0 if n < half else 1
        cycle_times = scheduled_cycle_times(profile, calendar, session)
        for symbol, series in feed.series.items():
            steps = tapes.steps(symbol, session.day)
            # The same steps for a stop judged on one-minute closes only (the last of a bar's four steps).
            inf = Decimal("Infinity")
            on_closes = dataclasses.replace(steps, prices=[p if k % 4 == 3 else inf for k, p in enumerate(steps.prices)])
            times = steps.times
            if not times:
                continue
            history = series.minute[(series.minute.index < session.open)].tail(2 * calendar.full_day_minutes(profile.market))
            sigma = minute_volatility_pct(history)
            if sigma is None:
                continue
            sigmas.append(sigma)
            for at in cycle_times:
                i = next((k for k, t in enumerate(times) if t >= at), None)
                if i is None:
                    continue
                ask = steps.asks[i]
                lot = series.lot_size
                qty = int((value / (ask * lot)).to_integral_value(ROUND_FLOOR)) * lot
                if qty <= 0:
                    continue
                fees = execution_fees(symbol.market, OrderSide.BUY, qty, ask * qty, profile).total
                entry = EntryFill(symbol, times[i], ask, qty, fees)
                deadline = time_exit_after(session, times[i], profile)
                for name, rule, with_target in policies:
                    stop = target = None
                    if rule is not None:
                        kind, x = rule
                        dist = (ask * x / 100 if kind == "pct"
                                else ask * Decimal(str(x * sigma * args.hold ** 0.5)) / 100)
                        if kind == "target":  # a take-profit alone: sell into strength, no stop
                            target = round_to_tick(symbol.market, ask + dist, session.day, Rounding.UP,
                                                   profile.ticks.hk_phase2_date)
                        else:
                            stop = round_to_tick(symbol.market, ask - dist, session.day, Rounding.DOWN,
                                                 profile.ticks.hk_phase2_date)
                    if with_target and stop is not None:
                        target = round_to_tick(symbol.market, ask + (ask - stop) * Decimal(str(args.rr)), session.day,
                                               Rounding.UP, profile.ticks.hk_phase2_date)
                    walked = on_closes if rule is not None and rule[0] == "closes" else steps
                    x_ = re_exit(entry, walked, deadline, profile, stop=stop, target=target)
                    results[name + (" +target" if with_target else "")][part].append(x_.net_pct)
    print(f"{profile.market.value}: {len(sessions)} sessions ({sessions[0].day} .. {sessions[-1].day}), halves at "
          f"{sessions[half].day}; per-minute sigma median {statistics.median(sigmas):.3f}%; hold {args.hold:g} min; "
          f"target {args.rr:g} x risk where shown")
    print(f"{'policy':24} {'n1':>5} {'mean1 %':>8} {'win1':>5} {'n2':>5} {'mean2 %':>8} {'win2':>5}")
    for name, (a, b) in results.items():
        print(f"{name:24} {len(a):5d} {_mean(a):8.3f} {_win(a):5.2f} {len(b):5d} {_mean(b):8.3f} {_win(b):5.2f}")
    return 0


def _mean(x: list[float]) -> float:
    return statistics.fmean(x) if x else float("nan")


def _win(x: list[float]) -> float:
    return sum(1 for v in x if v > 0) / len(x) if x else float("nan")


if __name__ == "__main__":
    raise SystemExit(main())
