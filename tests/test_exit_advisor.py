"""The exit advisor against the fake Messages API with the real anthropic SDK; the consult gate; costs."""
from __future__ import annotations

import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from anthropic import AsyncAnthropic

from core.clock import SimClock
from config.settings import ModelSpec, Models, MonitorSettings, SignalThresholds
from core.costs import Usage, cost_usd
from data.calendar import MarketCalendar
from engine.exit_advisor import (
    EXIT_DECISION_TOOL,
    MAX_REASON_WORDS,
    AdviceFailure,
    AdviceRequest,
    AdviceSource,
    ConsultGate,
    HaikuAdvisor,
    RulesAdvisor,
)
from core.instruments import Market, PositionSide
from signals import ExitAction, PositionView, Signal, SignalName, Strength
from tests.fakes.fake_anthropic import (
    AUTH_ERROR,
    CREDIT_TOO_LOW,
    OVERLOADED,
    FakeAnthropic,
    forced,
    reply,
    text,
    tool_use,
)

HAIKU = Models().consult
HK = MarketCalendar(Market.HK)
NOW = datetime(2026, 11, 23, 10, 30, tzinfo=HK.tz)
SECRET_KEY = "sk-ant-api03-DO-NOT-LEAK-0123456789abcdef"


def signal(name: SignalName, strength: Strength, detail: str = "test") -> Signal:
    return Signal(name, strength, 0.0, 0.0, detail)


TWO_MODERATE = (signal(SignalName.BELOW_VWAP, Strength.MODERATE, "price 99.00 2.10% below VWAP 101.12"),
                signal(SignalName.MACD_BEARISH_CROSS, Strength.MODERATE, "MACD crossed under its signal line"))
ONE_MODERATE = (signal(SignalName.VOLUME_DYING, Strength.MODERATE, "volume rate 35% of entry < 40%"),)


def a_position() -> PositionView:
    return PositionView(symbol="HK.00700", side=PositionSide.LONG, quantity=100, entry_price=Decimal("400"),
                        entry_time=datetime(2026, 11, 23, 9, 45, tzinfo=HK.tz), stop_price=Decimal("390"),
                        target_price=Decimal("420"), high_watermark=Decimal("404"), entry_volume_rate=1000.0)


def a_request(signals=TWO_MODERATE) -> AdviceRequest:
    return AdviceRequest.build(a_position(), Decimal("401.2"), NOW, HK.session_at(NOW), signals)


def advisor(client, timeout: float = 5.0) -> HaikuAdvisor:
    return HaikuAdvisor(client, HAIKU, timeout_seconds=timeout)


# --- answers ----------------------------------------------------------------------------------------
async def test_exit_answer_exits(fake_anthropic, anthropic_client):
    fake_anthropic.script(forced({"decision": "EXIT", "reason": "Momentum fading below VWAP", "confidence": 0.8}))
    advice = await advisor(anthropic_client).advise(a_request())
    assert advice.decision is ExitAction.EXIT and advice.ok and advice.error is None
    assert advice.source is AdviceSource.HAIKU
    assert advice.reason == "Momentum fading below VWAP" and advice.confidence == 0.8


async def test_hold_answer_holds(fake_anthropic, anthropic_client):
    fake_anthropic.script(forced({"decision": "HOLD", "reason": "Trend intact", "confidence": 0.6}))
    advice = await advisor(anthropic_client).advise(a_request())
    assert advice.decision is ExitAction.HOLD and advice.ok and advice.failure is None


async def test_request_forces_the_exit_decision_tool(fake_anthropic, anthropic_client):
    fake_anthropic.script(forced({"decision": "HOLD", "reason": "ok", "confidence": 0.5}))
    await advisor(anthropic_client).advise(a_request())
    body = fake_anthropic.last_request
    assert body["tool_choice"] == {"type": "tool", "name": "exit_decision"}
    assert body["tools"] == [EXIT_DECISION_TOOL]
    schema = body["tools"][0]["input_schema"]
    assert schema["properties"]["decision"]["enum"] == ["EXIT", "HOLD"]
    assert schema["required"] == ["decision", "reason", "confidence"]
    assert body["model"] == HAIKU.name and body["max_tokens"] == HAIKU.max_tokens
    assert "EXIT" in body["system"] and "HOLD" in body["system"]
    [message] = body["messages"]
    assert message["role"] == "user"
    for fact in ("HK.00700", "P&L +0.30%", "below_vwap MODERATE", "macd_bearish_cross MODERATE", "Held 45 min",
                 "min of trading left"):
        assert fact in message["content"]
    assert fake_anthropic.headers[-1]["authorization"] == "Bearer test"


