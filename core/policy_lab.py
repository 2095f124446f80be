"""Exit policies side by side: the same entries re-exited under simple rules, on the same bars.

A replay's ``--compare`` asks what the position monitor is worth. Each entry the agent made
(symbol, fill time, fill price, quantity, entry fees) is exited again on the session's replay
steps (the paper exchange's tape: four prices a minute bar, bid one spread below the last) by:

* ``backstop``: only the broker-side stop and target of the profile (``backstop.stop_pct`` /
  ``target_pct`` from the fill, on the tick grid), then the session's time exit;
* ``close``: held to the session's time exit.

The time exit is where the monitor's STRONG time rule fires: the first step less than
``lunch_break_minutes.strong`` before the lunch break (unless the profile holds through lunch),
else less than ``market_close_minutes.strong`` before the close (half days included: the
``Session`` knows its own close). Fills follow the paper exchange: a stop triggers when the last
price trades at or through it and sells at that step's bid (after a gap, the gapped price); the
target is a limit sell that fills when the bid reaches it; a time exit sells at the bid. A sale
takes at most each step's ``fillable`` shares (the paper exchange's participation cap), walking
on to the next steps for the rest, as the monitor's exit orders do on thin minutes; the price is
the sale's average. Fees are ``brokers.fees`` as the paper exchange charges one order: each step's
execution pays its own stamp duty and levies, the commission minimum and platform fee once.

Pure functions of the tape and the profile: no clock, no broker, no database.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

from brokers.fees import execution_fees
from config.settings import Profile
from data.calendar import Session
from core.instruments import OrderSide, Rounding, Symbol, round_to_tick

HUNDRED = Decimal(100)


@dataclass(frozen=True)
class EntryFill:
    """One entry as it filled."""

    symbol: Symbol
    time: datetime
    price: Decimal
    quantity: int
    entry_fees: Decimal


@dataclass(frozen=True)
class Steps:
    """One symbol's session as the paper exchange replays it (``brokers.paper.SessionTapes``)."""

    times: Sequence[datetime]
    prices: Sequence[Decimal]
    bids: Sequence[Decimal]
    asks: Sequence[Decimal]
    market_sells: Sequence[Decimal]   # what a market sell gets: the bid less the profile's slippage
    fillable: Sequence[int] | None = None  # shares a step may fill (the participation cap); None: any


@dataclass(frozen=True)
class ReExit:
    entry: EntryFill
    time: datetime                    # of the sale's last fill
    proceeds: Decimal                 # what the whole quantity sold for
    reason: str
    exit_fees: Decimal

    @property
    def price(self) -> Decimal:
        """The sale's average price."""
        return self.proceeds / self.entry.quantity

    @property
    def gross_pnl(self) -> Decimal:
        return self.proceeds - self.entry.price * self.entry.quantity

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.entry.entry_fees - self.exit_fees

    @property
    def net_pct(self) -> float:
        return float(self.net_pnl / (self.entry.price * self.entry.quantity) * HUNDRED)


def time_exit_after(session: Session, entry_time: datetime, profile: Profile) -> datetime:
    """The moment the monitor's STRONG time rule takes over: exits happen at the first step after it."""
    signals = profile.signals
    lunch = signals.lunch_break_minutes.strong
    if (not profile.monitor.hold_through_lunch and session.break_start is not None and lunch is not None
            and entry_time < session.break_start):
        return session.break_start - timedelta(minutes=lunch)
    return session.close - timedelta(minutes=signals.market_close_minutes.strong or 0)


def barrier_levels(price: Decimal, symbol: Symbol, day, profile: Profile) -> tuple[Decimal, Decimal]:
    """The profile's broker-side backstop around a fill: the stop below, the target above, on the grid."""
    phase2 = profile.ticks.hk_phase2_date
    stop = round_to_tick(symbol.market, price * (1 - profile.backstop.stop_pct / HUNDRED), day, Rounding.DOWN, phase2)
    target = round_to_tick(symbol.market, price * (1 + profile.backstop.target_pct / HUNDRED), day, Rounding.UP, phase2)
    return stop, target


def re_exit(entry: EntryFill, steps: Steps, deadline: datetime, profile: Profile, *,
            stop: Decimal | None = None, target: Decimal | None = None) -> ReExit:
    """Walk the steps after the fill: stop, then target, then the time exit; the last bid if the tape ends."""
    index = _first_step_after(steps.times, entry.time)
    last = len(steps.times) - 1
    for i in range(index, last + 1):
        if steps.times[i] > deadline:
            return _sell(entry, steps, i, "time_exit", profile)
        if stop is not None and steps.prices[i] <= stop:
            return _sell(entry, steps, i, "stop", profile)
        if target is not None and steps.bids[i] >= target:
            return _sell(entry, steps, i, "target", profile, limit=target)
    return _sell(entry, steps, max(last, 0), "time_exit", profile, whole=True)


