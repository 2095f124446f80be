"""The "EXIT or HOLD?" seam the monitor calls on ASK_HAIKU, and the bookkeeping around it.

* ``ExitAdvisor`` (protocol): ``await advise(request) -> Advice``. The monitor does not know who
  answers.
* ``RulesAdvisor``: the rules alone (``signals.decide`` with ``advisor_available=False``): EXIT on
  enough MODERATE signals, else HOLD. Free, never fails.
* ``HaikuAdvisor``: one Messages API call with a forced tool call ``exit_decision``
  ``{decision: EXIT|HOLD, reason, confidence}``. It never raises: a timeout, an API error (any
  exception) or a malformed answer gives HOLD with ``ok=False`` and the error text, which never
  contains the API key. A reason longer than 20 words is cut to its first 20 words and the answer
  still counts (the decision itself is what matters; the cut is noted in the reason). Usage and
  cost are reported whenever a response arrived, malformed or not: that money was spent.
* ``ConsultGate``: per position, at most ``haiku_max_calls_per_position`` consults, and none within
  ``haiku_min_interval_minutes`` of the previous one unless the set of (signal, strength) changed.

The HTTP call is marked as external I/O (``clock.io``): under the simulated clock no virtual time
passes while it is in flight (without that mark the virtual loop would jump straight to the deadline
and every consult in a replay would "time out" at once). Its timeout is real seconds on either clock
(``clock.io(..., timeout=)``), so a consult that hangs ends a replay's wait too.
"""
from __future__ import annotations

import asyncio
import enum
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:  # annotations only; the SDK itself is imported where a call is made
    import anthropic

from core.clock import io
from config.settings import ModelSpec, MonitorSettings, SignalThresholds
from core.costs import Usage, cost_usd
from data.calendar import Session
from signals import ExitAction, PositionView, Signal, decide, minutes_held, pnl_pct

TOOL_NAME = "exit_decision"
MAX_REASON_WORDS = 20
ZERO = Decimal(0)