async def test_reason_over_twenty_words_is_cut_not_refused(fake_anthropic, anthropic_client):
    long_reason = " ".join(f"word{i}" for i in range(30))
    fake_anthropic.script(forced({"decision": "EXIT", "reason": long_reason, "confidence": 0.9}))
    advice = await advisor(anthropic_client).advise(a_request())
    assert advice.ok and advice.decision is ExitAction.EXIT
    words = advice.reason.split()
    assert words[:MAX_REASON_WORDS] == long_reason.split()[:MAX_REASON_WORDS]
    assert words[MAX_REASON_WORDS:] == ["[cut]"]


# --- failures become HOLD ---------------------------------------------------------------------------
async def test_an_answer_slower_than_the_timeout_holds(fake_anthropic, anthropic_client):
    fake_anthropic.script(forced({"decision": "EXIT", "reason": "late", "confidence": 0.9}, delay=3.0))
    started = time.monotonic()
    advice = await advisor(anthropic_client, timeout=0.3).advise(a_request())
    assert time.monotonic() - started < 2.0
    assert advice.decision is ExitAction.HOLD and not advice.ok
    assert advice.failure is AdviceFailure.TIMEOUT and "0.3 s" in advice.error
    assert advice.usage is None and advice.cost_usd == 0


@pytest.mark.parametrize("turn, expected", [
    (reply(text("I would exit here.")), "no exit_decision tool call"),
    (reply(tool_use("other_tool", {"decision": "EXIT"})), "no exit_decision tool call"),
    (forced({"decision": "MAYBE", "reason": "unsure", "confidence": 0.5}), "'MAYBE' is not EXIT or HOLD"),
    (forced({"decision": "exit", "reason": "lower case", "confidence": 0.5}), "'exit' is not EXIT or HOLD"),
    (forced({"decision": "EXIT", "confidence": 0.5}), "reason missing"),
    (forced({"decision": "EXIT", "reason": "sure", "confidence": 1.5}), "confidence 1.5"),
    (forced({"decision": "EXIT", "reason": "sure", "confidence": "high"}), "confidence 'high'"),
])
async def test_malformed_answers_hold(fake_anthropic, anthropic_client, turn, expected):
    fake_anthropic.script(turn)
    advice = await advisor(anthropic_client).advise(a_request())
    assert advice.decision is ExitAction.HOLD and not advice.ok
    assert advice.failure is AdviceFailure.MALFORMED
    assert expected in advice.error
    # The call was made and billed: its cost is still accounted.
    assert advice.usage is not None and advice.cost_usd > 0


async def test_authentication_error_holds_without_leaking_the_key(fake_anthropic):
    client = AsyncAnthropic(base_url=fake_anthropic.base_url, api_key=SECRET_KEY, max_retries=0)
    try:
        advice = await advisor(client).advise(a_request())
    finally:
        await client.close()
    assert advice.decision is ExitAction.HOLD and not advice.ok
    assert advice.failure is AdviceFailure.AUTH
    assert "401" in advice.error and "AuthenticationError" in advice.error
    assert SECRET_KEY not in advice.error and SECRET_KEY not in repr(advice)
    assert fake_anthropic.headers[-1]["authorization"] == f"Bearer {SECRET_KEY}"   # it was really sent


async def test_a_key_echoed_in_an_error_is_redacted(fake_anthropic):
    client = AsyncAnthropic(base_url=fake_anthropic.base_url, api_key="test", max_retries=0)
    fake_anthropic.inject((400, "invalid_request_error", "bad request for key test-in-message"))
    # The fake's key is "test": pretend a server echoed it. The advisor must not repeat it.
    try:
        advice = await advisor(client).advise(a_request())
    finally:
        await client.close()
    assert not advice.ok and "test" not in advice.error.replace("[redacted]", "")


@pytest.mark.parametrize("err, failure, needle", [
    (AUTH_ERROR, AdviceFailure.AUTH, "HTTP 401"),
    (CREDIT_TOO_LOW, AdviceFailure.CREDIT, "credit balance is too low"),
    (OVERLOADED, AdviceFailure.API_ERROR, "HTTP 529"),
])
async def test_api_errors_hold(fake_anthropic, anthropic_client, err, failure, needle):
    fake_anthropic.inject(err)
    advice = await advisor(anthropic_client).advise(a_request())
    assert advice.decision is ExitAction.HOLD and not advice.ok
    assert advice.failure is failure and needle in advice.error
    assert advice.cost_usd == 0


