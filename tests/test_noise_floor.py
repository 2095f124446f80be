"""The noise floor of check_risk: no stop inside the symbol's normal movement, none within a few ticks,
no target that does not clear the round-trip costs; every refusal names the nearest acceptable levels.

Tencent at HKD 300 (tick 0.20), one-minute sigma 0.10%: over the 60-minute holding time of the default
profile the noise is 2.5 x 0.10% x sqrt(60) = 1.94%, so the nearest acceptable stop is 300 - 5.81 rounded
down to the tick grid: 294.00.
"""
from __future__ import annotations

import math
from datetime import date
from decimal import Decimal

from config.settings import Profile
from core.instruments import Market, OrderSide, Symbol
from core.risk import EntryProposal, Noise, RiskState, acceptable_levels, check_risk

D = Decimal
TENCENT = Symbol(Market.HK, "00700")
DAY = date(2026, 11, 23)
PROFILE = Profile(market=Market.HK, agent_id="intl_claude", risk={"max_position_value": 100000})
STATE = RiskState(equity=D(1_000_000), cash=D(1_000_000), open_symbols=frozenset(), entries_today=0,
                  realized_pnl_today=D(0), unrealized_pnl=D(0), start_of_day_equity=D(1_000_000),
                  minutes_to_close=300.0, minutes_to_break=120.0)
QUIET = Noise(minute_sigma_pct=0.10, round_trip_cost=D("0.90"), day=DAY)


def check(stop: str, target: str, noise: Noise = QUIET, entry: str = "300", symbol: Symbol = TENCENT):
    p = EntryProposal(symbol, OrderSide.BUY, 100, D(entry), D(stop), D(target), 2, 100)
    return check_risk(p, STATE, PROFILE, noise)


def test_the_nearest_acceptable_stop_is_the_noise_over_the_holding_time_on_the_tick_grid():
    levels = acceptable_levels(TENCENT, D(300), QUIET, PROFILE, PROFILE.tier(2))
    noise = 300 * 2.5 * 0.10 * math.sqrt(60) / 100
    assert abs(float(levels.noise_pct) - 2.5 * 0.10 * math.sqrt(60)) < 1e-6
    assert levels.stop_at_most == D("294.00") and D(300) - D(str(noise)) > D("294.00") > D("293.80")
    # The target clears reward:risk 1.5 from that stop: 300 + 1.5 x 6.00 = 309.00.
    assert levels.target_at_least == D("309.00")


def test_a_stop_inside_the_noise_is_refused_with_the_nearest_acceptable_levels():
    v = check("297.00", "306.00")   # 1% below: inside the 1.94% noise
    assert not v.approved
    [reason] = [r for r in v.reasons if "inside the noise" in r]
    assert "stop 297.00 is 1.00% below the entry" in reason
    assert "normal movement over 60 minutes is 1.94%" in reason
    assert "nearest acceptable stop is 294.00 (target at least 309.00)" in reason
    assert v.to_dict()["acceptable_levels"]["stop_at_most"] == "294.00"


def test_a_stop_at_the_nearest_acceptable_level_passes():
    v = check("294.00", "309.00")
    assert v.approved, v.reasons


def test_a_stop_closer_than_three_ticks_is_refused_even_on_a_calm_symbol():
    calm = Noise(minute_sigma_pct=0.001, round_trip_cost=D("0.01"), day=DAY)
    v = check("299.80", "301.00", calm)   # one tick (0.20) below
    assert not v.approved
    reason = next(r for r in v.reasons if "inside the noise" in r)
    assert "at least 3 ticks below the entry" in reason and "nearest acceptable stop is 299.40" in reason
    assert check("299.40", "301.00", calm).approved


def test_a_target_that_does_not_clear_the_round_trip_costs_three_times_is_refused():
    costly = Noise(minute_sigma_pct=0.001, round_trip_cost=D("1.50"), day=DAY)
    v = check("299.40", "301.00", costly)   # gains 1.00 a share; costs 1.50 a share
    assert not v.approved
    reason = next(r for r in v.reasons if "round-trip costs" in r)
    assert "target 301.00 gains HKD 1.0000 a share, under 3 x the round-trip costs (HKD 1.5000 a share)" in reason
    assert "nearest acceptable target is 304.60" in reason       # 300 + 3 x 1.50, up to the tick
    assert check("299.40", "304.60", costly).approved


def test_a_symbol_whose_noise_needs_a_stop_beyond_the_limit_is_refused_and_says_so():
    wild = Noise(minute_sigma_pct=0.40, round_trip_cost=D("0.90"), day=DAY)   # 7.7% over an hour
    v = check("285.00", "330.00", wild)
    assert not v.approved
    assert any("beyond the 5% limit: this symbol moves too much to trade now" in r for r in v.reasons)


def test_without_minute_bars_only_the_tick_rule_applies():
    unknown = Noise(minute_sigma_pct=None, round_trip_cost=D("0.90"), day=DAY)
    assert check("297.00", "306.00", unknown).approved
    assert acceptable_levels(TENCENT, D(300), unknown, PROFILE, PROFILE.tier(2)).noise_pct is None


def test_the_profile_sets_the_floor():
    wide = Profile(market=Market.HK, agent_id="intl_claude",
                   risk={"max_position_value": 100000, "noise_stop_multiple": 1, "noise_hold_minutes": 30})
    levels = acceptable_levels(TENCENT, D(300), QUIET, wide, wide.tier(2))
    assert levels.stop_at_most == D("298.20")   # 300 x 0.10% x sqrt(30) = 1.64 -> 298.36, down to 298.20
