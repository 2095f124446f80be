"""Risk: check_risk, sizing and the daily-loss halt, as pure functions of state and limits.

One source of limits: the profile (``RiskLimits``, the entry tiers, the time thresholds of the
exit signals). Today's entries and realized P&L are read from the database by the caller, so
they survive restarts and new cron processes. Daily P&L is computed from our own fills and marks.

Entries are long only (buy to open); ``check_risk`` refuses a short entry and says so.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_FLOOR, Decimal

from config.settings import EntryTier, Profile
from core.instruments import OrderSide, Rounding, Symbol, check_lot_multiple, round_to_tick, tick_size

HUNDRED = Decimal(100)


@dataclass(frozen=True)
class RiskState:
    """The portfolio and today's record, as the caller read them just now."""

    equity: Decimal
    cash: Decimal
    open_symbols: frozenset[Symbol]
    entries_today: int
    realized_pnl_today: Decimal
    unrealized_pnl: Decimal
    start_of_day_equity: Decimal
    halted: bool = False
    halt_reason: str | None = None
    minutes_to_close: float | None = None
    minutes_to_break: float | None = None

    @property
    def open_count(self) -> int:
        return len(self.open_symbols)

    @property
    def daily_pnl(self) -> Decimal:
        return self.realized_pnl_today + self.unrealized_pnl

    @property
    def daily_pnl_pct(self) -> Decimal:
        if self.start_of_day_equity <= 0:
            return Decimal(0)
        return self.daily_pnl / self.start_of_day_equity * HUNDRED


@dataclass(frozen=True)
class EntryProposal:
    symbol: Symbol
    side: OrderSide
    quantity: int
    entry: Decimal
    stop: Decimal
    target: Decimal
    tier: int
    board_lot: int


@dataclass(frozen=True)
class Noise:
    """How far the symbol normally moves, measured by the caller from recent one-minute bars.

    ``minute_sigma_pct``: standard deviation of one-minute returns in % (None: no bars, then only
    the tick rule applies). ``round_trip_cost``: fees of a buy and a sell plus the spread, per share.
    """

    minute_sigma_pct: float | None
    round_trip_cost: Decimal
    day: date


@dataclass(frozen=True)
class AcceptableLevels:
    """The nearest stop and target the noise floor accepts for an entry (on the tick grid)."""

    stop_at_most: Decimal
    target_at_least: Decimal
    floor_pct: Decimal          # the stop's minimum distance below the entry, in %
    noise_pct: Decimal | None   # the noise part of it (None: no bars to measure)

    def to_dict(self) -> dict:
        return {"stop_at_most": str(self.stop_at_most), "target_at_least": str(self.target_at_least),
                "stop_floor_pct": float(self.floor_pct.quantize(Decimal("0.01"))),
                "noise_pct": None if self.noise_pct is None else float(self.noise_pct.quantize(Decimal("0.01")))}


def acceptable_levels(symbol: Symbol, entry: Decimal, noise: Noise, profile: Profile, tier: EntryTier,
                      stop: Decimal | None = None) -> AcceptableLevels:
    """The stop furthest inside the noise floor and the least target for it (or for ``stop``, when wider).

    The stop sits at least ``noise_stop_multiple`` x sigma x sqrt(``noise_hold_minutes``) and
    ``min_stop_ticks`` ticks below the entry; the target clears the tier's reward:risk from that stop
    and ``min_target_cost_multiple`` x the round-trip costs.
    """
    limits = profile.risk
    phase2 = profile.ticks.hk_phase2_date
    tick = tick_size(symbol.market, entry, noise.day, phase2)
    noise_distance = None
    if noise.minute_sigma_pct is not None:
        scale = noise.minute_sigma_pct * math.sqrt(limits.noise_hold_minutes) * limits.noise_stop_multiple
        noise_distance = entry * Decimal(str(round(scale, 6))) / HUNDRED
    distance = max(noise_distance or Decimal(0), tick * limits.min_stop_ticks)
    stop_at_most = round_to_tick(symbol.market, entry - distance, noise.day, Rounding.DOWN, phase2)
    risk_stop = stop if stop is not None and stop < stop_at_most else stop_at_most
    target = max(entry + (entry - risk_stop) * tier.min_reward_risk,
                 entry + noise.round_trip_cost * limits.min_target_cost_multiple)
    target_at_least = round_to_tick(symbol.market, target, noise.day, Rounding.UP, phase2)
    stop_at_most = _on_grid(stop_at_most, symbol, noise.day, profile)
    target_at_least = _on_grid(target_at_least, symbol, noise.day, profile)
    return AcceptableLevels(
        stop_at_most=stop_at_most, target_at_least=target_at_least,
        floor_pct=(entry - stop_at_most) / entry * HUNDRED,
        noise_pct=None if noise_distance is None else noise_distance / entry * HUNDRED,
    )


def _on_grid(price: Decimal, symbol: Symbol, day: date, profile: Profile) -> Decimal:
    """Written with at least two decimals, or the tick's (294.00, not 294.0), as a quoted price reads."""
    tick = tick_size(symbol.market, price, day, profile.ticks.hk_phase2_date)
    return price.quantize(min(tick, Decimal("0.01")))


