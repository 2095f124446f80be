"""LLM spend: every call's usage and cost stored per call, today's total against the budget."""
from __future__ import annotations

import logging
from datetime import date
from decimal import Decimal

from core.clock import Clock
from config.settings import ModelSpec
from core.costs import Usage, cost_usd
from data.calendar import MarketCalendar
from store.trading import TradingStore

log = logging.getLogger(__name__)


class BudgetExhausted(Exception):
    """Today's LLM spend reached the daily budget; the message says how much of how much."""


class SpendLedger:
    def __init__(self, store: TradingStore, clock: Clock, calendar: MarketCalendar, daily_budget: Decimal,
                 on_spend=None) -> None:
        self.store = store
        self.clock = clock
        self.calendar = calendar
        self.daily_budget = daily_budget
        self._on_spend = on_spend  # async callback(amount, trading_day, at), e.g. claude_state

    def today(self) -> date:
        return self.calendar.trading_day(self.clock.now())

    async def spent_today(self) -> Decimal:
        return await self.store.spend_on(self.today())

    async def remaining(self) -> Decimal:
        return self.daily_budget - await self.spent_today()

    async def ensure_room(self, estimate: Decimal = Decimal(0)) -> None:
        """Raise ``BudgetExhausted`` when today's spend plus ``estimate`` would pass the budget."""
        spent = await self.spent_today()
        if spent + estimate >= self.daily_budget:
            raise BudgetExhausted(
                f"today's LLM spend USD {spent:.4f} (+ about {estimate:.4f} for the next call) would reach the "
                f"daily budget of USD {self.daily_budget.normalize():f}"  # not :.2f: a 0.0001 budget is not "0.00"
            )

    async def record(self, usage: Usage, spec: ModelSpec, purpose: str, cycle_id: str | None = None,
                     position_id: int | None = None, cost: Decimal | None = None) -> Decimal:
        cost = cost_usd(usage, spec) if cost is None else cost
        now = self.clock.now()
        day = self.calendar.trading_day(now)
        await self.store.record_usage(
            trading_day=day, at=now, purpose=purpose, model=spec.name, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cache_write_tokens=usage.cache_write_tokens,
            cache_read_tokens=usage.cache_read_tokens, cost_usd=cost, cycle_id=cycle_id, position_id=position_id,
        )
        if self._on_spend is not None:
            try:
                await self._on_spend(cost, day, now)
            except Exception:  # noqa: BLE001 - the research database is optional for trading
                log.warning("could not add spend to claude_state")
        return cost
