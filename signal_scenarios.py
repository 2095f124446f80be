"""The self-test of ``python signals.py``: fixed scenarios at fixed market-local times, each with the
signals and the decision it must give. Kept beside the rules, out of the production module."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from config.settings import SignalThresholds
from core.instruments import Market, PositionSide
from data.calendar import MarketCalendar, Session
from signals import Decision, ExitAction, ExitTechnicals, PositionView, Signal, decide, evaluate


@dataclass(frozen=True)
class _Scenario:
    title: str
    market: str
    local: str                       # "YYYY-MM-DD HH:MM[:SS]" market-local
    entry_local: str
    entry: str
    price: str
    expected: ExitAction
    expected_signals: tuple[str, ...]
    side: PositionSide = PositionSide.LONG
    stop: str | None = None
    target: str | None = None
    high: str | None = None
    technicals: ExitTechnicals | None = None
    entry_volume_rate: float | None = None
    advisor_available: bool = True
    hold_through_lunch: bool = False


def _scenarios() -> list[_Scenario]:
    day = "2026-11-23"  # a normal Monday in both markets
    return [
        _Scenario("Stop broken", "HK", f"{day} 10:30", f"{day} 10:00", "400", "389.8", ExitAction.EXIT,
                  ("stop_loss STRONG",), stop="390", target="420"),
        _Scenario("Take profit +8.5%", "HK", f"{day} 10:30", f"{day} 09:45", "100", "108.5", ExitAction.EXIT,
                  ("take_profit STRONG",)),
        _Scenario("Trailing give-back: high +6%, now +2.5%", "HK", f"{day} 14:00", f"{day} 13:10", "100", "102.5",
                  ExitAction.EXIT, ("trailing_stop STRONG",), high="106"),
        _Scenario("RSI 88", "US", f"{day} 11:00", f"{day} 10:30", "50", "50.5", ExitAction.EXIT,
                  ("rsi_overbought STRONG",), technicals=ExitTechnicals(rsi=88.0)),
        _Scenario("Volume dying: 35% of the entry rate", "US", f"{day} 11:00", f"{day} 10:30", "50", "50.2",
                  ExitAction.ASK_HAIKU, ("volume_dying MODERATE",),
                  technicals=ExitTechnicals(volume_rate=3500.0), entry_volume_rate=10000.0),
        _Scenario("Two moderates: 2.5% below VWAP, MACD bearish cross above zero", "US", f"{day} 11:00",
                  f"{day} 10:40", "50", "50.1", ExitAction.ASK_HAIKU,
                  ("below_vwap MODERATE", "macd_bearish_cross MODERATE"),
                  technicals=ExitTechnicals(vwap=51.4, macd=0.30, macd_signal=0.35, macd_prev=0.40,
                                            macd_signal_prev=0.36)),
        _Scenario("Two moderates, Haiku cap reached", "US", f"{day} 11:00", f"{day} 10:40", "50", "50.1",
                  ExitAction.EXIT, ("below_vwap MODERATE", "macd_bearish_cross MODERATE"),
                  technicals=ExitTechnicals(vwap=51.4, macd=0.30, macd_signal=0.35, macd_prev=0.40,
                                            macd_signal_prev=0.36), advisor_available=False),
        _Scenario("Three weak signals", "US", f"{day} 11:00", f"{day} 10:40", "50", "50.1", ExitAction.ASK_HAIKU,
                  ("rsi_overbought WEAK", "below_vwap WEAK", "below_ema9 WEAK"),
                  technicals=ExitTechnicals(rsi=71.0, vwap=50.2, ema9=50.15)),
        _Scenario("Lunch at 11:52 HKT", "HK", f"{day} 11:52", f"{day} 11:20", "100", "100.5", ExitAction.EXIT,
                  ("lunch_break STRONG",)),
        _Scenario("Lunch at 11:52 HKT, profile holds through lunch", "HK", f"{day} 11:52", f"{day} 11:20", "100",
                  "100.5", ExitAction.HOLD, (), hold_through_lunch=True),
        _Scenario("Flat for 125 minutes", "US", f"{day} 12:05", f"{day} 10:00", "50", "50.1", ExitAction.EXIT,
                  ("time_stop STRONG",)),
        _Scenario("Quiet position", "US", f"{day} 11:00", f"{day} 10:30", "50", "50.6", ExitAction.HOLD, ()),
        _Scenario("Stop broken after the close (16:05 HKT): nothing fires", "HK", f"{day} 16:05", f"{day} 10:00",
                  "400", "380", ExitAction.HOLD, (), stop="390"),
        _Scenario("Stop broken during lunch (12:30 HKT): nothing fires", "HK", f"{day} 12:30", f"{day} 10:00",
                  "400", "380", ExitAction.HOLD, (), stop="390"),
        _Scenario("Christmas Day 2026 (HK holiday): nothing fires", "HK", "2026-12-25 10:30", "2026-12-24 10:00",
                  "400", "380", ExitAction.HOLD, (), stop="390"),
        _Scenario("HK half day 2026-12-24, 11:55 HKT (close 12:00)", "HK", "2026-12-24 11:55", "2026-12-24 11:30",
                  "100", "100.5", ExitAction.EXIT, ("market_close STRONG",)),
        _Scenario("US half day 2026-11-27, 12:45 ET (close 13:00)", "US", "2026-11-27 12:45", "2026-11-27 12:30",
                  "50", "50.2", ExitAction.ASK_HAIKU, ("market_close MODERATE",)),
        _Scenario("Normal US day at 12:45 ET: no time signal", "US", f"{day} 12:45", f"{day} 12:30", "50", "50.2",
                  ExitAction.HOLD, ()),
        _Scenario("HK 15:50:00 is 10 min to the close: MODERATE, not a forced exit", "HK", f"{day} 15:50:00",
                  f"{day} 15:30", "100", "102", ExitAction.ASK_HAIKU, ("market_close MODERATE",)),
        _Scenario("Short position, price up 3.2%", "US", f"{day} 11:00", f"{day} 10:30", "50", "51.6",
                  ExitAction.EXIT, ("stop_loss STRONG",), side=PositionSide.SHORT),
    ]


def _run_scenario(sc: _Scenario, thresholds: SignalThresholds) -> tuple[list[Signal], Decision, str]:
    calendar = MarketCalendar(Market(sc.market))

    def at(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=calendar.tz)

    now, entry_time = at(sc.local), at(sc.entry_local)
    entry, price = Decimal(sc.entry), Decimal(sc.price)
    position = PositionView(
        symbol="HK.00700" if sc.market == "HK" else "US.AAPL", side=sc.side, quantity=100,
        entry_price=entry, entry_time=entry_time,
        stop_price=Decimal(sc.stop) if sc.stop else None, target_price=Decimal(sc.target) if sc.target else None,
        high_watermark=Decimal(sc.high) if sc.high else entry, entry_volume_rate=sc.entry_volume_rate,
    )
    session = calendar.session_at(now)
    found = evaluate(position, price, now, session, sc.technicals, thresholds, sc.hold_through_lunch)
    decision = decide(found, thresholds, advisor_available=sc.advisor_available)
    zone = "HKT" if sc.market == "HK" else "ET"
    where = (f"{position.symbol} {sc.side.value} {entry} -> {price} at {calendar.local(now):%Y-%m-%d %H:%M:%S} "
             f"{zone}; session: {_describe_session(session, now, calendar)}")
    return found, decision, where


def _describe_session(session: Session | None, now: datetime, calendar) -> str:
    if session is None:
        return "none (holiday or weekend)"
    close = calendar.local(session.close)
    half = ", half day" if session.is_half_day else ""
    return f"{session.state_at(now).value}, closes {close:%H:%M}{half}"


def self_test(out=sys.stdout) -> int:
    thresholds = SignalThresholds()
    failures = 0
    scenarios = _scenarios()
    for number, sc in enumerate(scenarios, 1):
        found, decision, where = _run_scenario(sc, thresholds)
        got_signals = tuple(str(s) for s in found)
        ok = decision.action is sc.expected and got_signals == sc.expected_signals
        failures += not ok
        print(f"[{number:02d}] {sc.title}", file=out)
        print(f"     {where}", file=out)
        print(f"     Signals: [{', '.join(f'{s} ({s.detail})' for s in found)}]", file=out)
        reason = f" (reason {decision.exit_reason.value})" if decision.exit_reason else ""
        print(f"     Decision: {decision.action.value}{reason}, score {decision.score:g}", file=out)
        expected = f"{sc.expected.value} [{', '.join(sc.expected_signals)}]"
        print(f"     Expected: {expected} -> {'OK' if ok else 'MISMATCH'}", file=out)
    print(f"{len(scenarios) - failures}/{len(scenarios)} scenarios as expected", file=out)
    return 0 if failures == 0 else 1
