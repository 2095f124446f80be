"""The exit engine as a trader sees it: when positions are sold, at what price, and what is recorded.

Every test runs the real ``PositionExecutor`` against the paper exchange replaying hand-built
1-minute bars on a simulated clock (``tests/monitor_harness.py``), a fresh embedded-PostgreSQL
database for the trading and Big Bro tables, MarketData for the technicals, and, for the consults,
``HaikuAdvisor`` with the real ``AsyncAnthropic`` against the fake Messages API.

Prices: HK stocks around HKD 80 (tick 0.05, one tick of spread: a last price of 80.00 quotes
79.95 / 80.05). Every entry is a market buy of 100 shares at 10:00 unless said otherwise, so the
entry price is 80.05.
"""
from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from anthropic import AsyncAnthropic

from brokers.base import OrderStatus
from core.clock import SimClock
from data.calendar import SessionState
from engine.exit_advisor import HaikuAdvisor
from position_monitor import MonitorManager
from signals import ExitReason
from tests.fakes.fake_anthropic import forced, reply, text
from tests.monitor_harness import (
    CALENDAR, OWNER, FlakyTechnicals, Harness, hk_profile, hk_series, hkt, outbox_events, refuse_orders,
)

DAY = date(2026, 11, 23)        # a normal Monday: 09:30-12:00, 13:00-16:00 HKT
HALF_DAY = date(2026, 12, 24)   # Christmas Eve: morning only, close 12:00 HKT
ENTRY = Decimal("80.05")        # the ask when the last price is 80.00
ONE_HUNDRED = 100


def simulate(start: datetime, scenario):
    """Run ``scenario(clock)`` on a simulated clock starting at ``start``."""
    clock = SimClock(start)
    return clock.run(scenario(clock))


def assert_only_in_continuous_trading(times: list[datetime]) -> None:
    for t in times:
        assert CALENDAR.state(t) is SessionState.OPEN, f"traded at {CALENDAR.local(t):%Y-%m-%d %H:%M:%S} HKT, outside continuous trading"


def cost_of(usage: dict) -> Decimal:
    """claude-haiku-4-5 prices per million tokens: input 1, output 5, cache write 1.25, cache read 0.10."""
    return (Decimal(usage["input_tokens"]) * 1 + Decimal(usage["output_tokens"]) * 5
            + Decimal(usage.get("cache_creation_input_tokens") or 0) * Decimal("1.25")
            + Decimal(usage.get("cache_read_input_tokens") or 0) * Decimal("0.10")) / Decimal(1_000_000)


# --- Price rules: the guard acts on the quote itself ---------------------------------------------------
def test_a_gap_down_through_the_stop_exits_at_the_first_price_after_the_gap(database_url, tmp_path):
    # 80.00 all morning; the 10:30 bar opens at 77.00 (through the 78.00 stop) and keeps falling to
    # 76.00 fifteen seconds later: only a reaction on the gap quote itself gets 76.95.
    series = hk_series("08001", DAY, levels=[("09:30", 80.0), ("10:31", 76.5)],
                       bars={"10:30": (77.0, 77.0, 76.0, 76.5)})
    gap = hkt(DAY, "10:30")

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("78.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:00"))
            return (h.bid_at(series.symbol, gap), outcome, await h.exit_orders(series.symbol),
                    await h.sells(series.symbol), await h.store.position(position.position_id),
                    await h.held(series.symbol))
        finally:
            await h.close()

    gap_bid, outcome, exits, sells, booked, held = simulate(hkt(DAY, "10:00"), scenario)

    assert gap_bid == Decimal("76.95")
    assert len(exits) == 1 and len(sells) == 1
    assert exits[0].created_at == gap, "the exit order must be placed on the first post-gap quote"
    assert (sells[0].time, sells[0].price, sells[0].quantity) == (gap, gap_bid, ONE_HUNDRED)
    assert outcome.stop_reaction_seconds == [0.0]
    assert booked.status == "closed" and booked.exit_reason == ExitReason.STOP_LOSS.value
    assert booked.exit_price == gap_bid and booked.exit_time == gap
    expected_pnl = (gap_bid - ENTRY) * ONE_HUNDRED - booked.entry_fees - booked.exit_fees
    assert booked.realized_pnl == expected_pnl.quantize(Decimal("0.0001")) < 0
    assert held == 0


def _rise_then_give_back() -> list[tuple[str, float]]:
    # From 80.00, a zig-zag rise (up 0.45, down 0.20 a minute: RSI stays below the STRONG 85) to
    # 83.30 at 10:17 (+4.06% over the 80.05 entry), flat, then down 0.50 a minute from 10:40.
    levels, price = [("09:30", 80.0)], 80.0
    for minute in range(1, 17):
        price += 0.45 if minute % 2 else -0.20
        levels.append((f"10:{minute:02d}", round(price * 20) / 20))
    levels.append(("10:17", 83.30))
    for i, price in enumerate([82.80, 82.30, 81.80, 81.30, 80.80, 80.30, 79.80], start=1):
        levels.append((f"10:{40 + i:02d}", price))
    return levels


