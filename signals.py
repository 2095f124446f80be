"""Exit signals and the exit decision: pure functions, no I/O, no clock reads.

``evaluate`` turns (position, price, now, session, technicals, thresholds) into the signals of
SPEC section 7; ``decide`` turns signals into EXIT / ASK_HAIKU / HOLD. ``price_signals`` is the
subset the fast price guard re-checks on every quote (stop_loss, take_profit, trailing_stop).
Every number comes from ``SignalThresholds`` (the profile).

Rules that matter
* Nothing fires outside continuous trading: with no session (holiday, weekend) or when the
  session's state at ``now`` is not OPEN (before the open, lunch, after the close) every
  function returns no signals, so nothing ever tries to sell into a closed market.
* Time comes only from the ``Session``: minutes to its own close (half days included) and to its
  lunch break. There are no clock literals such as 15:50.
* P&L is measured from the entry price in the position's direction: a short gains when the price
  falls. The watermark is the best price since entry (highest for a long, lowest for a short);
  the current price counts too, so a drawdown is never negative.
* Technical signals are read in the position's direction. Their names describe the long case;
  for a short they mirror: RSI at or below ``100 - level`` (oversold), price above VWAP / EMA9,
  MACD crossing over its signal line while below zero. The detail text says which.
* Missing data (None technicals, a None or NaN field, no entry volume) means that signal does not
  fire.
* Minutes held exclude the lunch break (a position held through lunch did not work for that
  hour).

Threshold semantics (levels checked STRONG, then MODERATE, then WEAK; the first match wins)
* stop_loss: P&L % <= level, or the price reached the position's stop (STRONG).
* take_profit: P&L % >= level, or the price reached the position's target (STRONG).
* trailing_stop: once the watermark was >= ``trailing_activation_pct`` in profit, the give-back
  from the watermark in % >= level.
* rsi_overbought: RSI >= level.  volume_dying: recent volume pace / pace at entry < level (a pace
  is volume over the usual volume of those minutes: ``MarketData.volume_pace``).
* market_close / lunch_break: minutes to the close / break < level.
* time_stop: |P&L %| < ``time_stop_flat_pct`` and minutes held > level.
* below_vwap / below_ema9: price strictly below the line and at least level % below it.
* macd_bearish_cross: MODERATE when MACD crosses under its signal line (previous MACD >= previous
  signal) while MACD is above zero; WEAK when MACD is under its signal line otherwise.

Decision (``decide``), first rule that applies
1. any STRONG signal -> EXIT (no model call);
2. >= ``exit_moderate_count`` MODERATE, or weighted score >= ``exit_score`` -> EXIT;
3. >= 1 MODERATE, or >= ``ask_weak_count`` WEAK -> ASK_HAIKU;
4. otherwise HOLD.
With ``advisor_available=False`` (Haiku cap reached, budget gone) rule 3 becomes: EXIT when there
are >= ``exit_moderate_count_without_advisor`` MODERATE, else HOLD.
Score = sum of ``weights.get(name, 1.0) x points``, points from ``strength_points`` for MODERATE
and WEAK; a STRONG signal is worth ``exit_score`` points (on its own it is a full exit).

Precedence: which signal is the reason when several fire
The deciding signal is the strongest one; among equally strong signals the first in
``PRECEDENCE`` wins:
    stop_loss > trailing_stop > take_profit > market_close > lunch_break > time_stop >
    rsi_overbought > volume_dying > below_vwap > below_ema9 > macd_bearish_cross
Protecting capital comes first, then protecting gains already made, then the planned target,
then the clock (the session is ending whatever the chart says), then a trade that went nowhere,
then technical evidence. So a STRONG market_close beats a MODERATE stop_loss, and a STRONG
stop_loss beats a STRONG market_close. ``REASON_BY_SIGNAL`` maps the deciding signal to the
``ExitReason`` stored with the exit (technical signals map to ``signals``).

``python signals.py`` runs the self-test of fixed scenarios at fixed times (``signal_scenarios.py``); its output does not
depend on the wall clock or the TZ environment variable. Exit code 0 only if all match.
"""
from __future__ import annotations

import enum
import math
import operator
import sys
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Callable, Iterable, Mapping, Sequence

