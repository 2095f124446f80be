"""The exit-policy lab of ``--replay --compare``: re-exits on hand-made steps, the figures, the regret."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from config.settings import Profile
from data.calendar import MarketCalendar
from core.instruments import Market, Symbol
from core.policy_lab import (
    EntryFill, Outcome, Steps, barrier_levels, index_by_entry, policy_row, re_exit, regret_by_reason, time_exit_after,
)

D = Decimal
HK = MarketCalendar(Market.HK)
PROFILE = Profile(market=Market.HK, agent_id="intl_claude")
TENCENT = Symbol(Market.HK, "00700")
SESSION = HK.session(date(2026, 11, 23))


def steps_from(start: datetime, prices: list[str]) -> Steps:
    """One step a minute; the bid one tick (0.20) under the last price."""
    times = [start + timedelta(minutes=i) for i in range(len(prices))]
    last = [D(p) for p in prices]
    bids = [p - D("0.2") for p in last]
    asks = [p + D("0.2") for p in last]
    return Steps(times, last, bids, asks, bids)


def entry_at(t: datetime, price: str = "300") -> EntryFill:
    return EntryFill(TENCENT, t, D(price), 100, D("33.06"))


def test_the_time_exit_is_the_lunch_rule_in_the_morning_and_the_close_rule_after_lunch():
    morning = SESSION.open + timedelta(minutes=15)
    assert HK.local(time_exit_after(SESSION, morning, PROFILE)).strftime("%H:%M") == "11:50"
    afternoon = SESSION.break_end + timedelta(minutes=15)
    assert HK.local(time_exit_after(SESSION, afternoon, PROFILE)).strftime("%H:%M") == "15:50"
    through = Profile(market=Market.HK, agent_id="intl_claude", monitor={"hold_through_lunch": True})
    assert HK.local(time_exit_after(SESSION, morning, through)).strftime("%H:%M") == "15:50"
    half_day = HK.session(date(2026, 12, 24))
    assert HK.local(time_exit_after(half_day, half_day.open + timedelta(minutes=15), PROFILE)).strftime("%H:%M") == "11:50"


def test_a_stop_sells_at_the_bid_of_the_step_that_trades_through_it_even_after_a_gap():
    start = SESSION.open + timedelta(minutes=15)
    steps = steps_from(start, ["300", "299", "292", "310"])
    x = re_exit(entry_at(start), steps, start + timedelta(hours=2), PROFILE, stop=D("295"), target=D("330"))
    assert (x.reason, x.price, x.time) == ("stop", D("291.8"), start + timedelta(minutes=2))
    # Fees: the entry's plus the sell's (HK: stamp duty rounded up to the dollar, levies, commission minimum).
    assert x.net_pnl == (D("291.8") - D("300")) * 100 - D("33.06") - x.exit_fees and x.exit_fees > D("30")


def test_a_target_fills_when_the_bid_reaches_it_and_otherwise_the_time_exit_sells():
    start = SESSION.open + timedelta(minutes=15)
    steps = steps_from(start, ["300", "305", "306.2", "299"])
    hit = re_exit(entry_at(start), steps, start + timedelta(hours=2), PROFILE, stop=D("290"), target=D("306"))
    assert (hit.reason, hit.price) == ("target", D("306.0"))
    held = re_exit(entry_at(start), steps, start + timedelta(minutes=2, seconds=30), PROFILE)
    assert (held.reason, held.price, held.time) == ("time_exit", D("298.8"), start + timedelta(minutes=3))


def test_the_backstop_levels_are_the_profiles_percentages_on_the_tick_grid():
    assert barrier_levels(D("300"), TENCENT, SESSION.day, PROFILE) == (D("285.0"), D("330.0"))
    assert barrier_levels(D("301.4"), TENCENT, SESSION.day, PROFILE) == (D("286.2"), D("331.6"))


def test_the_policy_row_on_two_trades():
    row = policy_row([Outcome("HK.00700", "t1", 200.0, 2.0, "take_profit"),
                      Outcome("HK.00005", "t2", -50.0, -1.0, "stop_loss")])
    assert row == {"trades": 2, "mean_net_pct": 0.5, "median_net_pct": 0.5, "win_rate": 0.5, "payoff": 2.0,
                   "net_pnl": 150.0, "worst_net_pct": -1.0}
    assert policy_row([])["trades"] == 0


def test_regret_on_a_hand_made_two_trade_case():
    """A stop_loss that would have recovered by the time exit and a trailing stop that saved money."""
    actual = [Outcome("HK.00700", "10:00", -150.0, -1.5, "stop_loss"),
              Outcome("HK.00005", "10:00", 80.0, 0.8, "trailing_stop")]
    held = index_by_entry([Outcome("HK.00700", "10:00", 50.0, 0.5, "time_exit"),
                           Outcome("HK.00005", "10:00", -20.0, -0.2, "time_exit")])
    regret = regret_by_reason(actual, held)
    assert regret["stop_loss"] == {"trades": 1, "mean_net_pct": -1.5, "held_mean_net_pct": 0.5, "regret_pct": 2.0,
                                   "regret_pnl": 200.0}
    assert regret["trailing_stop"]["regret_pct"] == -1.0 and regret["trailing_stop"]["regret_pnl"] == -100.0


def test_a_sale_on_thin_minutes_takes_each_steps_fillable_shares_like_the_paper_exchange():
    """A re-exit that sold everything at one step on a thin minute beat the monitor, whose orders the
    paper exchange fills only up to its participation cap: the comparison was not on the same terms."""
    start = SESSION.open + timedelta(minutes=15)
    thin = steps_from(start, ["300", "300", "299", "298", "297"])
    thin = Steps(thin.times, thin.prices, thin.bids, thin.asks, thin.market_sells, fillable=[100, 100, 0, 100, 100])
    entry = EntryFill(TENCENT, start, D("300"), 300, D("33.06"))
    x = re_exit(entry, thin, start + timedelta(seconds=30), PROFILE)
    # 100 at 299.8 (minute 1), none at minute 2, 100 at 297.8 (minute 3), 100 at 296.8 (minute 4)
    assert (x.reason, x.time) == ("time_exit", start + timedelta(minutes=4))
    assert x.proceeds == D("29980") + D("29780") + D("29680") and x.price == x.proceeds / 300
    cut_short = Steps(thin.times[:3], thin.prices[:3], thin.bids[:3], thin.asks[:3], thin.market_sells[:3],
                      fillable=[100, 100, 0])
    end = re_exit(entry, cut_short, start + timedelta(seconds=30), PROFILE)
    assert end.proceeds == D("29980") + 200 * D("298.8"), "what the tape's end leaves is sold at its last price"


def test_a_sale_over_several_steps_pays_each_executions_fees_like_the_paper_exchange():
    """The paper exchange charges stamp duty (rounded up to the dollar) and the levies on every execution
    of an order, the commission minimum once. A re-exit charged them once on the whole sale, which made
    a walk over thin minutes look cheaper under `close` than the same walk of the monitor's order."""
    from brokers.fees import hk_fees

    start = SESSION.open + timedelta(minutes=15)
    cheap = steps_from(start, ["1.3", "1.3", "1.3", "1.3"])  # bid 1.10: HKD 1,100 an execution
    thin = Steps(cheap.times, cheap.prices, cheap.bids, cheap.asks, cheap.market_sells, fillable=[1000, 1000, 1000, 1000])
    x = re_exit(EntryFill(TENCENT, start, D("1.31"), 3000, D("3")), thin, start + timedelta(seconds=30), PROFILE)
    sold = [x.proceeds / 3] * 3   # three executions of 1,000 shares at the same price
    assert x.proceeds == 3 * 1000 * cheap.market_sells[1]
    each = sum((hk_fees(v, PROFILE.fees_hk, order_value_before=sum(sold[:k], D(0))).total for k, v in enumerate(sold)), D(0))
    assert x.exit_fees == each
    assert x.exit_fees > hk_fees(x.proceeds, PROFILE.fees_hk).total, "three roundings up of the stamp duty, not one"