def test_a_rise_of_4pct_then_a_give_back_of_3pct_exits_on_the_trailing_stop(database_url, tmp_path):
    series = hk_series("08002", DAY, levels=_rise_then_give_back())
    # 83.30 x 0.97 = 80.80: the 10:45 minute is the first at or below it.
    first_at_3pct = hkt(DAY, "10:45")

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:30"))
            return (outcome, await h.sells(series.symbol), await h.store.position(position.position_id),
                    await h.status_row(position.position_id), h.bid_at(series.symbol, first_at_3pct))
        finally:
            await h.close()

    outcome, sells, booked, row, bid = simulate(hkt(DAY, "10:00"), scenario)

    assert booked.exit_reason == ExitReason.TRAILING_STOP.value, f"exited on {booked.exit_reason} ({outcome})"
    assert [(s.time, s.price) for s in sells] == [(first_at_3pct, bid)] and bid == Decimal("80.75")
    assert booked.realized_pnl > 0, "the trailing stop keeps part of the gain"
    assert row["high_watermark"] == Decimal("83.30")
    assert outcome.stop_reaction_seconds == [0.0]


# --- The clock: lunch, the close, half days ---------------------------------------------------------------
@pytest.mark.parametrize("day, opened, first_exit_moment, stop_of_trading, reason", [
    (DAY, "11:00", "11:50:15", "12:00", ExitReason.LUNCH_BREAK),        # < 10 min to the lunch break
    (DAY, "15:20", "15:50:15", "16:00", ExitReason.MARKET_CLOSE),       # < 10 min to the close
    (HALF_DAY, "11:00", "11:50:15", "12:00", ExitReason.MARKET_CLOSE),  # the half day closes at 12:00
], ids=["open-at-1150-before-lunch", "open-at-1550-before-the-close", "half-day-2026-12-24"])
def test_a_position_still_open_near_the_break_or_the_close_is_sold_in_time(
        database_url, tmp_path, day, opened, first_exit_moment, stop_of_trading, reason):
    series = hk_series("08004", day, levels=[("09:30", 80.0)])
    hh, mm, ss = map(int, first_exit_moment.split(":"))
    expected = hkt(day, f"{hh:02d}:{mm:02d}", ss)

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=CALENDAR.session(day).close + timedelta(minutes=30))
            return outcome, await h.sells(series.symbol), await h.store.position(position.position_id), await h.held(series.symbol)
        finally:
            await h.close()

    outcome, sells, booked, held = simulate(hkt(day, opened), scenario)

    assert len(sells) == 1 and held == 0
    assert sells[0].time == expected < hkt(day, stop_of_trading)
    assert_only_in_continuous_trading([s.time for s in sells])
    assert booked.exit_reason == reason.value and booked.exit_time == expected


def test_holding_through_lunch_keeps_the_lease_and_sells_at_the_first_afternoon_price(database_url, tmp_path):
    # The profile holds through lunch. The stock closes the morning at 80.00 and reopens at 77.00,
    # through the 78.00 stop: nothing can be sold at lunch; the first afternoon quote sells it.
    series = hk_series("08005", DAY, levels=[("09:30", 80.0), ("13:00", 77.0)])
    reopen = hkt(DAY, "13:00")
    seen: dict[str, object] = {}

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl",
                                profile=hk_profile(hold_through_lunch=True))
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("78.00"))

            async def at_half_past_twelve():
                seen["unwatched"] = [p.position_id for p in await h.store.unwatched_open_positions(clock.now())]
                seen["sells"] = len(await h.sells(series.symbol))
            h.at(hkt(DAY, "12:30"), at_half_past_twelve)
            outcome = await h.run_monitor(position, until=hkt(DAY, "14:00"))
            return outcome, await h.sells(series.symbol), await h.store.position(position.position_id), h.bid_at(series.symbol, reopen)
        finally:
            await h.close()

    outcome, sells, booked, bid = simulate(hkt(DAY, "11:40"), scenario)

    assert seen["sells"] == 0
    assert seen["unwatched"] == [], "the monitor sleeping through lunch let its lease lapse: another run would adopt the position"
    assert [(s.time, s.price) for s in sells] == [(reopen, bid)] and bid == Decimal("76.95")
    assert booked.exit_reason == ExitReason.STOP_LOSS.value
    assert outcome.stop_reaction_seconds == [0.0]


def test_a_monitor_started_after_the_close_sells_nothing_and_says_the_position_is_still_open(database_url, tmp_path):
    series = hk_series("08006", DAY, levels=[("09:30", 80.0), ("15:50", 75.0)])

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("78.00"))
            await clock.sleep_until(hkt(DAY, "16:05"))  # the monitor is adopted after the close
            outcome = await h.run_monitor(position, until=hkt(DAY, "17:00"))
            return (outcome, await h.sells(series.symbol), await h.held(series.symbol),
                    await h.store.position(position.position_id), await h.messages())
        finally:
            await h.close()

    outcome, sells, held, booked, messages = simulate(hkt(DAY, "15:40"), scenario)

    assert sells == [] and held == ONE_HUNDRED and booked.status == "open"
    assert not outcome.closed
    ended = [m for m in messages if m["event"] == "MONITOR_ENDED"]
    assert len(ended) == 1 and ended[0]["data"]["still_open"] is True and ended[0]["priority"] == "high"