from config.settings import Levels, SignalThresholds
from data.calendar import Session, SessionState
from core.instruments import PositionSide, to_decimal

HUNDRED = Decimal(100)
RSI_SCALE = 100.0  # RSI lives on 0..100; a short's "overbought" mirrors to 100 - level


class SignalName(str, enum.Enum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    RSI_OVERBOUGHT = "rsi_overbought"
    VOLUME_DYING = "volume_dying"
    MARKET_CLOSE = "market_close"
    LUNCH_BREAK = "lunch_break"
    TIME_STOP = "time_stop"
    BELOW_VWAP = "below_vwap"
    BELOW_EMA9 = "below_ema9"
    MACD_BEARISH_CROSS = "macd_bearish_cross"


class Strength(str, enum.Enum):
    STRONG = "strong"
    MODERATE = "moderate"
    WEAK = "weak"


class ExitAction(str, enum.Enum):
    EXIT = "EXIT"
    ASK_HAIKU = "ASK_HAIKU"
    HOLD = "HOLD"


class ExitReason(str, enum.Enum):
    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    TRAILING_STOP = "trailing_stop"
    SIGNALS = "signals"
    HAIKU = "haiku"
    MARKET_CLOSE = "market_close"
    LUNCH_BREAK = "lunch_break"
    TIME_STOP = "time_stop"
    BACKSTOP = "backstop"
    CLOSED_AT_BROKER = "closed_at_broker"    # sold outside the agent (by hand in the broker's app, ...)
    CLOSE_ALL = "close_all"
    RISK_HALT = "risk_halt"
    MANUAL = "manual"
    RECONCILED_MISSING = "reconciled_missing"


PRECEDENCE: tuple[SignalName, ...] = (
    SignalName.STOP_LOSS,
    SignalName.TRAILING_STOP,
    SignalName.TAKE_PROFIT,
    SignalName.MARKET_CLOSE,
    SignalName.LUNCH_BREAK,
    SignalName.TIME_STOP,
    SignalName.RSI_OVERBOUGHT,
    SignalName.VOLUME_DYING,
    SignalName.BELOW_VWAP,
    SignalName.BELOW_EMA9,
    SignalName.MACD_BEARISH_CROSS,
)

REASON_BY_SIGNAL: Mapping[SignalName, ExitReason] = {
    SignalName.STOP_LOSS: ExitReason.STOP_LOSS,
    SignalName.TAKE_PROFIT: ExitReason.TAKE_PROFIT,
    SignalName.TRAILING_STOP: ExitReason.TRAILING_STOP,
    SignalName.MARKET_CLOSE: ExitReason.MARKET_CLOSE,
    SignalName.LUNCH_BREAK: ExitReason.LUNCH_BREAK,
    SignalName.TIME_STOP: ExitReason.TIME_STOP,
    SignalName.RSI_OVERBOUGHT: ExitReason.SIGNALS,
    SignalName.VOLUME_DYING: ExitReason.SIGNALS,
    SignalName.BELOW_VWAP: ExitReason.SIGNALS,
    SignalName.BELOW_EMA9: ExitReason.SIGNALS,
    SignalName.MACD_BEARISH_CROSS: ExitReason.SIGNALS,
}

_STRENGTH_ORDER = (Strength.STRONG, Strength.MODERATE, Strength.WEAK)


# --- Inputs and outputs --------------------------------------------------------------------------
@dataclass(frozen=True)
class PositionView:
    """What the exit rules need to know about one open position.

    ``high_watermark`` is the best price since entry: the highest for a long, the lowest for a
    short. ``entry_volume_rate`` is the volume pace at entry (None: unknown).
    """

    symbol: str
    side: PositionSide
    quantity: int
    entry_price: Decimal
    entry_time: datetime
    stop_price: Decimal | None
    target_price: Decimal | None
    high_watermark: Decimal
    entry_volume_rate: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.side, PositionSide):
            raise TypeError(f"PositionView.side must be a PositionSide, got {self.side!r}")
        if self.entry_price <= 0:
            raise ValueError(f"{self.symbol}: entry price must be positive, got {self.entry_price}")
        if self.entry_time.tzinfo is None:
            raise ValueError(f"{self.symbol}: entry_time {self.entry_time} is naive; pass a timezone-aware time")
        object.__setattr__(self, "entry_volume_rate", _finite_or_none(self.entry_volume_rate))