async def test_unreachable_server_holds():
    fake = FakeAnthropic().start()
    url = fake.base_url
    fake.stop()
    client = AsyncAnthropic(base_url=url, api_key="test", max_retries=0)
    try:
        advice = await advisor(client).advise(a_request())
    finally:
        await client.close()
    assert advice.decision is ExitAction.HOLD and not advice.ok and advice.failure is AdviceFailure.API_ERROR


# --- cost ---------------------------------------------------------------------------------------------
async def test_usage_gives_the_exact_cost(fake_anthropic, anthropic_client):
    usage = {"input_tokens": 1234, "output_tokens": 56, "cache_creation_input_tokens": 100,
             "cache_read_input_tokens": 2000}
    fake_anthropic.script(forced({"decision": "HOLD", "reason": "fine", "confidence": 0.5}, usage=usage))
    advice = await advisor(anthropic_client).advise(a_request())
    assert advice.usage == Usage(1234, 56, 100, 2000)
    # Haiku: 1 / 5 / 1.25 / 0.10 USD per million: 1234 + 280 + 125 + 200 = 1839 micro-dollars.
    assert advice.cost_usd == Decimal("0.001839")


async def test_cost_follows_the_usage_the_server_reported(fake_anthropic, anthropic_client):
    fake_anthropic.script(forced({"decision": "HOLD", "reason": "fine", "confidence": 0.5}, output_tokens=40))
    advice = await advisor(anthropic_client).advise(a_request())
    reported = fake_anthropic.responses[-1]["usage"]
    assert advice.usage == Usage(reported["input_tokens"], 40, reported["cache_creation_input_tokens"],
                                 reported["cache_read_input_tokens"])
    assert advice.cost_usd == (Decimal(reported["input_tokens"]) * 1 + 40 * 5) / Decimal(1_000_000)


def test_usage_from_a_response_with_no_cache_fields():
    class SdkUsage:  # what anthropic.types.Usage looks like when caching is not used
        input_tokens, output_tokens = 10, 3
        cache_creation_input_tokens = None
        cache_read_input_tokens = None

    assert Usage.from_anthropic(SdkUsage()) == Usage(10, 3, 0, 0)
    assert Usage.from_anthropic({"input_tokens": 7, "output_tokens": 2}) == Usage(7, 2, 0, 0)


def test_cost_is_exact_decimal_for_each_price():
    spec = ModelSpec(name="m", input_per_mtok=Decimal("3"), output_per_mtok=Decimal("15"),
                     cache_write_per_mtok=Decimal("3.75"), cache_read_per_mtok=Decimal("0.30"))
    assert cost_usd(Usage(1_000_000, 0, 0, 0), spec) == Decimal("3")
    assert cost_usd(Usage(0, 1, 0, 0), spec) == Decimal("0.000015")
    assert cost_usd(Usage(0, 0, 3, 0), spec) == Decimal("0.00001125")
    assert cost_usd(Usage(0, 0, 0, 7), spec) == Decimal("0.0000021")
    total = sum((cost_usd(Usage(1, 1, 1, 1), spec) for _ in range(1000)), Decimal(0))
    assert total == cost_usd(Usage(1000, 1000, 1000, 1000), spec) == Decimal("0.02205")


def test_usage_adds_up_and_refuses_nonsense():
    assert Usage(1, 2, 3, 4) + Usage(10, 20, 30, 40) == Usage(11, 22, 33, 44)
    with pytest.raises(ValueError):
        Usage(-1, 0, 0, 0)


# --- simulated clock ----------------------------------------------------------------------------------
def test_consult_under_the_simulated_clock_does_not_time_out_spuriously(fake_anthropic):
    """The virtual loop jumps to the next timer when idle; the HTTP call must count as I/O."""
    clock = SimClock(NOW)
    fake_anthropic.script(forced({"decision": "EXIT", "reason": "fading", "confidence": 0.7}, delay=0.2))

    async def consult():
        client = AsyncAnthropic(base_url=fake_anthropic.base_url, api_key="test", max_retries=0)
        try:
            return await advisor(client, timeout=10).advise(a_request())
        finally:
            await client.close()

    advice = clock.run(consult())
    assert advice.ok and advice.decision is ExitAction.EXIT
    assert clock.now() - NOW < timedelta(seconds=10)