# --- Haiku: consults through the real SDK against the fake Messages API -----------------------------------
def _one_moderate_series(code: str):
    # Bought at 80.05 on the 10:00 opening tick; 78.30 everywhere else: P&L -2.19% (stop_loss
    # MODERATE), the stop at 76.00 far away, indicators flat: ASK_HAIKU at every check.
    return hk_series(code, DAY, levels=[("09:30", 78.3)], bars={"10:00": (80.0, 80.0, 78.3, 78.3)})


async def _haiku_harness(database_url, clock, series, fake, tmp_path, profile=None, timeout=10.0):
    client = AsyncAnthropic(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)
    profile = profile or hk_profile()
    advisor = HaikuAdvisor(client, profile.models.consult, timeout)
    h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl",
                            profile=profile, advisor=advisor)
    return h, client


def test_haiku_exit_answer_sells_at_that_check(database_url, tmp_path, fake_anthropic):
    series = _one_moderate_series("08010")
    fake_anthropic.script(forced({"decision": "EXIT", "reason": "losing and no bounce", "confidence": 0.8}))
    first_check = hkt(DAY, "10:05")

    async def scenario(clock):
        h, client = await _haiku_harness(database_url, clock, series, fake_anthropic, tmp_path)
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:30"))
            return (outcome, await h.sells(series.symbol), await h.store.position(position.position_id),
                    await h.messages(), h.bid_at(series.symbol, first_check))
        finally:
            await client.close()
            await h.close()

    outcome, sells, booked, messages, bid = simulate(hkt(DAY, "10:00"), scenario)

    assert len(fake_anthropic.requests) == 1
    assert fake_anthropic.requests[0]["tool_choice"] == {"type": "tool", "name": "exit_decision"}
    assert [(s.time, s.price) for s in sells] == [(first_check, bid)]
    assert booked.exit_reason == ExitReason.HAIKU.value and booked.exit_type == "haiku"
    decisions = [m for m in messages if m["event"] == "HAIKU_DECISION"]
    assert len(decisions) == 1 and decisions[0]["data"]["decision"] == "EXIT"
    assert outcome.haiku_calls == 1


def test_an_unreadable_spend_ledger_stops_the_consults_and_says_so(database_url, tmp_path, fake_anthropic):
    """Without the ledger nobody knows what is left of the budget: no Haiku call, and a recorded
    monitor error instead of a silent "no budget"."""
    from engine.spend import SpendLedger

    series = _one_moderate_series("08037")

    async def scenario(clock):
        h, client = await _haiku_harness(database_url, clock, series, fake_anthropic, tmp_path)
        try:
            h.ctx.spend = SpendLedger(h.store, clock, CALENDAR, Decimal("5"))
            await h.db.execute("ALTER TABLE api_usage RENAME TO api_usage_unreachable")
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:07"))
            await h.db.execute("ALTER TABLE api_usage_unreachable RENAME TO api_usage")
            return outcome, await h.messages()
        finally:
            await client.close()
            await h.close()

    outcome, messages = simulate(hkt(DAY, "10:00"), scenario)

    assert fake_anthropic.requests == [], "no consult without a budget anyone can read"
    errors = [m for m in messages if m["event"] == "MONITOR_ERROR"]
    assert errors and "spend ledger could not be read" in errors[0]["body"] and outcome.errors >= 1