@dataclass(frozen=True)
class ExitTechnicals:
    """Indicator values at the check; any of them may be None (then its signal stays silent)."""

    rsi: float | None = None
    macd: float | None = None
    macd_signal: float | None = None
    macd_prev: float | None = None
    macd_signal_prev: float | None = None
    ema9: float | None = None
    vwap: float | None = None
    volume_rate: float | None = None

    def __post_init__(self) -> None:
        # Indicator frames carry NaN where there is not enough history: that is missing data.
        for f in fields(self):
            object.__setattr__(self, f.name, _finite_or_none(getattr(self, f.name)))


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Signal:
    name: SignalName
    strength: Strength
    value: float
    threshold: float
    detail: str

    def __str__(self) -> str:
        return f"{self.name.value} {self.strength.name}"


@dataclass(frozen=True)
class Decision:
    action: ExitAction
    signals: tuple[Signal, ...]
    score: float
    confidence: float
    reasons: tuple[str, ...]
    deciding_signal: Signal | None

    @property
    def exit_reason(self) -> ExitReason | None:
        """The reason to store when this decision exits; None when it does not."""
        if self.action is not ExitAction.EXIT or self.deciding_signal is None:
            return None
        return REASON_BY_SIGNAL[self.deciding_signal.name]


# --- Small measures, public because the monitor and the advisor show them ------------------------
def pnl_pct(position: PositionView, price: Decimal) -> Decimal:
    """Unrealized P&L in % of the entry price, in the position's direction."""
    move = (to_decimal(price) - position.entry_price) / position.entry_price * HUNDRED
    return move if position.side is PositionSide.LONG else -move


def best_price(position: PositionView, price: Decimal) -> Decimal:
    """The watermark including the current price."""
    price = to_decimal(price)
    if position.side is PositionSide.LONG:
        return max(position.high_watermark, price)
    return min(position.high_watermark, price)


def minutes_held(entry_time: datetime, now: datetime, session: Session | None) -> float:
    """Minutes since entry, not counting this session's lunch break."""
    held = (now - entry_time).total_seconds()
    if session is not None and session.break_start is not None and session.break_end is not None:
        overlap_start = max(entry_time, session.break_start)
        overlap_end = min(now, session.break_end)
        held -= max(0.0, (overlap_end - overlap_start).total_seconds())
    return max(0.0, held) / 60


def is_trading(now: datetime, session: Session | None) -> bool:
    return session is not None and session.state_at(now) is SessionState.OPEN


# --- Grading a value against Levels --------------------------------------------------------------
Compare = Callable[[Decimal, Decimal], bool]


def _level(levels: Levels, strength: Strength) -> float | None:
    return getattr(levels, strength.value)


def _grade(value: Decimal, levels: Levels, fires: Compare) -> tuple[Strength, Decimal] | None:
    """The strongest level that ``value`` reaches, with that level."""
    for strength in _STRENGTH_ORDER:
        level = _level(levels, strength)
        if level is not None and fires(value, to_decimal(level)):
            return strength, to_decimal(level)
    return None


def _fmt(value: Decimal | float, places: int = 2) -> str:
    return f"{to_decimal(value):.{places}f}"


def _signal(name: SignalName, strength: Strength, value: Decimal | float, threshold: Decimal | float,
            detail: str) -> Signal:
    return Signal(name, strength, float(value), float(threshold), detail)


# --- Price rules (the fast guard) -----------------------------------------------------------------
def _stop_loss(position: PositionView, price: Decimal, t: SignalThresholds) -> Signal | None:
    stop = position.stop_price
    if stop is not None:
        broken = price <= stop if position.side is PositionSide.LONG else price >= stop
        if broken:
            relation = "<=" if position.side is PositionSide.LONG else ">="
            return _signal(SignalName.STOP_LOSS, Strength.STRONG, price, stop,
                           f"price {_fmt(price)} {relation} stop {_fmt(stop)}")
    pnl = pnl_pct(position, price)
    graded = _grade(pnl, t.stop_loss_pct, operator.le)
    if graded is None:
        return None
    strength, level = graded
    return _signal(SignalName.STOP_LOSS, strength, pnl, level, f"P&L {_fmt(pnl)}% <= {_fmt(level)}%")