def _first_step_after(times: Sequence[datetime], t: datetime) -> int:
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _sell(entry: EntryFill, steps: Steps, i: int, reason: str, profile: Profile, *,
          limit: Decimal | None = None, whole: bool = False) -> ReExit:
    """Sell from step ``i`` on, each step's fillable shares at a time (a limit sell only where the bid
    is at or above it, at that bid; a market sell at the step's market price). What the tape's end
    leaves unsold goes at its last market price, as the replay's end of day does."""
    executions: list[tuple[int, Decimal]] = []   # (shares, price) of each fill of the one sell order
    remaining, j, last = entry.quantity, i, len(steps.times) - 1
    while remaining > 0 and j <= last and not whole:
        can = remaining if steps.fillable is None else min(remaining, steps.fillable[j])
        price = steps.market_sells[j] if limit is None else (steps.bids[j] if steps.bids[j] >= limit else None)
        if can > 0 and price is not None:
            executions.append((can, price))
            remaining -= can
        if remaining > 0:
            j += 1
    j = min(j, last)
    if remaining > 0:
        executions.append((remaining, steps.market_sells[j]))
    proceeds, fees = _proceeds_and_fees(entry.symbol, executions, profile)
    return ReExit(entry, steps.times[j], proceeds, reason, fees)


def _proceeds_and_fees(symbol: Symbol, executions: Sequence[tuple[int, Decimal]], profile: Profile) -> tuple[Decimal, Decimal]:
    """What one sell order's executions sold for, and their fees as the paper exchange charges them:
    each execution its own, the order's commission minimum and platform fee once."""
    proceeds = fees = Decimal(0)
    for shares, price in executions:
        fees += execution_fees(symbol.market, OrderSide.SELL, shares, price * shares, profile,
                               order_value_before=proceeds).total
        proceeds += price * shares
    return proceeds, fees


# --- Figures -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """One trade's result under a policy, whoever produced it (the replay or a re-exit)."""

    symbol: str
    entry_time: str
    net_pnl: float
    net_pct: float
    reason: str


def outcome_of(x: ReExit, calendar_local) -> Outcome:
    return Outcome(str(x.entry.symbol), calendar_local(x.entry.time).isoformat(), float(x.net_pnl), x.net_pct, x.reason)


def policy_row(outcomes: Sequence[Outcome]) -> dict:
    """Trades, mean and median net % per trade, win rate, payoff, net P&L and the worst trade."""
    n = len(outcomes)
    if not n:
        return {"trades": 0, "mean_net_pct": None, "median_net_pct": None, "win_rate": None, "payoff": None,
                "net_pnl": 0.0, "worst_net_pct": None}
    pcts = [o.net_pct for o in outcomes]
    wins = [p for p in pcts if p > 0]
    losses = [p for p in pcts if p <= 0]
    payoff = (statistics.fmean(wins) / abs(statistics.fmean(losses))
              if wins and losses and statistics.fmean(losses) != 0 else None)
    return {
        "trades": n,
        "mean_net_pct": round(statistics.fmean(pcts), 4),
        "median_net_pct": round(statistics.median(pcts), 4),
        "win_rate": round(len(wins) / n, 4),
        "payoff": None if payoff is None else round(payoff, 4),
        "net_pnl": round(sum(o.net_pnl for o in outcomes), 4),
        "worst_net_pct": round(min(pcts), 4),
    }


def regret_by_reason(actual: Sequence[Outcome], held: Mapping[tuple[str, str], Outcome]) -> dict[str, dict]:
    """Per exit reason: what those trades made, what holding them to the time exit would have made.

    ``regret_pct`` is held minus actual, mean per trade: positive means the reason sold too early
    (holding would have done better), negative means it saved money.
    """
    groups: dict[str, list[tuple[Outcome, Outcome]]] = {}
    for o in actual:
        h = held.get((o.symbol, o.entry_time))
        if h is not None:
            groups.setdefault(o.reason, []).append((o, h))
    out = {}
    for reason, pairs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        mean_actual = statistics.fmean(a.net_pct for a, _ in pairs)
        mean_held = statistics.fmean(h.net_pct for _, h in pairs)
        out[reason] = {
            "trades": len(pairs),
            "mean_net_pct": round(mean_actual, 4),
            "held_mean_net_pct": round(mean_held, 4),
            "regret_pct": round(mean_held - mean_actual, 4),
            "regret_pnl": round(sum(h.net_pnl - a.net_pnl for a, h in pairs), 4),
        }
    return out


def key_of(o: Outcome) -> tuple[str, str]:
    return (o.symbol, o.entry_time)


def index_by_entry(outcomes: Iterable[Outcome]) -> dict[tuple[str, str], Outcome]:
    return {key_of(o): o for o in outcomes}