def test_haiku_hold_holds_is_recorded_and_the_same_signals_are_not_asked_again_within_15_minutes(
        database_url, tmp_path, fake_anthropic):
    series = _one_moderate_series("08011")
    fake_anthropic.script([forced({"decision": "HOLD", "reason": "support holds", "confidence": 0.6})] * 3)
    rows: dict[str, dict] = {}

    async def scenario(clock):
        h, client = await _haiku_harness(database_url, clock, series, fake_anthropic, tmp_path)
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))

            def snapshot(label):
                async def take():
                    rows[label] = {"row": await h.status_row(position.position_id),
                                   "requests": len(fake_anthropic.requests)}
                return take
            h.at(hkt(DAY, "10:06"), snapshot("10:06"))
            h.at(hkt(DAY, "10:19", 59), snapshot("10:19:59"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:21"))
            return outcome, await h.sells(series.symbol), await h.messages()
        finally:
            await client.close()
            await h.close()

    outcome, sells, messages = simulate(hkt(DAY, "10:00"), scenario)

    assert sells == [], "a HOLD answer must not sell"
    first = rows["10:06"]["row"]
    assert rows["10:06"]["requests"] == 1
    assert first["haiku_calls"] == 1 and first["decision"] == "ASK_HAIKU"
    assert first["haiku_cost_usd"] == cost_of(fake_anthropic.responses[0]["usage"]) > 0
    # Checks at 10:10 and 10:15 see the same signals: no consult until 15 minutes have passed.
    assert rows["10:19:59"]["requests"] == 1 and rows["10:19:59"]["row"]["checks_completed"] == 3
    assert len(fake_anthropic.requests) == 2
    decisions = [m for m in messages if m["event"] == "HAIKU_DECISION"]
    assert [m["data"]["decision"] for m in decisions] == ["HOLD", "HOLD"]
    assert [m["created_at"] for m in decisions] == [hkt(DAY, "10:05"), hkt(DAY, "10:20")]
    assert decisions[0]["data"]["reason"] == "support holds" and decisions[0]["data"]["ok"] is True
    assert outcome.haiku_calls == 2


def test_haiku_malformed_answer_counts_as_hold_and_is_recorded(database_url, tmp_path, fake_anthropic):
    series = _one_moderate_series("08012")
    fake_anthropic.script(reply(text("I would probably exit here.")))

    async def scenario(clock):
        h, client = await _haiku_harness(database_url, clock, series, fake_anthropic, tmp_path)
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:09"))
            return outcome, await h.sells(series.symbol), await h.messages(), await h.store.monitor_rows()
        finally:
            await client.close()
            await h.close()

    outcome, sells, messages, (row,) = simulate(hkt(DAY, "10:00"), scenario)

    assert sells == [] and len(fake_anthropic.requests) == 1
    decision = next(m for m in messages if m["event"] == "HAIKU_DECISION")
    assert decision["data"]["decision"] == "HOLD" and decision["data"]["ok"] is False
    assert "no exit_decision tool call" in decision["data"]["error"] and decision["priority"] == "high"
    assert row["haiku_calls"] == 1 and row["error_count"] == 1 and "malformed" in row["last_error"]
    assert row["haiku_cost_usd"] == cost_of(fake_anthropic.responses[0]["usage"]) > 0, "the malformed answer was paid for"
    assert any(m["event"] == "MONITOR_ERROR" for m in messages)


def test_haiku_timeout_counts_as_hold_and_is_recorded(database_url, tmp_path, fake_anthropic):
    """The consult timeout is real time (under the simulated clock no time passes during I/O), so
    this one full check runs on an ordinary event loop with the simulated clock standing still."""
    series = _one_moderate_series("08013")
    fake_anthropic.script(forced({"decision": "EXIT", "reason": "too late", "confidence": 0.9}, delay=3.0))
    clock = SimClock(hkt(DAY, "10:00"))

    async def scenario():
        h, client = await _haiku_harness(database_url, clock, series, fake_anthropic, tmp_path, timeout=0.3)
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            monitor = h.monitor(position)
            assert await h.store.claim_monitor(position.position_id, position.symbol, OWNER, clock.now(), 120)
            clock.set(hkt(DAY, "10:05"))
            started = asyncio.get_running_loop().time()
            await monitor._full_check()  # noqa: SLF001 - the unit under test: one full check
            took = asyncio.get_running_loop().time() - started
            return (took, monitor.outcome, await h.sells(series.symbol), await h.messages(),
                    await h.status_row(position.position_id))
        finally:
            await client.close()
            await h.close()

    took, outcome, sells, messages, row = asyncio.run(scenario())

    assert took < 2.0, "the check must give up on Haiku at the timeout, not wait for the answer"
    assert sells == [] and not outcome.closed
    decision = next(m for m in messages if m["event"] == "HAIKU_DECISION")
    assert decision["data"]["decision"] == "HOLD" and decision["data"]["ok"] is False
    assert "did not answer within 0.3 s" in decision["data"]["error"]
    assert row["haiku_calls"] == 1 and row["error_count"] == 1 and row["checks_completed"] == 1
    assert row["decision"] == "ASK_HAIKU" and row["haiku_cost_usd"] == 0


def test_the_eleventh_consult_never_happens_and_the_rules_decide_after_the_cap(database_url, tmp_path, fake_anthropic):
    series = _one_moderate_series("08014")
    fake_anthropic.script([forced({"decision": "HOLD", "reason": "wait", "confidence": 0.5})] * 15)
    # A check every minute and no minimum interval: only the cap of 10 stops the consults.
    profile = hk_profile(check_interval_seconds=60, haiku_min_interval_minutes=0)

    async def scenario(clock):
        h, client = await _haiku_harness(database_url, clock, series, fake_anthropic, tmp_path, profile=profile)
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:30"))
            return outcome, await h.sells(series.symbol), await h.messages(), await h.store.monitor_rows()
        finally:
            await client.close()
            await h.close()

    outcome, sells, messages, (row,) = simulate(hkt(DAY, "10:00"), scenario)

    assert len(fake_anthropic.requests) == 10
    assert outcome.checks >= 25 and outcome.haiku_calls == 10
    assert row["haiku_calls"] == 10
    assert row["haiku_cost_usd"] == sum(cost_of(r["usage"]) for r in fake_anthropic.responses)
    limit = [m for m in messages if m["event"] == "HAIKU_LIMIT"]
    assert len(limit) == 1 and limit[0]["created_at"] == hkt(DAY, "10:11")
    # Past the cap the rules decide: one MODERATE signal is not enough to sell.
    assert sells == [] and row["decision"] == "HOLD"


def test_a_haiku_exit_whose_order_is_refused_is_retried_at_once(database_url, tmp_path, fake_anthropic):
    series = _one_moderate_series("08015")
    fake_anthropic.script(forced({"decision": "EXIT", "reason": "cut it", "confidence": 0.8}),
                          *[forced({"decision": "HOLD", "reason": "wait", "confidence": 0.5})] * 5)

    async def scenario(clock):
        h, client = await _haiku_harness(database_url, clock, series, fake_anthropic, tmp_path)
        try:
            refused = refuse_orders(h.exchange, times=1)
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:40"))
            return refused, outcome, await h.sells(series.symbol), await h.store.position(position.position_id)
        finally:
            await client.close()
            await h.close()

    refused, outcome, sells, booked = simulate(hkt(DAY, "10:00"), scenario)

    assert refused == [hkt(DAY, "10:05")]
    assert len(sells) == 1 and sells[0].time - refused[0] <= timedelta(seconds=15), (
        f"the refused exit was retried only at {CALENDAR.local(sells[0].time):%H:%M:%S}")
    assert booked.exit_reason == ExitReason.HAIKU.value
    assert len(fake_anthropic.requests) == 1


# --- Protective orders ------------------------------------------------------------------------------------
def test_an_exit_cancels_the_backstop_first_and_sells_exactly_once(database_url, tmp_path):
    # Backstop stop order at 76.00 at the exchange; the price falls to 77.50 at 10:30 (-3.2%: the
    # stop_loss rule), above the backstop.
    series = hk_series("08020", DAY, levels=[("09:30", 80.0), ("10:30", 77.5)])

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, 200, stop=Decimal("76.50"), backstop_stop=Decimal("76.00"))
            backstop_id = position.backstop_order_ids[0]
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:00"))
            return (outcome, await h.exchange.get_order(backstop_id), await h.sells(series.symbol),
                    await h.exit_orders(series.symbol), await h.held(series.symbol),
                    await h.store.position(position.position_id), await h.store.orders())
        finally:
            await h.close()

    outcome, backstop, sells, exits, held, booked, orders = simulate(hkt(DAY, "10:00"), scenario)

    assert backstop.status is OrderStatus.CANCELLED and backstop.filled_quantity == 0
    assert backstop.updated_at == hkt(DAY, "10:30") == exits[0].created_at, "cancelled just before the exit sell"
    assert len(exits) == 1 and len(sells) == 1 and sells[0].quantity == 200
    assert held == 0, "the position ends flat at the exchange: not sold twice, not short"
    assert booked.status == "closed" and booked.backstop_status == "cancelled"
    assert booked.exit_reason == ExitReason.STOP_LOSS.value
    by_purpose = {o["purpose"]: o["status"] for o in orders}
    assert by_purpose == {"entry": "filled", "stop_loss": "cancelled", "exit": "filled"}


def test_a_backstop_that_fired_on_a_gap_is_the_exit_and_nothing_else_is_sold(database_url, tmp_path):
    series = hk_series("08021", DAY, levels=[("09:30", 80.0), ("10:30", 74.0)])
    gap = hkt(DAY, "10:30")

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, 200, stop=Decimal("78.00"), backstop_stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:00"))
            return (outcome, await h.sells(series.symbol), await h.exit_orders(series.symbol),
                    await h.held(series.symbol), await h.store.position(position.position_id), h.bid_at(series.symbol, gap))
        finally:
            await h.close()

    outcome, sells, exits, held, booked, bid = simulate(hkt(DAY, "10:00"), scenario)

    assert exits == [], "the backstop already sold the position: no second sell"
    assert [(s.time, s.price, s.quantity) for s in sells] == [(gap, bid, 200)]
    assert held == 0
    assert booked.exit_reason == ExitReason.BACKSTOP.value and booked.exit_price == bid


def test_a_backstop_partly_filled_in_a_thin_market_leaves_no_shares_behind(database_url, tmp_path):
    # 400 shares; the gap bar trades only 1,600 shares, so the triggered backstop gets 100 of them
    # (25% participation per 15-second step). The other 300 must still be sold and booked.
    series = hk_series("08022", DAY, levels=[("09:30", 80.0), ("10:30", 74.0)], volume={"10:30": 1_600})

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, 400, stop=Decimal("78.00"), backstop_stop=Decimal("76.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:00"))
            return (outcome, await h.sells(series.symbol), await h.held(series.symbol),
                    await h.store.position(position.position_id))
        finally:
            await h.close()

    outcome, sells, held, booked = simulate(hkt(DAY, "10:00"), scenario)

    assert held == 0, f"{held} shares left at the exchange while the database says {booked.status}"
    assert sum(s.quantity for s in sells) == 400
    assert booked.status == "closed" and booked.quantity == 400
    average = sum(s.price * s.quantity for s in sells) / 400
    assert booked.exit_price == average.quantize(Decimal("0.000001"))
    assert booked.exit_fees == sum(s.fees for s in sells)