def _take_profit(position: PositionView, price: Decimal, t: SignalThresholds) -> Signal | None:
    target = position.target_price
    if target is not None:
        reached = price >= target if position.side is PositionSide.LONG else price <= target
        if reached:
            relation = ">=" if position.side is PositionSide.LONG else "<="
            return _signal(SignalName.TAKE_PROFIT, Strength.STRONG, price, target,
                           f"price {_fmt(price)} {relation} target {_fmt(target)}")
    pnl = pnl_pct(position, price)
    graded = _grade(pnl, t.take_profit_pct, operator.ge)
    if graded is None:
        return None
    strength, level = graded
    return _signal(SignalName.TAKE_PROFIT, strength, pnl, level, f"P&L {_fmt(pnl)}% >= {_fmt(level)}%")


def _trailing_stop(position: PositionView, price: Decimal, t: SignalThresholds) -> Signal | None:
    best = best_price(position, price)
    peak_gain = pnl_pct(position, best)
    if peak_gain < to_decimal(t.trailing_activation_pct):
        return None
    give_back = abs(best - price) / best * HUNDRED
    graded = _grade(give_back, t.trailing_drawdown_pct, operator.ge)
    if graded is None:
        return None
    strength, level = graded
    return _signal(SignalName.TRAILING_STOP, strength, give_back, level,
                   f"gave back {_fmt(give_back)}% >= {_fmt(level)}% from best {_fmt(best)} (+{_fmt(peak_gain)}%)")


def price_signals(position: PositionView, price: Decimal, now: datetime, session: Session | None,
                  thresholds: SignalThresholds) -> list[Signal]:
    """stop_loss, take_profit and trailing_stop only: what the price guard re-checks on every quote."""
    if not is_trading(now, session):
        return []
    price = to_decimal(price)
    found = (rule(position, price, thresholds) for rule in (_stop_loss, _take_profit, _trailing_stop))
    return [s for s in found if s is not None]


# --- Technical rules ------------------------------------------------------------------------------
def _rsi_overbought(position: PositionView, tech: ExitTechnicals, t: SignalThresholds) -> Signal | None:
    if tech.rsi is None:
        return None
    rsi = to_decimal(tech.rsi)
    if position.side is PositionSide.LONG:
        graded = _grade(rsi, t.rsi_overbought, operator.ge)
        if graded is None:
            return None
        strength, level = graded
        return _signal(SignalName.RSI_OVERBOUGHT, strength, rsi, level, f"RSI {_fmt(rsi, 1)} >= {_fmt(level, 1)}")
    mirrored = to_decimal(RSI_SCALE) - rsi
    graded = _grade(mirrored, t.rsi_overbought, operator.ge)
    if graded is None:
        return None
    strength, level = graded
    floor = to_decimal(RSI_SCALE) - level
    return _signal(SignalName.RSI_OVERBOUGHT, strength, rsi, floor,
                   f"RSI {_fmt(rsi, 1)} <= {_fmt(floor, 1)} (oversold, short position)")


def _volume_dying(position: PositionView, tech: ExitTechnicals, t: SignalThresholds) -> Signal | None:
    at_entry, now = position.entry_volume_rate, tech.volume_rate
    if at_entry is None or now is None or at_entry <= 0:
        return None
    ratio = to_decimal(now) / to_decimal(at_entry)
    graded = _grade(ratio, t.volume_dying_ratio, operator.lt)
    if graded is None:
        return None
    strength, level = graded
    return _signal(SignalName.VOLUME_DYING, strength, ratio, level,
                   f"volume rate {_fmt(ratio * HUNDRED, 0)}% of entry < {_fmt(level * HUNDRED, 0)}%")