EXIT_DECISION_TOOL: dict[str, Any] = {
    "name": TOOL_NAME,
    "description": "Give your decision for this open position: EXIT now or HOLD it.",
    "input_schema": {
        "type": "object",
        "properties": {
            "decision": {"type": "string", "enum": [ExitAction.EXIT.value, ExitAction.HOLD.value]},
            "reason": {"type": "string", "description": f"why, in at most {MAX_REASON_WORDS} words"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["decision", "reason", "confidence"],
        "additionalProperties": False,
    },
}

SYSTEM_PROMPT = (
    "You are the exit advisor of an intraday trading agent. Rule-based exit signals on an open "
    "position are ambiguous. Decide whether to EXIT now or HOLD. Prefer protecting capital; hold "
    "only if the trade still has a reason to work before the session ends. Answer only by calling "
    f"the {TOOL_NAME} tool, with a reason of at most {MAX_REASON_WORDS} words."
)


class AdviceSource(str, enum.Enum):
    RULES = "rules"
    HAIKU = "haiku"


class AdviceFailure(str, enum.Enum):
    """Why an advice fell back to HOLD. AUTH and CREDIT will not heal by retrying."""

    TIMEOUT = "timeout"
    AUTH = "auth"
    CREDIT = "credit"
    API_ERROR = "api_error"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class AdviceRequest:
    position: PositionView
    price: Decimal
    pnl_pct: Decimal
    signals: tuple[Signal, ...]
    minutes_held: float
    minutes_to_close: float | None

    @classmethod
    def build(cls, position: PositionView, price: Decimal, now: datetime, session: Session | None,
              signals: Sequence[Signal]) -> "AdviceRequest":
        return cls(
            position=position,
            price=price,
            pnl_pct=pnl_pct(position, price),
            signals=tuple(signals),
            minutes_held=minutes_held(position.entry_time, now, session),
            minutes_to_close=session.minutes_to_close(now) if session is not None else None,
        )


@dataclass(frozen=True)
class Advice:
    decision: ExitAction
    reason: str
    confidence: float
    source: AdviceSource
    ok: bool = True
    error: str | None = None
    usage: Usage | None = None
    cost_usd: Decimal = ZERO
    failure: AdviceFailure | None = None

    def __post_init__(self) -> None:
        if self.decision not in (ExitAction.EXIT, ExitAction.HOLD):
            raise ValueError(f"advice must be EXIT or HOLD, got {self.decision!r}")


class ExitAdvisor(Protocol):
    async def advise(self, request: AdviceRequest) -> Advice: ...


# --- Rules ----------------------------------------------------------------------------------------
class RulesAdvisor:
    def __init__(self, thresholds: SignalThresholds) -> None:
        self._thresholds = thresholds

    async def advise(self, request: AdviceRequest) -> Advice:
        decision = decide(request.signals, self._thresholds, advisor_available=False)
        return Advice(decision.action, decision.reasons[0], decision.confidence, AdviceSource.RULES)


# --- Haiku ----------------------------------------------------------------------------------------
class MalformedAnswer(ValueError):
    pass


class HaikuAdvisor:
    def __init__(self, client: anthropic.AsyncAnthropic, spec: ModelSpec, timeout_seconds: float) -> None:
        self._client = client
        self._spec = spec
        self._timeout = timeout_seconds

    async def advise(self, request: AdviceRequest) -> Advice:
        import anthropic  # here, not at the top: a rules brain never loads the SDK (44 MB, seconds)
        try:
            response = await io(self._create(request), timeout=self._timeout)  # real seconds on either clock
        except (asyncio.TimeoutError, anthropic.APITimeoutError):
            return self._hold(f"Haiku did not answer within {self._timeout:g} s", AdviceFailure.TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure of the consult means HOLD, never a crash
            return self._hold(self._describe(exc), _failure_kind(exc))
        usage = _usage_of(response)
        cost = cost_usd(usage, self._spec) if usage is not None else ZERO
        try:
            decision, reason, confidence = parse_answer(response)
        except MalformedAnswer as exc:
            return self._hold(f"malformed answer: {exc}", AdviceFailure.MALFORMED, usage, cost)
        return Advice(decision, reason, confidence, AdviceSource.HAIKU, usage=usage, cost_usd=cost)

    def _create(self, request: AdviceRequest):
        return self._client.messages.create(
            model=self._spec.name,
            max_tokens=self._spec.max_tokens,
            system=SYSTEM_PROMPT,
            tools=[EXIT_DECISION_TOOL],
            tool_choice={"type": "tool", "name": TOOL_NAME},
            messages=[{"role": "user", "content": render_request(request)}],
        )

    def _hold(self, error: str, failure: AdviceFailure, usage: Usage | None = None, cost: Decimal = ZERO) -> Advice:
        return Advice(ExitAction.HOLD, f"advisor failed ({failure.value}); holding", 0.0, AdviceSource.HAIKU,
                      ok=False, error=self._redact(error), usage=usage, cost_usd=cost, failure=failure)

    def _describe(self, exc: BaseException) -> str:
        import anthropic  # here, not at the top: a rules brain never loads the SDK (44 MB, seconds)
        if isinstance(exc, anthropic.APIStatusError):
            return f"{type(exc).__name__} (HTTP {exc.status_code}): {_api_message(exc)}"
        return f"{type(exc).__name__}: {exc}"

    def _redact(self, text: str) -> str:
        key = getattr(self._client, "api_key", None)
        if key and len(key) >= 4:
            text = text.replace(key, "[redacted]")
        return text


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return exc.message


def _failure_kind(exc: BaseException) -> AdviceFailure:
    import anthropic  # here, not at the top: a rules brain never loads the SDK (44 MB, seconds)
    if isinstance(exc, (anthropic.AuthenticationError, anthropic.PermissionDeniedError)):
        return AdviceFailure.AUTH
    if isinstance(exc, anthropic.BadRequestError) and "credit balance" in _api_message(exc).lower():
        return AdviceFailure.CREDIT
    return AdviceFailure.API_ERROR


def _usage_of(response: Any) -> Usage | None:
    try:
        return Usage.from_anthropic(getattr(response, "usage", None))
    except (TypeError, ValueError):
        return None


def parse_answer(response: Any) -> tuple[ExitAction, str, float]:
    """(decision, reason, confidence) from the ``exit_decision`` tool call, or ``MalformedAnswer``."""
    blocks = [b for b in getattr(response, "content", None) or []
              if getattr(b, "type", None) == "tool_use" and getattr(b, "name", None) == TOOL_NAME]
    if not blocks:
        kinds = [getattr(b, "type", "?") for b in getattr(response, "content", None) or []]
        raise MalformedAnswer(f"no {TOOL_NAME} tool call in the answer (blocks: {kinds})")
    answer = blocks[0].input
    if not isinstance(answer, dict):
        raise MalformedAnswer(f"tool input is not an object: {_raw(answer)}")
    decision = answer.get("decision")
    if decision not in (ExitAction.EXIT.value, ExitAction.HOLD.value):
        raise MalformedAnswer(f"decision {decision!r} is not EXIT or HOLD; raw: {_raw(answer)}")
    reason = answer.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise MalformedAnswer(f"reason missing or not text; raw: {_raw(answer)}")
    confidence = answer.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 <= confidence <= 1:
        raise MalformedAnswer(f"confidence {confidence!r} is not a number from 0 to 1; raw: {_raw(answer)}")
    return ExitAction(decision), _clip_words(reason), float(confidence)


def _clip_words(reason: str) -> str:
    words = reason.split()
    if len(words) <= MAX_REASON_WORDS:
        return " ".join(words)
    return " ".join(words[:MAX_REASON_WORDS]) + " [cut]"


def _raw(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def render_request(request: AdviceRequest) -> str:
    """The compact user message: the position, the numbers and the signals, one fact a line."""
    p = request.position
    lines = [
        f"Position: {p.side.value} {p.quantity} {p.symbol} @ {p.entry_price}, now {request.price} "
        f"(P&L {request.pnl_pct:+.2f}%), best since entry {p.high_watermark}",
        f"Stop: {p.stop_price if p.stop_price is not None else 'none'}; "
        f"target: {p.target_price if p.target_price is not None else 'none'}",
        f"Held {request.minutes_held:.0f} min; "
        + (f"{request.minutes_to_close:.0f} min of trading left today"
           if request.minutes_to_close is not None else "session time left unknown"),
        "Signals:",
        *(f"- {s.name.value} {s.strength.name}: {s.detail}" for s in request.signals),
        "EXIT or HOLD?",
    ]
    return "\n".join(lines)


# --- Consult gate ---------------------------------------------------------------------------------
SignalSet = frozenset[tuple[str, str]]


def signal_set(signals: Sequence[Signal]) -> SignalSet:
    return frozenset((s.name.value, s.strength.value) for s in signals)


@dataclass
class ConsultGate:
    """Per-position consult limits. One gate per position, for the position's whole life."""

    max_calls: int
    min_interval: timedelta
    calls: int = 0
    last_at: datetime | None = None
    last_signals: SignalSet | None = field(default=None)

    @classmethod
    def from_settings(cls, settings: MonitorSettings) -> "ConsultGate":
        return cls(settings.haiku_max_calls_per_position, timedelta(minutes=settings.haiku_min_interval_minutes))

    @property
    def exhausted(self) -> bool:
        """The cap is reached: from now on the rules decide (``advisor_available=False``)."""
        return self.calls >= self.max_calls

    def may_consult(self, now: datetime, signals: Sequence[Signal]) -> tuple[bool, str]:
        if self.exhausted:
            return False, f"consult cap reached: {self.calls} of {self.max_calls} calls used for this position"
        if self.last_at is None:
            return True, "first consult for this position"
        if signal_set(signals) != self.last_signals:
            return True, "signals changed since the last consult"
        since = now - self.last_at
        if since < self.min_interval:
            wait = (self.min_interval - since).total_seconds() / 60
            return False, (f"same signals as the consult {since.total_seconds() / 60:.1f} min ago; "
                           f"next allowed in {wait:.1f} min")
        return True, f"{since.total_seconds() / 60:.1f} min since the last consult"

    def record(self, now: datetime, signals: Sequence[Signal]) -> None:
        self.calls += 1
        self.last_at = now
        self.last_signals = signal_set(signals)