# --- Trouble around the monitor: Big Bro's database gone, the technicals failing, a refused order ---------
def test_with_the_research_database_gone_the_monitor_still_exits_on_time_and_events_go_to_the_outbox(
        database_url, make_database_url, tmp_path):
    research_url = make_database_url("research")
    research_name = urlsplit(research_url).path.lstrip("/")
    series = hk_series("08030", DAY, levels=[("09:30", 80.0), ("10:30", 77.0)])
    gap = hkt(DAY, "10:30")

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl",
                                research_url=research_url)
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("78.00"))
            delivered_before = []

            async def drop_research():
                delivered_before.extend(await h.messages())
                await h.db.execute(f"DROP DATABASE {research_name} WITH (FORCE)")
            h.at(hkt(DAY, "10:10"), drop_research)
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:00"))
            return (delivered_before, outcome, await h.sells(series.symbol),
                    await h.store.position(position.position_id), await h.status_row(position.position_id))
        finally:
            await h.close()

    delivered_before, outcome, sells, booked, row = simulate(hkt(DAY, "10:00"), scenario)

    assert [m["event"] for m in delivered_before] == ["MONITOR_STARTED"]
    assert [s.time for s in sells] == [gap] and booked.exit_time == gap and booked.status == "closed"
    assert row["checks_completed"] == 6 and row["last_check_at"] == gap
    outbox = [r["data"] for r in outbox_events(tmp_path / "outbox.jsonl")
              if r.get("table", "claude_messages") == "claude_messages"]
    assert [e["event"] for e in outbox][-2:] == ["EXIT", "MONITOR_ENDED"]
    exit_event = outbox[-2]
    assert exit_event["position_id"] == booked.position_id and exit_event["reason"] == "stop_loss"
    assert Decimal(exit_event["exit_price"]) == booked.exit_price