def _noise_reasons(p: "EntryProposal", levels: AcceptableLevels, noise: Noise, profile: Profile) -> list[str]:
    limits = profile.risk
    cur = profile.currency
    out = []
    if p.stop < p.entry and p.stop > levels.stop_at_most:
        pct = (p.entry - p.stop) / p.entry * HUNDRED
        why = (f"the symbol's normal movement over {limits.noise_hold_minutes:g} minutes is {levels.noise_pct:.2f}% "
               f"({limits.noise_stop_multiple:g} x {noise.minute_sigma_pct:.3f}%/min x sqrt({limits.noise_hold_minutes:g}))"
               if levels.noise_pct is not None and levels.noise_pct * p.entry / HUNDRED
               >= tick_size(p.symbol.market, p.entry, noise.day, profile.ticks.hk_phase2_date) * limits.min_stop_ticks
               else f"a stop must be at least {limits.min_stop_ticks} ticks below the entry")
        out.append(f"stop {p.stop} is {pct:.2f}% below the entry, inside the noise: {why}; the nearest acceptable "
                   f"stop is {levels.stop_at_most} (target at least {levels.target_at_least})")
    if p.target > p.entry and p.target < p.entry + noise.round_trip_cost * limits.min_target_cost_multiple:
        out.append(f"target {p.target} gains {cur} {p.target - p.entry:.4f} a share, under {limits.min_target_cost_multiple:g} x "
                   f"the round-trip costs ({cur} {noise.round_trip_cost:.4f} a share); the nearest acceptable target is "
                   f"{levels.target_at_least}")
    return out


@dataclass(frozen=True)
class RiskVerdict:
    approved: bool
    reasons: tuple[str, ...]
    warnings: tuple[str, ...]
    position_value: Decimal
    max_loss: Decimal
    reward_risk: Decimal | None
    suggested_quantity: int
    cap: Decimal
    levels: AcceptableLevels | None = None

    def to_dict(self) -> dict:
        return {
            **({"acceptable_levels": self.levels.to_dict()} if self.levels else {}),
            "approved": self.approved, "reasons": list(self.reasons), "warnings": list(self.warnings),
            "position_value": str(self.position_value.quantize(Decimal("0.01"))),
            "max_loss": str(self.max_loss.quantize(Decimal("0.01"))),
            "reward_risk": None if self.reward_risk is None else float(self.reward_risk),
            "suggested_quantity": self.suggested_quantity, "position_cap": str(self.cap),
        }


def position_cap(profile: Profile, tier: EntryTier, equity: Decimal) -> Decimal:
    """The most one entry may be worth: the tier's cap and the share of equity, whichever is less."""
    limits = profile.risk
    tier_cap = limits.tier3_position_value if tier.size_fraction < 1 else limits.max_position_value
    return min(tier_cap, equity * limits.max_position_pct_equity / HUNDRED)


def suggested_quantity(proposal: EntryProposal, profile: Profile, tier: EntryTier, equity: Decimal) -> int:
    """Whole board lots within the value cap and the per-trade risk budget; 0 when even one lot is too much."""
    lot = proposal.board_lot
    cap = position_cap(profile, tier, equity)
    by_value = int((cap / (proposal.entry * lot)).to_integral_value(ROUND_FLOOR)) * lot if proposal.entry > 0 else 0
    risk_per_share = abs(proposal.entry - proposal.stop)
    if risk_per_share > 0:
        risk_budget = equity * profile.risk.max_risk_per_trade_pct / HUNDRED
        by_risk = int((risk_budget / (risk_per_share * lot)).to_integral_value(ROUND_FLOOR)) * lot
    else:
        by_risk = by_value
    return max(0, min(by_value, by_risk))


