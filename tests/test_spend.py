"""spend.py: what the LLM calls cost, counted per trading day of the market, against the daily budget.

Against the embedded PostgreSQL: the ``api_usage`` rows are what ``--mode status`` and the daily
report read, and ``claude_state`` is what Big Bro reads.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from core.clock import SimClock
from config.settings import Models
from store.bigbro import Consciousness
from core.costs import Usage
from data.calendar import MarketCalendar
from core.instruments import Market
from engine.spend import BudgetExhausted, SpendLedger
from store.db import Database
from store.trading import TradingStore
from tests.fakes import free_port

SONNET = Models().decision   # USD 3 in, 15 out, 3.75 cache write, 0.30 cache read per million tokens
HAIKU = Models().consult     # USD 1 in, 5 out
HK = MarketCalendar(Market.HK)
US = MarketCalendar(Market.US)
MONDAY_MORNING_HK = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)  # 10:00 HKT


def ledger(db: Database, clock: SimClock, budget: str, calendar: MarketCalendar = HK, on_spend=None) -> SpendLedger:
    market = calendar.market
    return SpendLedger(TradingStore(db, "intl_claude" if market is Market.HK else "public_claude", market), clock,
                       calendar, Decimal(budget), on_spend)


async def test_each_call_is_stored_with_its_tokens_and_exact_cost_and_today_adds_them_up(trading_db):
    clock = SimClock(MONDAY_MORNING_HK)
    spend = ledger(trading_db, clock, "5")
    first = await spend.record(Usage(input_tokens=12_000, output_tokens=800, cache_write_tokens=4_000,
                                     cache_read_tokens=30_000), SONNET, "decision", cycle_id="c1")
    second = await spend.record(Usage(input_tokens=1_500, output_tokens=120), HAIKU, "consult")
    # 12000*3 + 800*15 + 4000*3.75 + 30000*0.30 = 72000 -> USD 0.072; 1500*1 + 120*5 = 2100 -> USD 0.0021
    assert (first, second) == (Decimal("0.072"), Decimal("0.0021"))
    assert await spend.spent_today() == Decimal("0.0741")
    assert await spend.remaining() == Decimal("4.9259")
    rows = await trading_db.fetch("SELECT purpose, model, input_tokens, output_tokens, cache_write_tokens, "
                                  "cache_read_tokens, cost_usd, trading_day, cycle_id FROM api_usage ORDER BY usage_id")
    assert [tuple(r.values()) for r in rows] == [
        ("decision", "claude-sonnet-4-6", 12_000, 800, 4_000, 30_000, Decimal("0.072"), date(2026, 11, 23), "c1"),
        ("consult", "claude-haiku-4-5", 1_500, 120, 0, 0, Decimal("0.0021"), date(2026, 11, 23), None)]


async def test_a_call_that_would_reach_the_budget_is_refused_and_says_how_much_of_how_much(trading_db):
    clock = SimClock(MONDAY_MORNING_HK)
    spend = ledger(trading_db, clock, "0.10")
    await spend.record(Usage(), SONNET, "decision", cost=Decimal("0.0800"))
    await spend.ensure_room(Decimal("0.0199"))  # just under: allowed
    with pytest.raises(BudgetExhausted) as refused:
        await spend.ensure_room(Decimal("0.0200"))
    assert str(refused.value) == ("today's LLM spend USD 0.0800 (+ about 0.0200 for the next call) would reach the "
                                  "daily budget of USD 0.1")
    await spend.record(Usage(), SONNET, "decision", cost=Decimal("0.0200"))
    with pytest.raises(BudgetExhausted, match=r"USD 0\.1000 .* budget of USD 0\.1$"):
        await spend.ensure_room()  # spent: not even a call of unknown cost


async def test_a_tiny_budget_is_shown_as_it_is_not_rounded_to_zero(trading_db):
    spend = ledger(trading_db, SimClock(MONDAY_MORNING_HK), "0.0001")
    await spend.record(Usage(), HAIKU, "consult", cost=Decimal("0.0001"))
    with pytest.raises(BudgetExhausted, match=r"daily budget of USD 0\.0001$"):
        await spend.ensure_room()


async def test_the_next_trading_day_starts_from_zero_and_yesterdays_calls_stay_recorded(trading_db):
    clock = SimClock(MONDAY_MORNING_HK)
    spend = ledger(trading_db, clock, "0.05")
    await spend.record(Usage(), SONNET, "decision", cost=Decimal("0.05"))
    with pytest.raises(BudgetExhausted):
        await spend.ensure_room()
    clock.set(datetime(2026, 11, 24, 1, 30, tzinfo=timezone.utc))  # Tuesday 09:30 HKT
    assert spend.today() == date(2026, 11, 24)
    assert await spend.spent_today() == 0
    await spend.ensure_room(Decimal("0.04"))
    days = await trading_db.fetch("SELECT trading_day, cost_usd FROM api_usage")
    assert [(r["trading_day"], r["cost_usd"]) for r in days] == [(date(2026, 11, 23), Decimal("0.05"))]


async def test_the_day_is_the_markets_day_not_utcs(trading_db):
    """02:00 UTC on Tuesday is Monday evening in New York: a US call then is Monday's spend."""
    clock = SimClock(datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc))
    us = ledger(trading_db, clock, "5", US)
    await us.record(Usage(), SONNET, "decision", cost=Decimal("0.30"))
    assert us.today() == date(2026, 11, 23)
    [row] = await trading_db.fetch("SELECT agent_id, trading_day FROM api_usage")
    assert (row["agent_id"], row["trading_day"]) == ("public_claude", date(2026, 11, 23))
    clock.set(datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc))  # Tuesday 10:00 in New York
    assert await us.spent_today() == 0


async def test_spend_reaches_claude_state_and_a_research_database_that_is_down_costs_nothing(
        trading_db):
    clock = SimClock(MONDAY_MORNING_HK)
    consciousness = Consciousness(trading_db, "intl_claude")
    await consciousness.wake(clock.now(), date(2026, 11, 23), Decimal("5"))
    spend = ledger(trading_db, clock, "5", on_spend=consciousness.add_spend)
    await spend.record(Usage(), SONNET, "decision", cost=Decimal("0.0420"))
    state = await consciousness.state()
    assert state["api_spend_today"] == Decimal("0.0420") and state["spend_day"] == date(2026, 11, 23)

    research_down = Database(f"postgresql://postgres:pw@127.0.0.1:{free_port()}/research", "research",
                             optional_migrations="research")
    cut_off = ledger(trading_db, clock, "5", on_spend=Consciousness(research_down, "intl_claude").add_spend)
    assert await cut_off.record(Usage(), SONNET, "decision", cost=Decimal("0.0100")) == Decimal("0.0100")
    assert await cut_off.spent_today() == Decimal("0.0520"), "the call is accounted for all the same"