def test_every_check_updates_the_monitor_status_row(database_url, tmp_path):
    # Up to 81.00 at 10:03 (the high watermark), 79.05 from 10:04: P&L -1.25%, a WEAK stop_loss.
    series = hk_series("08031", DAY, levels=[("09:30", 80.0), ("10:03", 81.0), ("10:04", 79.05)])
    rows: dict[str, dict] = {}

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            for label in ("10:06", "10:11"):
                async def take(label=label):
                    rows[label] = await h.status_row(position.position_id)
                h.at(hkt(DAY, label), take)
            await h.run_monitor(position, until=hkt(DAY, "10:12"))
            rows["after"] = await h.status_row(position.position_id)
        finally:
            await h.close()

    simulate(hkt(DAY, "10:00"), scenario)

    first, second = rows["10:06"], rows["10:11"]
    assert first["owner"] == OWNER and first["status"] == "running"
    assert first["last_check_at"] == hkt(DAY, "10:05") and first["checks_completed"] == 1
    assert first["lease_expires_at"] == first["updated_at"] + timedelta(seconds=120) > hkt(DAY, "10:06"), (
        "a live monitor holds an unexpired lease, renewed as it goes")
    assert first["last_price"] == Decimal("79.05") and first["high_watermark"] == Decimal("81.0")
    assert first["pnl_pct"] == ((Decimal("79.05") - ENTRY) / ENTRY * 100).quantize(Decimal("0.0001")) == Decimal("-1.2492")
    signals = json.loads(first["signals"]) if isinstance(first["signals"], str) else first["signals"]
    assert {"name": "stop_loss", "strength": "weak"}.items() <= signals[0].items()
    assert first["decision"] == "HOLD" and first["haiku_calls"] == 0 and first["haiku_cost_usd"] == 0
    assert second["last_check_at"] == hkt(DAY, "10:10") and second["checks_completed"] == 2
    assert second["error_count"] == 0 and second["last_price"] == Decimal("79.05")
    # When the run ends the monitor gives its lease back.
    assert rows["after"]["status"] == "stopped" and rows["after"]["lease_expires_at"] is None


@pytest.mark.parametrize("failure", ["raises", "returns_garbage"])
def test_a_failing_check_is_recorded_and_retried_and_the_monitor_keeps_going(database_url, tmp_path, failure):
    series = hk_series("08032", DAY, levels=[("09:30", 80.0), ("10:30", 77.0)])
    rows: dict[str, dict] = {}

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        flaky = FlakyTechnicals(h.market, **({"fail_on": {2}} if failure == "raises" else {"garbage_on": {2}}))
        flaky.clock = clock
        h.ctx.technicals = flaky
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("78.00"))

            async def take():
                rows["10:12"] = await h.status_row(position.position_id)
            h.at(hkt(DAY, "10:12"), take)
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:00"))
            return flaky.calls, outcome, await h.sells(series.symbol), await h.messages()
        finally:
            await h.close()

    calls, outcome, sells, messages = simulate(hkt(DAY, "10:00"), scenario)

    row = rows["10:12"]
    assert row["error_count"] == 1 and row["status"] == "running"
    assert ("technicals feed down" if failure == "raises" else "full check failed") in row["last_error"]
    # Retried within the retry delay (5 s), not at the next 5-minute check.
    assert calls[:3] == [hkt(DAY, "10:05"), hkt(DAY, "10:10"), hkt(DAY, "10:10", 5)]
    assert row["checks_completed"] == 2 and row["last_check_at"] == hkt(DAY, "10:10", 5)
    assert [m["event"] for m in messages].count("MONITOR_ERROR") == 1
    # ... and the monitor is still there for the gap at 10:30.
    assert [s.time for s in sells] == [hkt(DAY, "10:30")] and outcome.closed