def _against_line(name: SignalName, label: str, position: PositionView, price: Decimal, line: float | None,
                  levels: Levels) -> Signal | None:
    """Price on the wrong side of an average line (below for a long, above for a short)."""
    if line is None or line <= 0:
        return None
    ref = to_decimal(line)
    wrong_side = price < ref if position.side is PositionSide.LONG else price > ref
    if not wrong_side:
        return None
    distance = abs(ref - price) / ref * HUNDRED
    graded = _grade(distance, levels, operator.ge)
    if graded is None:
        return None
    strength, level = graded
    where = "below" if position.side is PositionSide.LONG else "above (short position)"
    return _signal(name, strength, distance, level,
                   f"price {_fmt(price)} {_fmt(distance)}% {where} {label} {_fmt(ref)}")


def _macd_cross(position: PositionView, tech: ExitTechnicals) -> Signal | None:
    if tech.macd is None or tech.macd_signal is None:
        return None
    # For a short the adverse move is MACD rising over its signal line while below zero.
    sign = 1.0 if position.side is PositionSide.LONG else -1.0
    macd, signal_line = sign * tech.macd, sign * tech.macd_signal
    if macd >= signal_line:
        return None
    gap = macd - signal_line
    crossed = (tech.macd_prev is not None and tech.macd_signal_prev is not None
               and sign * tech.macd_prev >= sign * tech.macd_signal_prev)
    if position.side is PositionSide.LONG:
        cross_text, under_text = "crossed under its signal line above zero", "under its signal line"
    else:
        cross_text = "crossed over its signal line below zero (short position)"
        under_text = "over its signal line (short position)"
    values = f"MACD {tech.macd:.4f} vs signal {tech.macd_signal:.4f}"
    if crossed and macd > 0:
        return _signal(SignalName.MACD_BEARISH_CROSS, Strength.MODERATE, gap, 0.0, f"{values}: {cross_text}")
    return _signal(SignalName.MACD_BEARISH_CROSS, Strength.WEAK, gap, 0.0, f"{values}: {under_text}")


def technical_signals(position: PositionView, price: Decimal, technicals: ExitTechnicals | None,
                      thresholds: SignalThresholds) -> list[Signal]:
    if technicals is None:
        return []
    price = to_decimal(price)
    found = (
        _rsi_overbought(position, technicals, thresholds),
        _volume_dying(position, technicals, thresholds),
        _against_line(SignalName.BELOW_VWAP, "VWAP", position, price, technicals.vwap, thresholds.below_vwap_pct),
        _against_line(SignalName.BELOW_EMA9, "EMA9", position, price, technicals.ema9, thresholds.below_ema9_pct),
        _macd_cross(position, technicals),
    )
    return [s for s in found if s is not None]


# --- Time rules -----------------------------------------------------------------------------------
def time_signals(now: datetime, session: Session | None, thresholds: SignalThresholds,
                 hold_through_lunch: bool = False) -> list[Signal]:
    """market_close and lunch_break from the session alone (risk uses them to stop new entries)."""
    if session is None or not is_trading(now, session):
        return []
    found: list[Signal] = []
    to_close = session.minutes_to_close(now)
    if to_close is not None:
        graded = _grade(to_decimal(to_close), thresholds.market_close_minutes, operator.lt)
        if graded is not None:
            strength, level = graded
            half = " (half day)" if session.is_half_day else ""
            found.append(_signal(SignalName.MARKET_CLOSE, strength, to_close, level,
                                 f"{_fmt(to_close, 1)} min to the close{half} < {_fmt(level, 0)}"))
    to_break = None if hold_through_lunch else session.minutes_to_break(now)
    if to_break is not None:
        graded = _grade(to_decimal(to_break), thresholds.lunch_break_minutes, operator.lt)
        if graded is not None:
            strength, level = graded
            found.append(_signal(SignalName.LUNCH_BREAK, strength, to_break, level,
                                 f"{_fmt(to_break, 1)} min to the lunch break < {_fmt(level, 0)}"))
    return found


def _time_stop(position: PositionView, price: Decimal, now: datetime, session: Session | None,
               t: SignalThresholds) -> Signal | None:
    pnl = pnl_pct(position, price)
    if abs(pnl) >= to_decimal(t.time_stop_flat_pct):
        return None
    held = to_decimal(minutes_held(position.entry_time, now, session))
    graded = _grade(held, t.time_stop_minutes, operator.gt)
    if graded is None:
        return None
    strength, level = graded
    return _signal(SignalName.TIME_STOP, strength, held, level,
                   f"flat (P&L {_fmt(pnl)}%) for {_fmt(held, 1)} min > {_fmt(level, 0)}")


