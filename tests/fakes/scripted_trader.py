"""A scripted Claude for whole-agent runs against ``FakeAnthropic``, and a valid trade to script.

``ScriptedTrader`` is one callable the fake calls for every request (``fake.script([trader] * n)``):

* a request that forces a tool (the exit advisor's Haiku consult) is answered ``forced`` with
  ``haiku_answer`` (HOLD by default);
* a decision request belongs to a cycle: a conversation of one message starts the next cycle;
  the answer is the next step of that cycle's plan, where step ``k`` answers the request with
  ``2k + 1`` messages. A step is a turn (``reply(...)``) or a function of the ``Conversation``
  (the request so far) returning one, so a step can use what the previous tools returned. When
  a cycle's plan is exhausted the model ends its turn with a short text.

``pick_entry`` finds, on the bundled sample session at the first cycle time, a scan candidate
whose whole board lots fit the risk limits, with a stop and target that pass ``check_risk``.
The paper exchange is deterministic, so the agent's run sees the same prices at that moment.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Callable

from tests.fakes.fake_anthropic import forced, reply, text, tool_use

Step = Callable[["Conversation"], dict] | dict

HOLD = {"decision": "HOLD", "reason": "signals mixed; the stop still protects the trade", "confidence": 0.6}


@dataclass
class ToolOutcome:
    name: str
    input: dict[str, Any]
    content: str
    is_error: bool

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.content)


class Conversation:
    """One decision request: the messages so far, and the results of the tools the model called last."""

    def __init__(self, body: dict) -> None:
        self.body = body
        self.messages = body["messages"]

    def last_results(self) -> list[ToolOutcome]:
        if len(self.messages) < 3:
            return []
        calls = {b["id"]: b for b in self.messages[-2]["content"] if b.get("type") == "tool_use"}
        out = []
        for block in self.messages[-1]["content"]:
            if block.get("type") != "tool_result":
                continue
            call = calls[block["tool_use_id"]]
            content = block["content"]
            if isinstance(content, list):
                content = "".join(c.get("text", "") for c in content)
            out.append(ToolOutcome(call["name"], call["input"], content, bool(block.get("is_error"))))
        return out

    def result(self, name: str) -> ToolOutcome:
        for outcome in self.last_results():
            if outcome.name == name:
                return outcome
        raise AssertionError(f"no {name} result in the last request; got {[o.name for o in self.last_results()]}")


class ScriptedTrader:
    def __init__(self, plans: list[list[Step]], haiku_answer: dict | None = None) -> None:
        self.plans = plans
        self.haiku_answer = haiku_answer or HOLD
        self.cycle = -1
        self.decision_bodies: list[list[dict]] = []   # per cycle, the requests in order
        self.haiku_bodies: list[dict] = []

    def __call__(self, body: dict) -> dict:
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            self.haiku_bodies.append(body)
            return forced(self.haiku_answer)
        messages = body["messages"]
        if len(messages) == 1:
            self.cycle += 1
            self.decision_bodies.append([])
        self.decision_bodies[self.cycle].append(body)
        plan = self.plans[self.cycle] if self.cycle < len(self.plans) else []
        step_index = len(messages) // 2
        if step_index >= len(plan):
            return reply(text("Done for this cycle."))
        step = plan[step_index]
        return step(Conversation(body)) if callable(step) else step


def call(name: str, **inputs: Any) -> dict:
    """A turn that calls one tool."""
    return reply(tool_use(name, inputs))


def calls(*pairs: tuple[str, dict]) -> dict:
    """A turn that calls several tools at once."""
    return reply(*(tool_use(name, inputs) for name, inputs in pairs))


# --- A trade that passes check_risk at the first cycle of the sample session ------------------------
@dataclass(frozen=True)
class PlannedEntry:
    symbol: str
    board_lot: int
    ask: Decimal
    quantity: int
    stop: Decimal
    target: Decimal
    tick: Decimal
    at: datetime

    def trade_input(self, **changes: Any) -> dict[str, Any]:
        base = {"symbol": self.symbol, "side": "buy", "quantity": self.quantity, "order_type": "market",
                "stop_loss": str(self.stop), "take_profit": str(self.target), "tier": 2,
                "reason": "tier 2: volume ratio above 1.5 and a breakout (scripted)"}
        base.update(changes)
        return base

    def risk_input(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "side": "buy", "quantity": self.quantity, "entry": str(self.ask),
                "stop": str(self.stop), "target": str(self.target), "tier": 2}


def first_cycle_time(profile, calendar, session) -> datetime:
    first = min(profile.schedule.cycle_times)
    return max(calendar.at_local(session.day, first), session.open) + timedelta(minutes=profile.schedule.opening_range_minutes)


def pick_entry(profile, value_target: Decimal = Decimal("8000")) -> PlannedEntry:
    """The first scan candidate at the first cycle time whose board lots fit ``value_target``."""
    from brokers.base import Timeframe
    from brokers.paper import PaperExchange
    from core.clock import SimClock
    from data.indicators import minute_volatility_pct
    from core.risk import Noise, acceptable_levels
    from tool_executor import round_trip_cost
    from data.calendar import MarketCalendar
    from data.market import MarketData
    from core.instruments import Rounding, round_to_tick
    from runner.sessions import sample_feed

    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    at = first_cycle_time(profile, calendar, session)
    clock = SimClock(at)
    exchange = PaperExchange(feed.series, clock, calendar, profile)
    market = MarketData(exchange, clock, calendar, profile, feed.universe)
    phase2 = profile.ticks.hk_phase2_date

    async def choose() -> PlannedEntry:
        rows = await market.scan("ALL", 20, None, None)
        snaps = await exchange.snapshots([s for s in feed.universe])
        for row in rows:
            snap = next(v for k, v in snaps.items() if str(k) == row["symbol"])
            ask, lot = snap.quote.ask, snap.lot_size
            lots = int((value_target / (ask * lot)).to_integral_value(ROUND_FLOOR))
            if lots < 1 or ask * lot * lots < profile.risk.min_position_value:
                continue
            # A stop 2% below, or at the noise floor where that is wider (as check_risk would say).
            symbol = next(k for k in snaps if str(k) == row["symbol"])
            bars = await market.bars(symbol, Timeframe.M1, 2 * calendar.full_day_minutes(profile.market))
            noise = Noise(minute_volatility_pct(bars),
                          round_trip_cost(symbol, ask, lots * lot, snap.quote.bid, ask, profile), session.day)
            floor = acceptable_levels(symbol, ask, noise, profile, profile.tier(2))
            stop = min(round_to_tick(profile.market, ask * Decimal("0.98"), session.day, Rounding.UP, phase2),
                       floor.stop_at_most)
            if (ask - stop) / ask * 100 > profile.risk.max_stop_distance_pct:
                continue
            target = round_to_tick(profile.market, ask + (ask - stop) * Decimal("2.5"), session.day, Rounding.UP, phase2)
            return PlannedEntry(row["symbol"], lot, ask, lots * lot, stop, target, snap.tick, at)
        raise AssertionError("no scan candidate fits the risk limits at the first cycle; the sample data changed")

    return clock.run(choose())


def run_async(coro):
    """Run a coroutine on a fresh loop (for database checks between runs of the agent)."""
    return asyncio.run(coro)