# Long: every entry limit in one list, in the order its refusals are reported to the brain.
def check_risk(proposal: EntryProposal, state: RiskState, profile: Profile, noise: Noise | None = None) -> RiskVerdict:
    """Every limit of the profile; with ``noise`` also the noise floor of the stop and the target."""
    limits = profile.risk
    reasons: list[str] = []
    warnings: list[str] = []
    cur = profile.currency
    try:
        tier = profile.tier(proposal.tier)
    except KeyError as exc:
        tier = profile.entry.tiers[-1]
        reasons.append(str(exc).strip("'\""))
    entry, stop, target, qty = proposal.entry, proposal.stop, proposal.target, proposal.quantity
    value = entry * qty
    max_loss = abs(entry - stop) * qty
    cap = position_cap(profile, tier, state.equity)

    if state.halted:
        reasons.append(f"trading is halted for today: {state.halt_reason or 'no reason recorded'}")
    if proposal.side is not OrderSide.BUY:
        reasons.append("only long entries (buy) are allowed; short selling is not enabled")
    if proposal.symbol in state.open_symbols:
        reasons.append(f"{proposal.symbol} is already held: one position per symbol")
    if state.open_count >= limits.max_positions:
        reasons.append(f"{state.open_count} positions open: the maximum is {limits.max_positions}")
    if state.entries_today >= limits.max_entries_per_day:
        reasons.append(f"{state.entries_today} entries today: the maximum is {limits.max_entries_per_day}")
    reasons += _time_gate(state, profile)
    lot_problem = check_lot_multiple(qty, proposal.board_lot)
    if lot_problem:
        reasons.append(lot_problem)
    if stop >= entry:
        reasons.append(f"stop {stop} must be below the entry {entry} for a long position")
    elif (entry - stop) / entry * HUNDRED > limits.max_stop_distance_pct:
        pct = (entry - stop) / entry * HUNDRED
        reasons.append(f"stop {stop} is {pct:.2f}% below the entry: the limit is {limits.max_stop_distance_pct}%")
    reward_risk = None
    if target <= entry:
        reasons.append(f"target {target} must be above the entry {entry}")
    elif stop < entry:
        exact = (target - entry) / (entry - stop)
        # Shown rounded down: rounding 1.495 to 1.50 first would pass it under a 1.5 floor.
        reward_risk = exact.quantize(Decimal("0.01"), ROUND_FLOOR)
        if exact < tier.min_reward_risk:
            reasons.append(f"reward:risk {reward_risk} is below the tier {tier.tier} floor of {tier.min_reward_risk}")
    if value > cap:
        reasons.append(f"position value {cur} {value:,.2f} is above the cap of {cur} {cap:,.2f} (tier {tier.tier})")
    if qty > 0 and value < limits.min_position_value:
        reasons.append(f"position value {cur} {value:,.2f} is below the minimum of {cur} {limits.min_position_value:,.2f}")
    levels = None
    if noise is not None and entry > 0:
        levels = acceptable_levels(proposal.symbol, entry, noise, profile, tier, stop)
        reasons += _noise_reasons(proposal, levels, noise, profile)
        if (entry - levels.stop_at_most) / entry * HUNDRED > limits.max_stop_distance_pct:
            reasons.append(f"the nearest stop outside the noise ({levels.stop_at_most}, {levels.floor_pct:.2f}% below) is "
                           f"beyond the {limits.max_stop_distance_pct}% limit: this symbol moves too much to trade now")
    risk_budget = state.equity * limits.max_risk_per_trade_pct / HUNDRED
    if max_loss > risk_budget:
        reasons.append(f"max loss {cur} {max_loss:,.2f} is above {limits.max_risk_per_trade_pct}% of equity ({cur} {risk_budget:,.2f})")
    if value > state.cash:
        reasons.append(f"position value {cur} {value:,.2f} is above the available cash {cur} {state.cash:,.2f}")
    lot_value = entry * proposal.board_lot
    if lot_value > cap:
        reasons.append(f"one board lot ({proposal.board_lot} x {entry} = {cur} {lot_value:,.2f}) is above the cap of {cur} {cap:,.2f}; not buying")
    if state.daily_pnl_pct <= -limits.daily_loss_warn_pct:
        warnings.append(f"daily P&L is {state.daily_pnl_pct:.2f}% (warning at -{limits.daily_loss_warn_pct}%, halt at -{limits.daily_loss_halt_pct}%)")
    return RiskVerdict(
        approved=not reasons, reasons=tuple(reasons), warnings=tuple(warnings), position_value=value,
        max_loss=max_loss, reward_risk=reward_risk,
        suggested_quantity=suggested_quantity(proposal, profile, tier, state.equity), cap=cap, levels=levels,
    )


def _time_gate(state: RiskState, profile: Profile) -> list[str]:
    """No new entries once the time signals would already be MODERATE (near lunch or the close)."""
    out = []
    close_moderate = profile.signals.market_close_minutes.moderate
    break_moderate = profile.signals.lunch_break_minutes.moderate
    if state.minutes_to_close is None:
        out.append("the market is not in continuous trading now: no new entries")
    elif close_moderate is not None and state.minutes_to_close < close_moderate:
        # Whole minutes rounded down: 29.5 shown as "30 minutes (< 30)" would read as a wrong refusal.
        out.append(f"{int(state.minutes_to_close)} minutes to the close (< {close_moderate:g}): no new entries")
    if (not profile.monitor.hold_through_lunch and state.minutes_to_break is not None and break_moderate is not None
            and state.minutes_to_break < break_moderate):
        out.append(f"{int(state.minutes_to_break)} minutes to the lunch break (< {break_moderate:g}): no new entries")
    return out


class DailyLossAction(str, enum.Enum):
    NONE = "none"
    WARN = "warn"
    HALT = "halt"


def daily_loss_action(state: RiskState, profile: Profile) -> DailyLossAction:
    pct = state.daily_pnl_pct
    if pct <= -profile.risk.daily_loss_halt_pct:
        return DailyLossAction.HALT
    if pct <= -profile.risk.daily_loss_warn_pct:
        return DailyLossAction.WARN
    return DailyLossAction.NONE