# --- rules --------------------------------------------------------------------------------------------
async def test_rules_advisor_exits_on_two_moderate():
    advice = await RulesAdvisor(SignalThresholds()).advise(a_request(TWO_MODERATE))
    assert advice.decision is ExitAction.EXIT and advice.source is AdviceSource.RULES
    assert advice.ok and advice.cost_usd == 0 and advice.usage is None


async def test_rules_advisor_holds_on_one_moderate():
    advice = await RulesAdvisor(SignalThresholds()).advise(a_request(ONE_MODERATE))
    assert advice.decision is ExitAction.HOLD and advice.source is AdviceSource.RULES


def test_advice_request_measures_the_position():
    request = a_request()
    assert request.pnl_pct == Decimal("0.3")
    assert request.minutes_held == 45
    assert request.minutes_to_close == 90 + 180   # trading minutes: lunch not counted


# --- consult gate ---------------------------------------------------------------------------------
def gate() -> ConsultGate:
    return ConsultGate.from_settings(MonitorSettings())


def test_gate_refuses_the_eleventh_consult():
    g = gate()
    t = NOW
    for i in range(10):
        signals = (signal(SignalName.BELOW_VWAP, Strength.MODERATE, str(i)),) if i % 2 else ONE_MODERATE
        allowed, why = g.may_consult(t, signals)
        assert allowed, (i, why)
        g.record(t, signals)
        t += timedelta(minutes=16)
    allowed, why = g.may_consult(t + timedelta(hours=1), TWO_MODERATE)
    assert not allowed and "10 of 10" in why and g.exhausted


def test_gate_refuses_the_same_signals_within_fifteen_minutes():
    g = gate()
    g.record(NOW, TWO_MODERATE)
    allowed, why = g.may_consult(NOW + timedelta(minutes=14, seconds=59), TWO_MODERATE)
    assert not allowed and "same signals" in why and not g.exhausted
    assert g.may_consult(NOW + timedelta(minutes=15), TWO_MODERATE)[0]


def test_gate_allows_a_consult_when_the_signals_changed():
    g = gate()
    g.record(NOW, TWO_MODERATE)
    stronger = TWO_MODERATE + (signal(SignalName.MARKET_CLOSE, Strength.MODERATE),)
    allowed, why = g.may_consult(NOW + timedelta(minutes=1), stronger)
    assert allowed and "changed" in why
    # A change of strength is a change too.
    weaker = (signal(SignalName.BELOW_VWAP, Strength.WEAK), TWO_MODERATE[1])
    assert g.may_consult(NOW + timedelta(minutes=1), weaker)[0]


def test_gate_ignores_signal_details_and_order():
    g = gate()
    g.record(NOW, TWO_MODERATE)
    same = (signal(SignalName.MACD_BEARISH_CROSS, Strength.MODERATE, "new numbers"),
            signal(SignalName.BELOW_VWAP, Strength.MODERATE, "new numbers"))
    assert not g.may_consult(NOW + timedelta(minutes=5), same)[0]


def test_gate_with_no_calls_allowed_is_exhausted_from_the_start():
    g = ConsultGate.from_settings(MonitorSettings(haiku_max_calls_per_position=0))
    assert g.exhausted and not g.may_consult(NOW, TWO_MODERATE)[0]


# --- the fake honours tool_choice like the real API -----------------------------------------------
async def test_fake_refuses_a_forced_tool_that_does_not_exist(fake_anthropic, anthropic_client):
    import anthropic

    with pytest.raises(anthropic.BadRequestError, match="not found in tools"):
        await anthropic_client.messages.create(
            model=HAIKU.name, max_tokens=16, tools=[EXIT_DECISION_TOOL],
            tool_choice={"type": "tool", "name": "nope"}, messages=[{"role": "user", "content": "x"}])


async def test_fake_accounts_prompt_caching_like_the_api(fake_anthropic, anthropic_client):
    system = [{"type": "text", "text": "policy " * 3000, "cache_control": {"type": "ephemeral"}}]
    fake_anthropic.script([reply(text("one")), reply(text("two"))])
    first = await anthropic_client.messages.create(model=HAIKU.name, max_tokens=16, system=system,
                                                   messages=[{"role": "user", "content": "a"}])
    second = await anthropic_client.messages.create(model=HAIKU.name, max_tokens=16, system=system,
                                                    messages=[{"role": "user", "content": "b"}])
    assert first.usage.cache_creation_input_tokens > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert Usage.from_anthropic(second.usage).cache_read_tokens == second.usage.cache_read_input_tokens