# --- All of them ----------------------------------------------------------------------------------
def evaluate(position: PositionView, price: Decimal, now: datetime, session: Session | None,
             technicals: ExitTechnicals | None, thresholds: SignalThresholds,
             hold_through_lunch: bool = False) -> list[Signal]:
    """Every signal of SPEC section 7 that fires now, in the order of ``SignalName``."""
    if not is_trading(now, session):
        return []
    price = to_decimal(price)
    found = price_signals(position, price, now, session, thresholds)
    found += technical_signals(position, price, technicals, thresholds)
    found += time_signals(now, session, thresholds, hold_through_lunch)
    time_stop = _time_stop(position, price, now, session, thresholds)
    if time_stop is not None:
        found.append(time_stop)
    order = list(SignalName)
    return sorted(found, key=lambda s: order.index(s.name))


# --- Decision -------------------------------------------------------------------------------------
def _points(signal: Signal, t: SignalThresholds) -> float:
    if signal.strength is Strength.STRONG:
        return t.exit_score
    return t.strength_points.get(signal.strength.value, 0.0)


def score(signals: Iterable[Signal], thresholds: SignalThresholds) -> float:
    return sum(thresholds.weights.get(s.name.value, 1.0) * _points(s, thresholds) for s in signals)


def rank(signals: Iterable[Signal]) -> list[Signal]:
    """Strongest first; equally strong ones in ``PRECEDENCE`` order."""
    return sorted(signals, key=lambda s: (_STRENGTH_ORDER.index(s.strength), PRECEDENCE.index(s.name)))


def decide(signals: Sequence[Signal], thresholds: SignalThresholds, advisor_available: bool = True) -> Decision:
    signals = tuple(signals)
    ranked = rank(signals)
    top = ranked[0] if ranked else None
    counts = {strength: sum(1 for s in signals if s.strength is strength) for strength in Strength}
    strong, moderate, weak = counts[Strength.STRONG], counts[Strength.MODERATE], counts[Strength.WEAK]
    total = score(signals, thresholds)
    pressure = min(1.0, total / thresholds.exit_score)
    described = tuple(f"{s.name.value} {s.strength.name}: {s.detail}" for s in ranked)

    def made(action: ExitAction, rule: str, confidence: float) -> Decision:
        return Decision(action, signals, total, round(confidence, 4), (rule, *described), top)

    if strong:
        return made(ExitAction.EXIT, f"{strong} STRONG signal(s): exit at once", 1.0)
    if thresholds.exit_rule == "strong_only":
        return made(ExitAction.HOLD, f"{moderate} MODERATE, {weak} WEAK: only a STRONG signal exits (exit_rule strong_only)",
                    1.0 - pressure)
    if moderate >= thresholds.exit_moderate_count:
        return made(ExitAction.EXIT, f"{moderate} MODERATE signals >= {thresholds.exit_moderate_count}", 1.0)
    if total >= thresholds.exit_score:
        return made(ExitAction.EXIT, f"score {total:g} >= {thresholds.exit_score:g}", 1.0)
    if moderate >= 1 or weak >= thresholds.ask_weak_count:
        if advisor_available:
            return made(ExitAction.ASK_HAIKU, f"{moderate} MODERATE, {weak} WEAK: ask the advisor", pressure)
        needed = thresholds.exit_moderate_count_without_advisor
        if moderate >= needed:
            return made(ExitAction.EXIT, f"advisor unavailable and {moderate} MODERATE >= {needed}", pressure)
        return made(ExitAction.HOLD, f"advisor unavailable and {moderate} MODERATE < {needed}", 1.0 - pressure)
    return made(ExitAction.HOLD, f"{moderate} MODERATE, {weak} WEAK: nothing to act on", 1.0 - pressure)


if __name__ == "__main__":
    from ops.quiet_pipe import quiet_when_the_reader_leaves
    from signal_scenarios import self_test

    quiet_when_the_reader_leaves()
    sys.exit(self_test(sys.stdout))
