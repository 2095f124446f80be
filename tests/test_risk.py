"""check_risk at every boundary, the daily-loss warn/halt, and the limits that live in the database.

Each rule is tested just inside and just outside its limit, with the default HK profile (the
numbers of SPEC section 6) unless a test says otherwise. The entries-per-day count and the halt
are read from the database, so a new process (cron starts one per cycle) sees them: the original
counted trades in memory and then blocked all afternoon trading under a long-running process.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import time, timedelta
from decimal import Decimal

import pytest

from config.settings import MonitorSettings, Profile, RiskLimits
from core.instruments import Market, OrderSide, PositionSide, Symbol
from core.risk import (
    DailyLossAction, EntryProposal, RiskState, check_risk, daily_loss_action, position_cap, suggested_quantity,
)
from tests.tool_harness import Tools, hk_profile, run_tools, sample_session

HK = Market.HK
TENCENT = Symbol(HK, "00700")
PROFILE = Profile(market=HK, agent_id="intl_claude")
D = Decimal


def state(**changes) -> RiskState:
    base = RiskState(equity=D(1_000_000), cash=D(1_000_000), open_symbols=frozenset(), entries_today=0,
                     realized_pnl_today=D(0), unrealized_pnl=D(0), start_of_day_equity=D(1_000_000),
                     minutes_to_close=300.0, minutes_to_break=120.0)
    return replace(base, **changes)


def proposal(entry="80", stop="78.4", target="83.2", quantity=100, tier=2, lot=100, side=OrderSide.BUY,
             symbol=TENCENT) -> EntryProposal:
    """Default: HKD 8,000 of a 100-share lot, stop 2% below, reward:risk 2.0."""
    return EntryProposal(symbol, side, quantity, D(entry), D(stop), D(target), tier, lot)


def verdict(p: EntryProposal | None = None, s: RiskState | None = None, profile: Profile = PROFILE):
    return check_risk(p or proposal(), s or state(), profile)


def refused(p=None, s=None, profile=PROFILE) -> str:
    v = verdict(p, s, profile)
    assert not v.approved, "expected a refusal"
    return "; ".join(v.reasons)


def others(n: int) -> frozenset[Symbol]:
    return frozenset(Symbol(HK, f"{9000 + i:05d}") for i in range(n))


def test_a_plain_entry_is_approved_with_its_numbers():
    v = verdict()
    assert v.approved and v.reasons == () and v.warnings == ()
    assert (v.position_value, v.max_loss, v.reward_risk, v.cap) == (D("8000"), D("160.0"), D("2.00"), D("10000"))
    assert v.suggested_quantity == 100


def test_max_open_positions():
    assert verdict(s=state(open_symbols=others(4))).approved
    assert "5 positions open: the maximum is 5" in refused(s=state(open_symbols=others(5)))


def test_one_position_per_symbol():
    assert "HK.00700 is already held: one position per symbol" in refused(s=state(open_symbols=frozenset({TENCENT})))


@pytest.mark.parametrize("tier, cap", [(1, "10000"), (2, "10000"), (3, "5000")])
def test_value_cap_per_tier(tier, cap):
    cap = D(cap)
    entry = cap / 100                                   # one lot of 100 worth exactly the cap
    stop, target = entry * D("0.98"), entry * D("1.05")
    assert verdict(proposal(str(entry), str(stop), str(target), tier=tier)).approved
    over = entry + D("0.01")
    reason = refused(proposal(str(over), str(stop), str(over * D("1.05")), tier=tier))
    assert f"position value HKD {over * 100:,.2f} is above the cap of HKD {cap:,.2f} (tier {tier})" in reason


def test_cap_is_twenty_percent_of_equity_when_that_is_less():
    small = state(equity=D(40_000), cash=D(40_000), start_of_day_equity=D(40_000))     # 20% = 8,000
    assert verdict(proposal("80"), small).approved
    reason = refused(proposal("80.05", "78.45", "83.25"), small)
    assert "is above the cap of HKD 8,000.00" in reason
    assert position_cap(PROFILE, PROFILE.tier(2), D(40_000)) == D(8000)


def test_minimum_position_value():
    assert verdict(proposal("20", "19.6", "20.8")).approved                             # HKD 2,000
    assert "position value HKD 1,999.00 is below the minimum of HKD 2,000.00" in refused(proposal("19.99", "19.6", "20.8"))


def test_risk_per_trade_is_one_percent_of_equity():
    # With the 5% stop and 20% cap the 1% can never bind; widen the stop limit to reach it.
    profile = Profile(market=HK, agent_id="t", risk=RiskLimits(max_stop_distance_pct=D(10)))
    small = state(equity=D(40_000), cash=D(40_000), start_of_day_equity=D(40_000))     # 1% = 400, cap 8,000
    assert verdict(proposal("80", "76", "90"), small, profile).approved                # loss 400
    reason = refused(proposal("80", "75.9", "90"), small, profile)                    # loss 410
    assert "max loss HKD 410.00 is above 1% of equity (HKD 400.00)" in reason


def test_stop_within_five_percent_and_below_the_entry():
    assert verdict(proposal("100", "95", "110")).approved                                # exactly 5%
    assert "stop 94.9 is 5.10% below the entry: the limit is 5%" in refused(proposal("100", "94.9", "110"))
    assert "stop 100 must be below the entry 100 for a long position" in refused(proposal("100", "100", "110"))
    assert "stop 101 must be below the entry 100" in refused(proposal("100", "101", "110"))


@pytest.mark.parametrize("tier, entry, stop, ok_target, low_target, floor", [
    (1, "100", "98", "104", "103.99", "2.0"),       # full size, floor 2.0
    (2, "100", "98", "103", "102.99", "1.5"),       # full size, floor 1.5
    (3, "50", "49", "51.5", "51.49", "1.5"),        # half size (HKD 5,000), floor 1.5
])
def test_reward_risk_floor_per_tier(tier, entry, stop, ok_target, low_target, floor):
    assert verdict(proposal(entry, stop, ok_target, tier=tier)).approved
    reason = refused(proposal(entry, stop, low_target, tier=tier))
    assert f"is below the tier {tier} floor of {floor}" in reason


def test_reward_risk_is_compared_before_it_is_rounded():
    # 2.99 / 2 = 1.495: rounded first it read 1.50 and passed the 1.5 floor of tier 2.
    assert "reward:risk 1.49 is below the tier 2 floor of 1.5" in refused(proposal("100", "98", "102.99"))


def test_target_must_be_above_the_entry():
    assert "target 79 must be above the entry 80" in refused(proposal("80", "78.4", "79"))


def test_entries_per_day():
    assert verdict(s=state(entries_today=24)).approved
    assert "25 entries today: the maximum is 25" in refused(s=state(entries_today=25))


@pytest.mark.parametrize("to_close, to_break, hold_lunch, expected", [
    (300, 30, False, None),
    (300, 29.5, False, "29 minutes to the lunch break (< 30): no new entries"),
    (300, 10, True, None),
    (30, None, False, None),
    (29.5, None, False, "29 minutes to the close (< 30): no new entries"),
    (None, None, False, "the market is not in continuous trading now: no new entries"),
])
def test_time_gate_near_lunch_and_close(to_close, to_break, hold_lunch, expected):
    profile = Profile(market=HK, agent_id="t", monitor=MonitorSettings(hold_through_lunch=hold_lunch))
    v = verdict(s=state(minutes_to_close=to_close, minutes_to_break=to_break), profile=profile)
    if expected is None:
        assert v.approved, v.reasons
    else:
        assert expected in "; ".join(v.reasons)


def test_halted_and_short_entries_are_refused():
    assert "trading is halted for today: daily loss 2.10% reached" in refused(
        s=state(halted=True, halt_reason="daily loss 2.10% reached the -2% limit"))
    assert "only long entries (buy) are allowed" in refused(proposal(side=OrderSide.SELL))


def test_odd_lot_and_unknown_tier():
    assert "quantity 150 is not a multiple of the board lot 100" in refused(proposal(quantity=150))
    assert "no entry tier 4 in the profile" in refused(proposal(tier=4))


def test_suggested_quantity_is_whole_lots_within_cap_and_risk():
    p = proposal("33.15", "32.5", "34.8", quantity=100)
    assert suggested_quantity(p, PROFILE, PROFILE.tier(2), D(1_000_000)) == 300         # 3 x 3,315 <= 10,000
    assert suggested_quantity(p, PROFILE, PROFILE.tier(3), D(1_000_000)) == 100         # 5,000 cap
    lot_2000 = proposal("15.84", "15.5", "16.5", quantity=2000, lot=2000)             # PICC: HKD 31,680 a lot
    assert suggested_quantity(lot_2000, PROFILE, PROFILE.tier(2), D(1_000_000)) == 0
    assert "one board lot (2000 x 15.84 = HKD 31,680.00) is above the cap of HKD 10,000.00; not buying" in refused(lot_2000)


# --- daily loss -------------------------------------------------------------------------------------
@pytest.mark.parametrize("pnl, action", [
    ("-14999", DailyLossAction.NONE), ("-15000", DailyLossAction.WARN), ("-19999", DailyLossAction.WARN),
    ("-20000", DailyLossAction.HALT), ("5000", DailyLossAction.NONE)])
def test_daily_loss_warns_at_one_and_a_half_and_halts_at_two_percent(pnl, action):
    # Realized and unrealized both count, against the start-of-day equity.
    s = state(realized_pnl_today=D(pnl) / 2, unrealized_pnl=D(pnl) / 2)
    assert daily_loss_action(s, PROFILE) is action
    v = verdict(s=s)
    assert bool(v.warnings) == (action is not DailyLossAction.NONE)


# --- with the database --------------------------------------------------------------------------------
async def _closed_position(t: Tools, symbol: str, pnl: Decimal, origin: str = "agent", day_offset: int = 0) -> None:
    """A position of 100 @ 1,000 opened and closed today (or ``day_offset`` days ago) with ``pnl``."""
    from core.instruments import parse_symbol

    now = t.clock.now() - timedelta(days=day_offset)
    day = t.calendar.trading_day(t.clock.now()) - timedelta(days=day_offset)
    position = await t.store.open_position(
        symbol=parse_symbol(symbol), side=PositionSide.LONG, quantity=100, entry_price=D("1000"), entry_time=now,
        trading_day=day, stop_price=D("980"), target_price=D("1050"), origin=origin)
    await t.store.close_position(position.position_id, exit_price=D("1000") + pnl / 100, exit_time=now,
                                 exit_reason="test", exit_type="test", exit_fees=D(0))


async def _check(t: Tools, symbol: str) -> dict:
    quote = await t.ok("get_quote", {"symbol": symbol})
    ask = D(quote["ask"])
    # The stop 4% below sits outside the noise floor of the synthetic symbols (about 2%).
    return await t.ok("check_risk", {"symbol": symbol, "quantity": quote["lot_size"], "entry": str(ask),
                                     "stop": str(ask * D("0.96")), "target": str(ask * D("1.10")), "tier": 2})


def test_entries_per_day_are_counted_in_the_database_across_processes(database_url, tmp_path):
    profile = hk_profile({"CATALYST__RISK__MAX_ENTRIES_PER_DAY": "3"})

    async def morning(t: Tools):
        await _closed_position(t, "HK.01001", D("10"))
        await _closed_position(t, "HK.01002", D("-10"))
        await _closed_position(t, "HK.01003", D("5"), origin="adopted")      # adopted: not an entry of ours
        await _closed_position(t, "HK.01004", D("5"), day_offset=1)          # yesterday
        return await t.ok("get_portfolio")

    portfolio = run_tools(database_url, tmp_path, morning, profile=profile)
    assert portfolio["entries_today"] == 2

    async def next_process(t: Tools):                                       # a new store, pool and executor
        symbol = await _pick(t)
        first = await _check(t, symbol)
        await _closed_position(t, "HK.01005", D("1"))
        second = await _check(t, symbol)
        return first, second

    first, second = run_tools(database_url, tmp_path, next_process, profile=profile, cycle_id="hk_20220615_131500_def456")
    assert first["approved"] is True, first
    assert second["approved"] is False and "3 entries today: the maximum is 3" in second["reasons"]


async def _pick(t: Tools) -> str:
    snaps = await t.exchange.snapshots(t.market.scan_list("ALL"))
    for symbol, snap in sorted(snaps.items()):
        if D(2000) < snap.quote.ask * snap.lot_size <= D(5000):
            return str(symbol)
    raise AssertionError("no small-lot symbol in the sample universe")


@pytest.mark.parametrize("hhmm, reason", [("11:35", "25 minutes to the lunch break (< 30)"),
                                          ("15:35", "25 minutes to the close (< 30)"),
                                          ("12:30", "the market is not in continuous trading now")])
def test_time_gate_on_the_real_calendar(database_url, tmp_path, hhmm, reason):
    session = sample_session()
    from data.calendar import MarketCalendar

    h, m = map(int, hhmm.split(":"))
    at = MarketCalendar(HK).at_local(session.day, time(h, m))

    async def scenario(t: Tools):
        return await _check(t, await _pick(t))

    result = run_tools(database_url, tmp_path, scenario, at=at)
    assert result["approved"] is False and any(reason in r for r in result["reasons"]), result


def test_daily_loss_halt_stops_entries_and_closes_everything(database_url, tmp_path):
    async def scenario(t: Tools):
        symbol = await _pick(t)
        quote = await t.ok("get_quote", {"symbol": symbol})
        ask = D(quote["ask"])
        from core.instruments import Rounding, round_to_tick

        day = t.calendar.trading_day(t.clock.now())
        stop = round_to_tick(HK, ask * D("0.96"), day, Rounding.UP)     # outside the noise floor (about 2%)
        target = round_to_tick(HK, ask * D("1.10"), day, Rounding.UP)
        entry = await t.ok("execute_trade", {"symbol": symbol, "quantity": quote["lot_size"], "stop_loss": str(stop),
                                             "take_profit": str(target), "tier": 2, "reason": "test entry"})
        assert entry["status"] == "filled"

        await _closed_position(t, "HK.01020", D("-15500"))                     # -1.55%: warn once
        assert await t.executor.check_daily_loss() is DailyLossAction.WARN
        assert await t.executor.check_daily_loss() is DailyLossAction.WARN
        await _closed_position(t, "HK.01021", D("-5000"))                      # -2.05% with the open one's mark
        assert await t.executor.check_daily_loss() is DailyLossAction.HALT

        halted = await t.ok("get_portfolio")
        again = await t.ok("check_risk", {"symbol": symbol, "quantity": quote["lot_size"], "entry": str(ask),
                                          "stop": str(stop), "target": str(target), "tier": 2})
        return halted, again, await t.messages(), await t.rows("SELECT * FROM positions WHERE status='open'")

    halted, again, msgs, still_open = run_tools(database_url, tmp_path, scenario)
    assert halted["halted"] is True and "reached the -2% limit" in halted["halt_reason"]
    assert halted["positions"] == [] and still_open == []
    assert again["approved"] is False and any("trading is halted for today" in r for r in again["reasons"])
    kinds = [(m["data"]["event"], m["priority"]) for m in msgs]
    assert kinds.count(("RISK_WARNING", "high")) == 1
    assert kinds.count(("RISK_HALT", "urgent")) == 1
    assert ("EXIT", "high") in kinds