def test_a_close_all_command_whose_first_sell_is_refused_still_closes_the_position(database_url, tmp_path):
    series = hk_series("08033", DAY, levels=[("09:30", 80.0)])

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            refused = refuse_orders(h.exchange, times=1)
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            monitor = h.monitor(position)

            async def close_all():
                monitor.request_exit(ExitReason.CLOSE_ALL, "close_all from big_bro")
            h.at(hkt(DAY, "10:20"), close_all)
            outcome = await h.run_monitor(monitor, until=hkt(DAY, "11:00"))
            return refused, outcome, await h.sells(series.symbol), await h.store.position(position.position_id)
        finally:
            await h.close()

    refused, outcome, sells, booked = simulate(hkt(DAY, "10:00"), scenario)

    assert len(refused) == 1 and CALENDAR.local(refused[0]).strftime("%H:%M") == "10:20"
    assert len(sells) == 1 and sells[0].time - refused[0] <= timedelta(seconds=15), "the close_all was dropped after one refusal"
    assert booked.exit_reason == ExitReason.CLOSE_ALL.value


def test_close_position_whose_sell_is_refused_is_finished_by_the_running_monitor(database_url, tmp_path):
    """tool_executor's close_position answers "not closed yet; the monitor keeps trying": it must."""
    series = hk_series("08034", DAY, levels=[("09:30", 80.0)])

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        manager = MonitorManager(h.ctx)
        try:
            refused = refuse_orders(h.exchange, times=1)
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("76.00"))
            h.exchange.start(hkt(DAY, "11:00"))
            assert manager.start(position)
            await clock.sleep_until(hkt(DAY, "10:20"))
            answer = await manager.close_now(position, ExitReason.MANUAL, "close_position: thesis broken")
            closed_at_once = answer.closed
            await clock.sleep_until(hkt(DAY, "10:21"))
            return refused, closed_at_once, manager.active(), await h.sells(series.symbol), await h.store.position(position.position_id)
        finally:
            await manager.cancel()
            await h.close()

    refused, closed_at_once, still_watching, sells, booked = simulate(hkt(DAY, "10:00"), scenario)

    assert refused == [hkt(DAY, "10:20")] and closed_at_once is False
    assert len(sells) == 1 and sells[0].time - refused[0] <= timedelta(seconds=15)
    assert booked.status == "closed" and booked.exit_reason == ExitReason.MANUAL.value
    assert still_watching == [], "the monitor ends once the position is closed"


def test_a_monitor_whose_lease_was_taken_over_stops_watching_so_only_one_process_sells(database_url, tmp_path):
    series = hk_series("08035", DAY, levels=[("09:30", 80.0), ("10:30", 77.0)])

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("78.00"))

            async def another_run_adopts_it():
                # As if this process had stalled past its lease and the next run adopted the position.
                await h.db.execute("UPDATE monitor_status SET owner='intl_claude@other-run', lease_expires_at=$2 "
                                   "WHERE position_id=$1", position.position_id, hkt(DAY, "11:00"))
            h.at(hkt(DAY, "10:10"), another_run_adopts_it)
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:45"))
            return outcome, clock.now(), await h.sells(series.symbol), await h.messages(), await h.status_row(position.position_id)
        finally:
            await h.close()

    outcome, ended, sells, messages, row = simulate(hkt(DAY, "10:00"), scenario)

    assert sells == [], "the monitor that lost its lease must leave the position to its new owner"
    assert not outcome.closed and "another process" in outcome.note
    assert ended < hkt(DAY, "10:10") + timedelta(seconds=60), "it stops at its next lease renewal"
    assert row["owner"] == "intl_claude@other-run" and row["status"] == "running"
    handed = [m for m in messages if m["event"] == "MONITOR_ENDED"]
    assert len(handed) == 1 and handed[0]["data"]["lease_lost"] is True


