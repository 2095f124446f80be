"""Exit signals (SPEC section 7): every row at its boundaries, the decision rules, the session gate."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import Levels, SignalThresholds
from data.calendar import MarketCalendar
from core.instruments import Market, PositionSide
from signals import (
    ExitAction,
    ExitReason,
    ExitTechnicals,
    PositionView,
    Signal,
    SignalName,
    Strength,
    decide,
    evaluate,
    minutes_held,
    pnl_pct,
    price_signals,
    time_signals,
)

PROJECT = Path(__file__).resolve().parent.parent
HK = MarketCalendar(Market.HK)
US = MarketCalendar(Market.US)
T = SignalThresholds()
S, M, W = Strength.STRONG, Strength.MODERATE, Strength.WEAK
DAY = "2026-11-23"  # a normal Monday in both markets


def hk(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=HK.tz)


def us(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=US.tz)


# 10:30 HKT: 90 min to the lunch break, 270 trading minutes to the close, 5 minutes held.
QUIET_NOW = hk(f"{DAY} 10:30")
QUIET_ENTRY = hk(f"{DAY} 10:25")


def position(entry: str = "100", side: PositionSide = PositionSide.LONG, entry_time: datetime = QUIET_ENTRY,
             stop: str | None = None, target: str | None = None, high: str | None = None,
             entry_volume_rate: float | None = None) -> PositionView:
    return PositionView(
        symbol="HK.00700", side=side, quantity=100, entry_price=Decimal(entry), entry_time=entry_time,
        stop_price=Decimal(stop) if stop else None, target_price=Decimal(target) if target else None,
        high_watermark=Decimal(high) if high else Decimal(entry), entry_volume_rate=entry_volume_rate,
    )


def run(pos: PositionView, price: str, now: datetime = QUIET_NOW, technicals: ExitTechnicals | None = None,
        calendar: MarketCalendar = HK, hold_through_lunch: bool = False, thresholds: SignalThresholds = T):
    return evaluate(pos, Decimal(price), now, calendar.session_at(now), technicals, thresholds, hold_through_lunch)


def strength_of(signals: list[Signal], name: SignalName) -> Strength | None:
    matches = [s.strength for s in signals if s.name is name]
    assert len(matches) <= 1, f"{name} fired twice: {signals}"
    return matches[0] if matches else None


def sig(name: SignalName, strength: Strength) -> Signal:
    return Signal(name, strength, 0.0, 0.0, "test")


# --- stop_loss --------------------------------------------------------------------------------------
@pytest.mark.parametrize("price, expected", [
    ("99.01", None),        # -0.99 %
    ("99", W),              # -1 %: at WEAK
    ("98.01", W),           # -1.99 %
    ("98", M),              # -2 %: at MODERATE
    ("97.01", M),           # -2.99 %
    ("97", S),              # -3 %: at STRONG
    ("96.99", S),           # just past
])
def test_stop_loss_pnl_levels(price, expected):
    assert strength_of(run(position(), price), SignalName.STOP_LOSS) is expected


@pytest.mark.parametrize("price, expected", [("99.51", None), ("99.5", S), ("99.49", S)])
def test_stop_loss_at_the_position_stop_is_strong(price, expected):
    signals = run(position(stop="99.5"), price)
    assert strength_of(signals, SignalName.STOP_LOSS) is expected


def test_stop_loss_by_stop_price_names_the_stop():
    [signal] = [s for s in run(position(stop="99.5"), "99.4") if s.name is SignalName.STOP_LOSS]
    assert "stop 99.50" in signal.detail and signal.threshold == 99.5


# --- take_profit ------------------------------------------------------------------------------------
@pytest.mark.parametrize("price, expected", [
    ("102.99", None), ("103", W), ("104.99", W), ("105", M), ("107.99", M), ("108", S), ("108.01", S),
])
def test_take_profit_pnl_levels(price, expected):
    pos = position(high=price)  # the high is the current price: no give-back
    assert strength_of(run(pos, price), SignalName.TAKE_PROFIT) is expected


@pytest.mark.parametrize("price, expected", [("101.99", None), ("102", S), ("102.01", S)])
def test_take_profit_at_the_position_target_is_strong(price, expected):
    pos = position(target="102", high=price)
    assert strength_of(run(pos, price), SignalName.TAKE_PROFIT) is expected


# --- trailing_stop ----------------------------------------------------------------------------------
@pytest.mark.parametrize("high, price, expected", [
    ("103", "100.95", None),   # gave back 1.99 %
    ("103", "100.94", M),      # 2 %: at MODERATE
    ("103", "99.92", M),       # 2.99 %
    ("103", "99.91", S),       # 3 %: at STRONG
    ("103", "99.90", S),
    ("102.99", "99.00", None),  # the high never reached +3 %: not armed
    ("103", "104", None),       # a new high: no give-back
])
def test_trailing_stop_levels(high, price, expected):
    assert strength_of(run(position(high=high), price), SignalName.TRAILING_STOP) is expected


def test_trailing_stop_arms_on_the_current_price_too():
    # Watermark not yet updated by the monitor, but the price itself is +3 %: armed, no give-back yet.
    assert strength_of(run(position(high="100"), "103"), SignalName.TRAILING_STOP) is None


# --- rsi_overbought ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rsi, expected", [
    (69.99, None), (70.0, W), (74.99, W), (75.0, M), (84.99, M), (85.0, S), (88.0, S),
])
def test_rsi_overbought_levels(rsi, expected):
    signals = run(position(), "100", technicals=ExitTechnicals(rsi=rsi))
    assert strength_of(signals, SignalName.RSI_OVERBOUGHT) is expected


# --- volume_dying -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate, expected", [
    (600.0, None),   # 60 %: not below
    (599.0, W),
    (400.0, W),      # 40 %: not below MODERATE
    (399.0, M),
    (250.0, M),      # 25 %: not below STRONG
    (249.0, S),
])
def test_volume_dying_levels(rate, expected):
    pos = position(entry_volume_rate=1000.0)
    signals = run(pos, "100", technicals=ExitTechnicals(volume_rate=rate))
    assert strength_of(signals, SignalName.VOLUME_DYING) is expected


@pytest.mark.parametrize("entry_rate", [None, 0.0])
def test_volume_dying_needs_an_entry_rate(entry_rate):
    pos = position(entry_volume_rate=entry_rate)
    assert strength_of(run(pos, "100", technicals=ExitTechnicals(volume_rate=1.0)), SignalName.VOLUME_DYING) is None


# --- market_close -----------------------------------------------------------------------------------
@pytest.mark.parametrize("local, expected", [
    ("15:00:00", None),   # 60 min: not below
    ("15:00:01", W),
    ("15:30:00", W),      # 30 min: not below MODERATE
    ("15:30:01", M),
    ("15:50:00", M),      # 10 min: not below STRONG (the original forced every exit here)
    ("15:50:01", S),
    ("15:59:59", S),
])
def test_market_close_levels(local, expected):
    now = hk(f"{DAY} {local}")
    signals = run(position(entry_time=hk(f"{DAY} 14:50")), "100", now=now)
    assert strength_of(signals, SignalName.MARKET_CLOSE) is expected


def test_market_close_counts_trading_minutes_not_the_lunch_hour():
    # 11:00 HKT: 60 min to lunch + 180 afternoon minutes = 240 to the close; nothing.
    assert strength_of(run(position(), "100", now=hk(f"{DAY} 11:00")), SignalName.MARKET_CLOSE) is None


# --- lunch_break ------------------------------------------------------------------------------------
@pytest.mark.parametrize("local, expected", [
    ("11:30:00", None), ("11:30:01", M), ("11:50:00", M), ("11:50:01", S), ("11:52:00", S), ("11:59:59", S),
])
def test_lunch_break_levels(local, expected):
    signals = run(position(entry_time=hk(f"{DAY} 11:20")), "100.5", now=hk(f"{DAY} {local}"))
    assert strength_of(signals, SignalName.LUNCH_BREAK) is expected


def test_lunch_at_11_52_hkt_exits_for_the_lunch_break():
    signals = run(position(entry_time=hk(f"{DAY} 11:20")), "100.5", now=hk(f"{DAY} 11:52"))
    decision = decide(signals, T)
    assert [str(s) for s in signals] == ["lunch_break STRONG"]
    assert decision.action is ExitAction.EXIT and decision.exit_reason is ExitReason.LUNCH_BREAK


def test_lunch_break_silent_when_the_profile_holds_through_lunch():
    signals = run(position(entry_time=hk(f"{DAY} 11:20")), "100.5", now=hk(f"{DAY} 11:52"), hold_through_lunch=True)
    assert signals == []


def test_no_lunch_signal_in_the_us():
    signals = run(position(entry_time=us(f"{DAY} 11:20")), "100.5", now=us(f"{DAY} 11:52"), calendar=US)
    assert strength_of(signals, SignalName.LUNCH_BREAK) is None


# --- time_stop --------------------------------------------------------------------------------------
@pytest.mark.parametrize("local, expected", [
    ("11:00:00", None),   # 60 min held: not above
    ("11:00:01", W),
    ("11:30:00", W),      # 90 min
    ("11:30:01", M),
    ("12:00:00", M),      # 120 min
    ("12:00:01", S),
    ("12:05:00", S),      # flat for 125 minutes
])
def test_time_stop_levels(local, expected):
    pos = position(entry_time=us(f"{DAY} 10:00"))
    signals = run(pos, "100.5", now=us(f"{DAY} {local}"), calendar=US)
    assert strength_of(signals, SignalName.TIME_STOP) is expected


@pytest.mark.parametrize("price, fires", [("100.99", True), ("101", False), ("99.01", True), ("99", False)])
def test_time_stop_only_when_flat(price, fires):
    pos = position(entry_time=us(f"{DAY} 10:00"))
    signals = run(pos, price, now=us(f"{DAY} 12:05"), calendar=US)
    assert (strength_of(signals, SignalName.TIME_STOP) is S) is fires


def test_time_stop_does_not_count_the_lunch_hour():
    # Entered 11:00 HKT, held through lunch, 13:31 now: 151 wall minutes but 91 trading minutes.
    pos = position(entry_time=hk(f"{DAY} 11:00"))
    signals = run(pos, "100.2", now=hk(f"{DAY} 13:31"), hold_through_lunch=True)
    assert strength_of(signals, SignalName.TIME_STOP) is M
    assert minutes_held(pos.entry_time, hk(f"{DAY} 13:31"), HK.session_at(hk(f"{DAY} 13:31"))) == 91


# --- below_vwap / below_ema9 ------------------------------------------------------------------------
@pytest.mark.parametrize("field, name", [("vwap", SignalName.BELOW_VWAP), ("ema9", SignalName.BELOW_EMA9)])
@pytest.mark.parametrize("price, expected", [
    ("100.01", None), ("100", None),   # above or on the line
    ("99.99", W),                      # below
    ("98.01", W),                      # 1.99 % below
    ("98", M),                         # 2 %: at MODERATE
    ("97", M),
])
def test_below_line_levels(field, name, price, expected):
    technicals = ExitTechnicals(**{field: 100.0})
    assert strength_of(run(position(), price, technicals=technicals), name) is expected


# --- macd_bearish_cross -----------------------------------------------------------------------------
@pytest.mark.parametrize("macd, signal_line, prev, prev_signal, expected", [
    (0.50, 0.40, 0.60, 0.45, None),    # above its signal line
    (0.40, 0.40, 0.50, 0.40, None),    # on it: not under
    (0.30, 0.40, 0.50, 0.45, M),       # crossed under while above zero
    (0.30, 0.40, 0.35, 0.40, W),       # already under: no fresh cross
    (-0.30, -0.20, -0.10, -0.15, W),   # crossed under, but below zero
    (0.30, 0.40, None, None, W),       # no previous values: only "under"
])
def test_macd_bearish_cross(macd, signal_line, prev, prev_signal, expected):
    technicals = ExitTechnicals(macd=macd, macd_signal=signal_line, macd_prev=prev, macd_signal_prev=prev_signal)
    assert strength_of(run(position(), "100", technicals=technicals), SignalName.MACD_BEARISH_CROSS) is expected


# --- missing data -----------------------------------------------------------------------------------
def test_missing_technicals_fire_nothing_and_never_crash():
    pos = position(entry_volume_rate=1000.0)
    assert run(pos, "100", technicals=None) == []
    assert run(pos, "100", technicals=ExitTechnicals()) == []
    assert run(pos, "100", technicals=ExitTechnicals(macd=0.1)) == []  # MACD without its signal line


def test_nan_indicators_count_as_missing():
    nan = float("nan")
    technicals = ExitTechnicals(rsi=nan, macd=nan, macd_signal=0.1, ema9=nan, vwap=float("inf"), volume_rate=nan)
    assert technicals.rsi is None and technicals.vwap is None
    assert run(position(entry_volume_rate=1000.0), "100", technicals=technicals) == []
    assert run(position(entry_volume_rate=nan), "100", technicals=ExitTechnicals(volume_rate=1.0)) == []


# --- short positions --------------------------------------------------------------------------------
def test_short_pnl_is_mirrored():
    short = position(side=PositionSide.SHORT)
    assert pnl_pct(short, Decimal("103")) == Decimal("-3")
    assert strength_of(run(short, "103"), SignalName.STOP_LOSS) is S
    assert strength_of(run(short, "102.99"), SignalName.STOP_LOSS) is M
    assert strength_of(run(short, "97", technicals=None), SignalName.TAKE_PROFIT) is W
    assert strength_of(run(short, "97"), SignalName.STOP_LOSS) is None


def test_short_stop_and_target_prices():
    short = position(side=PositionSide.SHORT, stop="101.5", target="96")
    assert strength_of(run(short, "101.5"), SignalName.STOP_LOSS) is S
    assert strength_of(run(short, "101.49"), SignalName.STOP_LOSS) is W
    assert strength_of(run(short, "96"), SignalName.TAKE_PROFIT) is S


def test_short_trailing_stop_uses_the_low_watermark():
    short = position(side=PositionSide.SHORT, high="97")   # best price was 97: +3 % for a short
    assert strength_of(run(short, "99.91"), SignalName.TRAILING_STOP) is S   # 3 % back up from 97
    assert strength_of(run(short, "98.94"), SignalName.TRAILING_STOP) is M   # 2 %
    assert strength_of(run(short, "98.93"), SignalName.TRAILING_STOP) is None


def test_short_technicals_are_read_in_the_short_direction():
    short = position(side=PositionSide.SHORT)
    assert strength_of(run(short, "100", technicals=ExitTechnicals(rsi=88.0)), SignalName.RSI_OVERBOUGHT) is None
    assert strength_of(run(short, "100", technicals=ExitTechnicals(rsi=15.0)), SignalName.RSI_OVERBOUGHT) is S
    assert strength_of(run(short, "98", technicals=ExitTechnicals(vwap=100.0)), SignalName.BELOW_VWAP) is None
    assert strength_of(run(short, "102", technicals=ExitTechnicals(vwap=100.0)), SignalName.BELOW_VWAP) is M


# --- price guard ------------------------------------------------------------------------------------
def test_price_signals_are_only_the_price_rules():
    pos = position(stop="99.5", entry_volume_rate=1000.0, entry_time=hk(f"{DAY} 09:31"))
    now = hk(f"{DAY} 11:55")  # lunch STRONG and time stop would fire in evaluate
    technicals = ExitTechnicals(rsi=90.0, volume_rate=10.0)
    fast = price_signals(pos, Decimal("99.4"), now, HK.session_at(now), T)
    assert [str(s) for s in fast] == ["stop_loss STRONG"]
    full = evaluate(pos, Decimal("99.4"), now, HK.session_at(now), technicals, T)
    assert {s.name for s in full} >= {SignalName.STOP_LOSS, SignalName.RSI_OVERBOUGHT, SignalName.LUNCH_BREAK}


# --- nothing fires outside continuous trading -------------------------------------------------------
BROKEN = dict(stop="99.5", entry_volume_rate=1000.0)
SCREAMING = ExitTechnicals(rsi=95.0, volume_rate=1.0, vwap=120.0, ema9=120.0, macd=-1.0, macd_signal=1.0)


@pytest.mark.parametrize("now, calendar", [
    (hk(f"{DAY} 09:00"), HK),            # before the open
    (hk(f"{DAY} 12:00"), HK),            # lunch starts
    (hk(f"{DAY} 12:30"), HK),            # lunch
    (hk(f"{DAY} 16:00"), HK),            # the close itself
    (hk(f"{DAY} 16:05"), HK),            # after the close
    (hk(f"{DAY} 23:59"), HK),            # late evening (the original treated this as STRONG near_close)
    (hk("2026-12-25 10:30"), HK),        # Christmas Day: holiday
    (hk("2026-11-21 10:30"), HK),        # Saturday
    (us("2026-11-26 11:00"), US),        # Thanksgiving
    (us("2026-11-27 13:05"), US),        # after the half-day close
])
def test_nothing_fires_outside_a_session(now, calendar):
    pos = position(entry="100", entry_time=hk(f"{DAY} 09:35"), **BROKEN)
    session = calendar.session_at(now)
    assert evaluate(pos, Decimal("90"), now, session, SCREAMING, T) == []
    assert price_signals(pos, Decimal("90"), now, session, T) == []
    assert time_signals(now, session, T) == []


def test_nothing_fires_without_a_session():
    pos = position(**BROKEN)
    assert evaluate(pos, Decimal("90"), QUIET_NOW, None, SCREAMING, T) == []
    assert price_signals(pos, Decimal("90"), QUIET_NOW, None, T) == []


def test_a_session_of_another_day_is_not_open():
    pos = position(**BROKEN)
    yesterday = HK.session(datetime(2026, 11, 20).date())
    assert evaluate(pos, Decimal("90"), QUIET_NOW, yesterday, SCREAMING, T) == []


# --- half days --------------------------------------------------------------------------------------
def test_hk_half_day_closes_at_noon_without_a_lunch_signal():
    session = HK.session(datetime(2026, 12, 24).date())
    assert session.is_half_day and session.break_start is None
    pos = position(entry_time=hk("2026-12-24 11:00"))
    for local, expected in [("11:00", None), ("11:00:01", W), ("11:30:01", M), ("11:50:01", S), ("11:55", S)]:
        signals = run(pos, "100.2", now=hk(f"2026-12-24 {local}"))
        assert strength_of(signals, SignalName.MARKET_CLOSE) is expected, local
        assert strength_of(signals, SignalName.LUNCH_BREAK) is None
    assert run(pos, "100.2", now=hk("2026-12-24 12:00")) == []
    assert run(pos, "100.2", now=hk("2026-12-24 13:30")) == []   # no afternoon session


def test_us_half_day_closes_at_13_et():
    session = US.session(datetime(2026, 11, 27).date())
    assert session.is_half_day
    pos = position(entry_time=us("2026-11-27 12:00"))
    for local, expected in [("12:00", None), ("12:05", W), ("12:45", M), ("12:55", S)]:
        signals = run(pos, "100.2", now=us(f"2026-11-27 {local}"), calendar=US)
        assert strength_of(signals, SignalName.MARKET_CLOSE) is expected, local
    # The same clock time on a normal day is quiet: the close comes from the session, not a literal.
    assert run(position(entry_time=us(f"{DAY} 12:30")), "100.2", now=us(f"{DAY} 12:45"), calendar=US) == []


# --- thresholds come from the profile ---------------------------------------------------------------
def test_thresholds_are_read_from_settings():
    tight = SignalThresholds(stop_loss_pct=Levels(strong=-1.5, moderate=-1, weak=-0.5))
    assert strength_of(run(position(), "98.5", thresholds=tight), SignalName.STOP_LOSS) is S
    assert strength_of(run(position(), "98.5"), SignalName.STOP_LOSS) is W


# --- decision rules ---------------------------------------------------------------------------------
def test_any_strong_exits():
    decision = decide([sig(SignalName.RSI_OVERBOUGHT, S)], T)
    assert decision.action is ExitAction.EXIT and decision.confidence == 1.0
    assert decision.exit_reason is ExitReason.SIGNALS


def test_three_moderate_exit():
    signals = [sig(SignalName.BELOW_VWAP, M), sig(SignalName.BELOW_EMA9, M), sig(SignalName.VOLUME_DYING, M)]
    assert decide(signals, T).action is ExitAction.EXIT


def test_score_at_exit_score_exits():
    # 2 MODERATE (2 x 2) + 2 WEAK (2 x 1) = 6 = exit_score
    signals = [sig(SignalName.BELOW_VWAP, M), sig(SignalName.BELOW_EMA9, M),
               sig(SignalName.RSI_OVERBOUGHT, W), sig(SignalName.MACD_BEARISH_CROSS, W)]
    decision = decide(signals, T)
    assert decision.score == 6 and decision.action is ExitAction.EXIT


def test_score_just_below_exit_score_asks():
    signals = [sig(SignalName.BELOW_VWAP, M), sig(SignalName.BELOW_EMA9, M), sig(SignalName.RSI_OVERBOUGHT, W)]
    decision = decide(signals, T)
    assert decision.score == 5 and decision.action is ExitAction.ASK_HAIKU


def test_weights_change_the_score():
    heavy = SignalThresholds(weights={"below_vwap": 2.0})
    signals = [sig(SignalName.BELOW_VWAP, M), sig(SignalName.BELOW_EMA9, M)]
    assert decide(signals, heavy).score == 6 and decide(signals, heavy).action is ExitAction.EXIT
    assert decide(signals, T).action is ExitAction.ASK_HAIKU


@pytest.mark.parametrize("signals", [
    [sig(SignalName.VOLUME_DYING, M)],
    [sig(SignalName.VOLUME_DYING, M), sig(SignalName.MARKET_CLOSE, M)],
    [sig(SignalName.BELOW_VWAP, W), sig(SignalName.BELOW_EMA9, W), sig(SignalName.RSI_OVERBOUGHT, W)],
])
def test_one_or_two_moderate_or_three_weak_ask(signals):
    assert decide(signals, T).action is ExitAction.ASK_HAIKU


@pytest.mark.parametrize("signals", [
    [],
    [sig(SignalName.BELOW_VWAP, W)],
    [sig(SignalName.BELOW_VWAP, W), sig(SignalName.BELOW_EMA9, W)],
])
def test_otherwise_hold(signals):
    decision = decide(signals, T)
    assert decision.action is ExitAction.HOLD and decision.exit_reason is None


def test_advisor_unavailable_exits_on_two_moderate():
    two = [sig(SignalName.VOLUME_DYING, M), sig(SignalName.MARKET_CLOSE, M)]
    decision = decide(two, T, advisor_available=False)
    assert decision.action is ExitAction.EXIT and decision.exit_reason is ExitReason.MARKET_CLOSE


@pytest.mark.parametrize("signals", [
    [sig(SignalName.VOLUME_DYING, M)],
    [sig(SignalName.BELOW_VWAP, W), sig(SignalName.BELOW_EMA9, W), sig(SignalName.RSI_OVERBOUGHT, W)],
])
def test_advisor_unavailable_holds_below_two_moderate(signals):
    assert decide(signals, T, advisor_available=False).action is ExitAction.HOLD


def test_advisor_unavailable_changes_nothing_for_strong_or_hold():
    assert decide([sig(SignalName.STOP_LOSS, S)], T, advisor_available=False).action is ExitAction.EXIT
    assert decide([], T, advisor_available=False).action is ExitAction.HOLD


# --- precedence of the reason -----------------------------------------------------------------------
def test_strongest_signal_is_the_reason():
    decision = decide([sig(SignalName.STOP_LOSS, M), sig(SignalName.MARKET_CLOSE, S)], T)
    assert decision.exit_reason is ExitReason.MARKET_CLOSE


def test_equal_strength_follows_precedence():
    decision = decide([sig(SignalName.MARKET_CLOSE, S), sig(SignalName.STOP_LOSS, S)], T)
    assert decision.exit_reason is ExitReason.STOP_LOSS
    decision = decide([sig(SignalName.TAKE_PROFIT, S), sig(SignalName.TRAILING_STOP, S)], T)
    assert decision.exit_reason is ExitReason.TRAILING_STOP


def test_trailing_give_back_from_a_big_gain_is_a_trailing_exit():
    # High +10 %, now +6 %: take_profit MODERATE and trailing_stop STRONG both fire.
    signals = run(position(high="110"), "106")
    assert {str(s) for s in signals} == {"take_profit MODERATE", "trailing_stop STRONG"}
    assert decide(signals, T).exit_reason is ExitReason.TRAILING_STOP


def test_decision_lists_its_reasons():
    decision = decide(run(position(stop="99.5"), "99.4"), T)
    assert decision.reasons[0].startswith("1 STRONG")
    assert any("stop 99.50" in r for r in decision.reasons[1:])


# --- the self-test ----------------------------------------------------------------------------------
def _self_test(tz: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CATALYST__")}
    env["TZ"] = tz
    return subprocess.run([sys.executable, "signals.py"], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_self_test_is_deterministic_whatever_the_timezone():
    utc, la = _self_test("UTC"), _self_test("America/Los_Angeles")
    assert utc.returncode == 0, utc.stdout + utc.stderr
    assert la.returncode == 0, la.stdout + la.stderr
    assert utc.stdout == la.stdout
    assert "MISMATCH" not in utc.stdout
    for needle in ("Signals: [", "Decision: EXIT", "Decision: ASK_HAIKU", "Decision: HOLD", "Lunch at 11:52 HKT",
                   "Flat for 125 minutes", "half day"):
        assert needle in utc.stdout


def test_the_strong_only_rule_holds_on_anything_but_a_strong_signal_and_never_asks_the_advisor():
    """The HK profile's rule (docs/exit-quality.md): early exits on weaker signals cost money there."""
    strong_only = SignalThresholds(exit_rule="strong_only")
    three_moderate = [sig(SignalName.BELOW_VWAP, M), sig(SignalName.BELOW_EMA9, M), sig(SignalName.VOLUME_DYING, M)]
    assert decide(three_moderate, T).action is ExitAction.EXIT
    for advisor in (True, False):
        decision = decide(three_moderate, strong_only, advisor_available=advisor)
        assert decision.action is ExitAction.HOLD and "strong_only" in decision.reasons[0]
    assert decide([sig(SignalName.STOP_LOSS, S)], strong_only).action is ExitAction.EXIT


def test_an_unknown_exit_rule_is_refused():
    with pytest.raises(ValueError, match="exit_rule"):
        SignalThresholds(exit_rule="vibes")