def test_a_monitor_that_cannot_renew_its_lease_stops_once_the_lease_lapses_and_sells_nothing(database_url, tmp_path):
    """Fail closed: a lease that cannot be renewed is not assumed to be held. Once the last renewed
    lease has lapsed another run may have adopted the position, so this monitor stops (and says so)
    instead of selling it at the stop a second time."""
    series = hk_series("08036", DAY, levels=[("09:30", 80.0), ("10:30", 77.0)])

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, ONE_HUNDRED, stop=Decimal("78.00"))

            async def the_lease_table_stops_answering():
                await h.db.execute("ALTER TABLE monitor_status RENAME TO monitor_status_unreachable")
            h.at(hkt(DAY, "10:10"), the_lease_table_stops_answering)
            outcome = await h.run_monitor(position, until=hkt(DAY, "10:45"))
            ended = clock.now()
            await h.db.execute("ALTER TABLE monitor_status_unreachable RENAME TO monitor_status")
            return outcome, ended, await h.sells(series.symbol), await h.messages()
        finally:
            await h.close()

    outcome, ended, sells, messages = simulate(hkt(DAY, "10:00"), scenario)

    assert sells == [], "a monitor that no longer knows it holds the lease must not sell (the stop broke at 10:30)"
    assert not outcome.closed and "lease could not be renewed" in outcome.note
    assert ended <= hkt(DAY, "10:10") + timedelta(seconds=120 + 45), "it stops when the last renewed lease lapses"
    stopped = [m for m in messages if m["event"] == "MONITOR_ENDED" and m["data"].get("lease_lost")]
    assert len(stopped) == 1 and "lease lost" in stopped[0]["subject"]
    assert any(m["event"] == "MONITOR_ERROR" and "lease could not be renewed" in m["body"] for m in messages)


def test_an_exit_on_thin_minutes_fills_bit_by_bit_as_one_order_and_books_every_share_once(database_url, tmp_path):
    # After 10:29 the market is thin: 1,600 shares a minute, so a step offers 100 (a quarter of 400)
    # and an exit of 2,000 takes five minutes. The stop breaks at 10:30. The order that keeps filling is
    # left to fill: cancelling it every fill timeout to send the rest again paid the commission minimum
    # once more each time (six orders here before), for the same fills.
    thin = {f"{h}:{m:02d}": 1600.0 for h, m in [(10, m) for m in range(29, 60)] + [(11, m) for m in range(0, 60)]}
    series = hk_series("08009", DAY, levels=[("09:30", 80.0), ("10:30", 77.0)], volume=thin)

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, 2000, stop=Decimal("78.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "11:30"))
            return (await h.sells(series.symbol), await h.store.position(position.position_id),
                    await h.held(series.symbol), position, outcome, await h.messages())
        finally:
            await h.close()

    sells, booked, held, position, outcome, messages = simulate(hkt(DAY, "10:00"), scenario)

    sold = sum(f.quantity for f in sells)
    assert sold == 2000 and held == 0, "every share sold once, none twice, never short"
    assert len(sells) >= 20 and len({f.broker_order_id for f in sells}) == 1, "one order, filled bit by bit"
    average = sum(f.price * f.quantity for f in sells) / sold
    assert booked.status == "closed" and booked.quantity == 2000
    assert booked.exit_price == average.normalize() or abs(booked.exit_price - average) < Decimal("0.000001")
    fees = sum((f.fees for f in sells), Decimal(0))
    expected = sum((f.price - position.entry_price) * f.quantity for f in sells) - position.entry_fees - fees
    assert abs(booked.realized_pnl - expected) < Decimal("0.01"), "P&L covers the shares of every attempt"
    # A thin market is no fault of the monitor: no error counted or alerted, one notice that the exit works on.
    events = [m["data"].get("event") for m in messages]
    assert outcome.errors == 0 and "MONITOR_ERROR" not in events
    assert events.count("EXIT_WORKING") == 0, "an order that is filling is no exit in trouble"


def test_a_lunch_exit_the_thin_morning_cannot_finish_is_finished_after_the_break_without_an_error(database_url, tmp_path):
    """The last minutes before the HKEX lunch break are thin (1,600 shares a minute: 100 a step): the
    lunch exit of 6,000 shares sells part before 12:00 and the rest in the afternoon. The break starting under a retry
    ("market closed") and the thin minutes are no monitor errors (they were 26 in a dev replay)."""
    thin = {f"11:{m:02d}": 1600.0 for m in range(40, 60)}
    series = hk_series("08010", DAY, levels=[("09:30", 80.0)], volume=thin)

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl")
        try:
            position = await h.open_position(series.symbol, 6000, stop=Decimal("70.00"))
            outcome = await h.run_monitor(position, until=hkt(DAY, "13:30"))
            return (outcome, await h.sells(series.symbol), await h.store.position(position.position_id),
                    await h.held(series.symbol), await h.messages())
        finally:
            await h.close()

    outcome, sells, booked, held, messages = simulate(hkt(DAY, "11:30"), scenario)

    assert sum(f.quantity for f in sells) == 6000 and held == 0
    assert any(f.time < hkt(DAY, "12:00") for f in sells) and any(f.time >= hkt(DAY, "13:00") for f in sells)
    assert_only_in_continuous_trading([f.time for f in sells])
    assert booked.status == "closed" and booked.exit_reason == ExitReason.LUNCH_BREAK.value
    assert len({f.broker_order_id for f in sells}) >= 2, "the order working at the break is cancelled, the rest sent after"
    average = sum(f.price * f.quantity for f in sells) / 6000
    assert abs(booked.exit_price - average) < Decimal("0.000001"), "the booking covers the shares of every order"
    events = [m["data"].get("event") for m in messages]
    assert outcome.errors == 0 and "MONITOR_ERROR" not in events and events.count("EXIT_WORKING") == 1
