"""The decision makers of a cycle: Claude (tool-use loop) and the offline rules brain.

Both drive the same twelve tools through ``ToolExecutor``, so tracking, validation, risk checks
and records are identical whoever decides. The cycle does not care which one runs.
"""
from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only; the SDK itself is imported where a call is made
    import anthropic

from config.settings import EntryTier, Profile
from consciousness_notify import Event, EventType
from core.costs import Usage
from core.instruments import Rounding, round_to_tick
from engine.spend import BudgetExhausted, SpendLedger
from tool_executor import ToolExecutor, tool_schemas

log = logging.getLogger(__name__)


class CycleStatus(str, enum.Enum):
    COMPLETED = "completed"
    BUDGET_STOPPED = "budget_stopped"
    ITERATION_CAP = "iteration_cap"
    FAILED = "failed"


@dataclass
class BrainResult:
    status: CycleStatus
    iterations: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: Decimal = Decimal(0)
    requests: int = 0
    final_text: str = ""
    error: str | None = None


class FatalBrainError(Exception):
    """Authentication or credit failure: retrying will not help; the run ends with exit 1."""


class Brain(Protocol):
    name: str

    async def run_cycle(self, executor: ToolExecutor, context: str) -> BrainResult: ...


# --- The system prompt, rendered from the profile's numbers ------------------------------------------
def render_system_prompt(profile: Profile) -> str:
    r = profile.risk
    cur = profile.currency
    tiers = "\n".join(_tier_line(t, profile) for t in profile.entry.tiers)
    return f"""You are Catalyst, an intraday trading agent for the {profile.market.value} market ({cur}).
Work through the tools: get_portfolio, scan_market, then for promising candidates get_quote, get_technicals,
detect_patterns and get_news; check_risk before every entry; execute_trade only with an approved check;
log_decision for every trade or skip with tier, entry, stop and target; end your turn when done.

Entry tiers (all conditions of a tier must hold):
{tiers}
Pass when RSI > {profile.entry.pass_rsi_above:g} or < {profile.entry.pass_rsi_below:g}, volume is below average,
check_risk refuses, {r.max_positions} positions are already open, there is no clear stop, or the symbol is already held.

Limits (enforced by the tools; do not try to get around them): at most {r.max_positions} open positions, one per symbol;
a position is worth at most {cur} {r.max_position_value:,} (tier 3: {cur} {r.tier3_position_value:,}), at most
{r.max_position_pct_equity}% of equity and at least {cur} {r.min_position_value:,}; risk per trade at most
{r.max_risk_per_trade_pct}% of equity; the stop within {r.max_stop_distance_pct}% below the entry but outside the symbol's
normal movement ({r.noise_stop_multiple:g} x its one-minute volatility over {r.noise_hold_minutes:g} minutes, and at least
{r.min_stop_ticks} ticks), the target gaining at least {r.min_target_cost_multiple:g} x the round-trip costs: check_risk's
acceptable_levels give the nearest stop and target it accepts, use them; at most
{r.max_entries_per_day} entries a day; quantities are whole board lots (get_quote gives the lot); prices on the tick grid.
A positive catalyst means get_news says has_catalyst; with a log_decision skip, give pass_reason.
A daily loss of {r.daily_loss_halt_pct}% halts new entries and closes everything. Exits are handled by the position
monitor after the fill; do not close positions unless there is a reason the monitor cannot see.
Symbols marked [synthetic] are generated sample data, not listed securities. Be brief."""


def _tier_line(t: EntryTier, profile: Profile) -> str:
    setup = {"pattern_and_catalyst": "a pattern AND a positive catalyst",
             "pattern_or_catalyst": f"a pattern OR a catalyst (within {t.near_breakout_pct or 1:g}% of a breakout counts)",
             "momentum": f"up more than {t.min_change_pct or 0:g}% today with one supporting signal"}[t.setup]
    size = "full size" if t.size_fraction >= 1 else f"{t.size_fraction:.0%} size (cap {profile.currency} {profile.risk.tier3_position_value:,})"
    return (f"- Tier {t.tier}: volume ratio > {t.min_volume_ratio:g}, RSI {t.rsi_min:g}-{t.rsi_max:g}, {setup}, "
            f"reward:risk >= {t.min_reward_risk}, {size}")


# --- Claude -----------------------------------------------------------------------------------------
def _is_fatal(exc: Exception) -> bool:
    import anthropic  # here, not at the top: a rules brain never loads the SDK (44 MB, seconds)
    if isinstance(exc, (anthropic.AuthenticationError, anthropic.PermissionDeniedError)):
        return True
    if isinstance(exc, anthropic.APIStatusError) and "credit balance" in str(exc).lower():
        return True
    return False


# Seconds to wait before the second and the third attempt of a Messages API call.
RETRY_DELAYS = (1.0, 4.0)


class ClaudeBrain:
    name = "claude"

    def __init__(self, client: anthropic.AsyncAnthropic, profile: Profile, spend: SpendLedger) -> None:
        self.client = client
        self.profile = profile
        self.spend = spend
        self.system = [{"type": "text", "text": render_system_prompt(profile), "cache_control": {"type": "ephemeral"}}]
        tools = tool_schemas()
        tools[-1] = {**tools[-1], "cache_control": {"type": "ephemeral"}}
        self.tools = tools

    async def run_cycle(self, executor: ToolExecutor, context: str) -> BrainResult:
        import anthropic  # here, not at the top: a rules brain never loads the SDK (44 MB, seconds)
        ctx = executor.ctx
        spec = self.profile.models.decision
        result = BrainResult(CycleStatus.ITERATION_CAP)
        messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": context}]}]
        last_cost = Decimal(0)
        for _ in range(self.profile.models.max_iterations):
            try:
                await self.spend.ensure_room(last_cost)
            except BudgetExhausted as exc:
                result.status = CycleStatus.BUDGET_STOPPED
                result.error = str(exc)
                await ctx.notifier.send(Event(EventType.BUDGET, "LLM budget exhausted: cycle stopped",
                                              f"{exc}. The cycle ended; open positions stay monitored on rules.",
                                              {"cycle_id": ctx.cycle_id, "spent_usd": await self.spend.spent_today(),
                                               "budget_usd": self.spend.daily_budget}))
                return result
            _mark_last_block(messages)
            try:
                response = await self._create(ctx.clock, spec, messages)
            except anthropic.APIError as exc:
                if _is_fatal(exc):
                    raise FatalBrainError(_describe(exc)) from None
                result.status = CycleStatus.FAILED
                result.error = _describe(exc)
                return result
            except TimeoutError:
                result.status = CycleStatus.FAILED
                result.error = (f"the Messages API did not answer within "
                                f"{self.profile.models.request_timeout_seconds:g} s ({1 + len(RETRY_DELAYS)} attempts)")
                return result
            result.requests += 1
            result.iterations += 1
            usage = Usage.from_anthropic(response.usage)
            last_cost = await self.spend.record(usage, spec, "decision", cycle_id=ctx.cycle_id)
            result.usage = result.usage + usage
            result.cost_usd += last_cost
            content = [block.model_dump(exclude_none=True) for block in response.content]
            messages.append({"role": "assistant", "content": content})
            texts = [b.text for b in response.content if b.type == "text"]
            if texts:
                result.final_text = texts[-1]
            if response.stop_reason != "tool_use":
                result.status = CycleStatus.COMPLETED
                return result
            tool_results = []
            for block in response.content:
                if block.type != "tool_use":
                    continue
                outcome = await executor.run(block.name, block.input)
                tool_results.append({"type": "tool_result", "tool_use_id": block.id, "content": outcome.content,
                                     "is_error": outcome.is_error})
            messages.append({"role": "user", "content": tool_results})
        return result

    async def _create(self, clock, spec, messages: list[dict[str, Any]]):
        """One Messages API call, retried on the errors worth retrying.

        The client does not retry by itself (``max_retries=0``): its back-off sleeps on the event
        loop's timers, which never come due while a call is in flight on the simulated clock. Here
        the wait between attempts is the run's clock, and each attempt has a real-time deadline."""
        import anthropic  # here, not at the top: a rules brain never loads the SDK (44 MB, seconds)

        from core.clock import io

        timeout = self.profile.models.request_timeout_seconds
        for delay in (*RETRY_DELAYS, None):
            try:
                return await io(self.client.messages.create(
                    model=spec.name, max_tokens=spec.max_tokens, system=self.system, tools=self.tools,
                    messages=messages, timeout=timeout,
                ), timeout=timeout)
            except (anthropic.APIError, TimeoutError) as exc:
                if delay is None or not _retryable(exc):
                    raise
                log.warning("Messages API call failed (%s); retrying in %g s", type(exc).__name__, delay)
            await clock.sleep(delay)
        raise AssertionError("unreachable")


def _retryable(exc: BaseException) -> bool:
    """Connection errors, timeouts, rate limits and server errors (overloaded included) pass with time."""
    import anthropic  # here, not at the top: a rules brain never loads the SDK (44 MB, seconds)
    if isinstance(exc, (TimeoutError, anthropic.APIConnectionError)):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and (status in (408, 409, 429) or status >= 500)


def _mark_last_block(messages: list[dict[str, Any]]) -> None:
    """Move the conversation's cache breakpoint to the newest block (at most one on the history)."""
    for message in messages:
        if isinstance(message["content"], list):
            for block in message["content"]:
                block.pop("cache_control", None)
    last = messages[-1]["content"]
    if isinstance(last, list) and last:
        last[-1]["cache_control"] = {"type": "ephemeral"}


def _describe(exc: anthropic.APIError) -> str:
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    message = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    return f"{type(exc).__name__}" + (f" (HTTP {status})" if status else "") + f": {message or exc.message}"


# --- Rules ------------------------------------------------------------------------------------------
# Without a pattern, the stop sits this many ATRs below the entry; the target clears the tier's
# reward:risk floor by this margin so tick rounding never pushes it under.
ATR_STOP_MULTIPLE = Decimal("1.5")
TARGET_MARGIN = Decimal("1.1")


@dataclass(frozen=True)
class Pass:
    """A candidate turned down: the ``PassReason`` value and the sentence for the log."""

    reason: str
    why: str


class RulesBrain:
    """The entry tiers applied to the same tools, deterministically; every decision is logged."""

    name = "rules"

    def __init__(self, profile: Profile, candidates: int = 8) -> None:
        self.profile = profile
        self.candidates = candidates

    async def run_cycle(self, executor: ToolExecutor, context: str) -> BrainResult:
        result = BrainResult(CycleStatus.COMPLETED)

        async def call(name: str, args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
            outcome = await executor.run(name, args)
            result.iterations += 1
            return outcome.data, outcome.is_error

        portfolio, _ = await call("get_portfolio", {})
        if portfolio.get("halted"):
            await call("log_decision", {"decision": "skip", "pass_reason": "halted",
                                        "reasoning": f"trading halted: {portfolio.get('halt_reason')}"})
            result.final_text = "halted; no entries"
            return result
        held = {p["symbol"] for p in portfolio.get("positions", [])}
        slots = self.profile.risk.max_positions - len(held)
        lowest = min(t.min_volume_ratio for t in self.profile.entry.tiers)
        scan, failed = await call("scan_market", {"index": self.profile.scan.default_index, "limit": self.candidates,
                                                  "min_volume_ratio": lowest})
        if failed:
            result.final_text = f"scan failed: {scan.get('error')}"
            return result
        entered = 0
        for candidate in scan.get("candidates", []):
            if entered >= slots:
                await call("log_decision", {"decision": "skip", "symbol": candidate["symbol"], "pass_reason": "max_positions",
                                            "reasoning": f"{self.profile.risk.max_positions} positions open or entered"})
                continue
            symbol = candidate["symbol"]
            if symbol in held:
                await call("log_decision", {"decision": "skip", "symbol": symbol, "pass_reason": "already_held",
                                            "reasoning": "already held: one position per symbol"})
                continue
            if await self._consider(call, symbol, executor.ctx.today()):
                entered += 1
        if not scan.get("candidates"):
            await call("log_decision", {"decision": "skip", "pass_reason": "no_candidates",
                                        "reasoning": "scan found no candidate above the lowest tier's volume ratio"})
        result.final_text = f"{entered} entr{'y' if entered == 1 else 'ies'} from {len(scan.get('candidates', []))} candidate(s)"
        return result

    async def _consider(self, call, symbol: str, day: date) -> bool:
        quote, q_err = await call("get_quote", {"symbol": symbol})
        tech, t_err = await call("get_technicals", {"symbol": symbol, "timeframe": "5m"})
        patterns, p_err = await call("detect_patterns", {"symbol": symbol, "timeframe": "5m"})
        news, _ = await call("get_news", {"symbol": symbol, "hours": 24})

        async def skip(reason: str, why: str, **levels) -> bool:
            await call("log_decision", {"decision": "skip", "symbol": symbol, "pass_reason": reason, "reasoning": why,
                                        **{k: str(v) if isinstance(v, Decimal) else v for k, v in levels.items()}})
            return False

        if q_err or t_err or p_err:
            return await skip("data_unavailable",
                              f"data unavailable: {quote.get('error') or tech.get('error') or patterns.get('error')}")
        catalyst = bool(news.get("has_catalyst"))  # a positive catalyst tag at the profile's threshold
        choice = self.choose(quote, tech, patterns.get("patterns", []), catalyst, day)
        if isinstance(choice, Pass):
            return await skip(choice.reason, choice.why)
        tier, entry, stop, target, why = choice
        if catalyst:
            why += f"; catalyst: {', '.join(news.get('catalysts', []))} (news score {news.get('score')})"
        lot = int(quote["lot_size"])

        async def probe(quantity: int) -> dict[str, Any]:
            verdict, _ = await call("check_risk", {"symbol": symbol, "quantity": quantity, "entry": str(entry),
                                                   "stop": str(stop), "target": str(target), "tier": tier.tier})
            return verdict

        verdict = await probe(lot)
        levels = verdict.get("acceptable_levels")
        if levels:  # the noise floor: never a stop inside the symbol's normal movement
            stop = min(stop, Decimal(levels["stop_at_most"]))
            target = max(target, Decimal(levels["target_at_least"]))
            why += f"; levels outside the noise: stop {stop}, target {target}"
            verdict = await probe(lot)
        level_args = {"tier": tier.tier, "entry": entry, "stop": stop, "target": target}
        quantity = int(verdict.get("suggested_quantity") or 0)
        if quantity <= 0:
            return await skip("no_lot_fits", "no whole board lot fits the limits: " + "; ".join(verdict.get("reasons", [])),
                              **level_args)
        if quantity != lot:
            verdict = await probe(quantity)
        if not verdict.get("approved"):
            return await skip("risk_refused", "risk refused: " + "; ".join(verdict.get("reasons", [])), **level_args)
        trade, failed = await call("execute_trade", {"symbol": symbol, "side": "buy", "quantity": quantity,
                                                     "order_type": "market", "stop_loss": str(stop),
                                                     "take_profit": str(target), "tier": tier.tier, "reason": why})
        return not failed and trade.get("filled_quantity", 0) > 0

    def choose(self, quote: dict[str, Any], tech: dict[str, Any], patterns: list[dict[str, Any]], catalyst: bool,
               day: date):
        """(tier, entry, stop, target, reason) for the best tier that holds, or the ``Pass``."""
        rsi, ratio = tech.get("rsi14"), quote.get("volume_ratio")
        change = quote.get("change_pct") or 0.0
        if rsi is None or ratio is None:
            return Pass("data_unavailable", "not enough data for RSI or volume ratio")
        if rsi > self.profile.entry.pass_rsi_above or rsi < self.profile.entry.pass_rsi_below:
            return Pass("rsi_out_of_range",
                        f"RSI {rsi:.1f} outside {self.profile.entry.pass_rsi_below:g}-{self.profile.entry.pass_rsi_above:g}")
        if ratio < 1:
            return Pass("volume_below_average", f"volume below average (ratio {ratio:.2f})")
        bullish = sorted((p for p in patterns if p["direction"] == "bullish"), key=lambda p: -p["confidence"])
        price = Decimal(quote["ask"])
        unclear_stop = False
        for tier in self.profile.entry.tiers:
            if ratio <= tier.min_volume_ratio or not tier.rsi_min <= rsi <= tier.rsi_max:
                continue
            pattern = bullish[0] if bullish else None
            if tier.setup == "pattern_and_catalyst" and not (pattern and catalyst):
                continue
            if tier.setup == "pattern_or_catalyst" and not (pattern or catalyst):
                continue
            if tier.setup == "momentum" and not (change > (tier.min_change_pct or 0) and (pattern or ratio > tier.min_volume_ratio)):
                continue
            levels = self._levels(price, pattern, tech, tier, day)
            if levels is None:
                unclear_stop = True
                continue
            stop, target = levels
            why = (f"tier {tier.tier}: volume ratio {ratio:.2f}, RSI {rsi:.1f}, change {change:+.2f}%"
                   + (f", {pattern['name']} ({pattern['confidence']:.2f})" if pattern else "") + f"; stop {stop}, target {target}")
            return tier, price, stop, target, why
        return Pass("no_clear_stop" if unclear_stop else "no_tier_holds",
                    f"no tier holds{' with a clear stop' if unclear_stop else ''}: volume ratio {ratio:.2f}, RSI {rsi:.1f}, "
                    f"change {change:+.2f}%, {len(bullish)} bullish pattern(s), catalyst {'yes' if catalyst else 'unknown'}")

    def _levels(self, price: Decimal, pattern: dict[str, Any] | None, tech: dict[str, Any], tier: EntryTier,
                day: date) -> tuple[Decimal, Decimal] | None:
        """A stop and target that respect the stop distance and the tier's reward:risk, on the tick grid."""
        max_stop = price * (1 - self.profile.risk.max_stop_distance_pct / 100)
        stop = Decimal(pattern["stop"]) if pattern else None
        atr = tech.get("atr14")
        if stop is None or stop >= price or stop < max_stop:
            if not atr:
                return None
            stop = price - Decimal(str(atr)) * ATR_STOP_MULTIPLE
        stop = self._tick(max(stop, max_stop), Rounding.UP, day)
        risk = price - stop
        if risk <= 0:
            return None
        target = price + risk * tier.min_reward_risk * TARGET_MARGIN
        if pattern and Decimal(pattern["target"]) > target:
            target = Decimal(pattern["target"])
        return stop, self._tick(target, Rounding.UP, day)

    def _tick(self, price: Decimal, how: Rounding, day: date) -> Decimal:
        return round_to_tick(self.profile.market, price, day, how, self.profile.ticks.hk_phase2_date)


# --- The seeded random-entry control of ``--replay --compare`` ----------------------------------------
class RandomEntryBrain:
    """As many entries as the agent made in the same cycle, in symbols drawn at random from the session's
    universe, with the levels the noise floor accepts; the monitor then exits them like the agent's own.

    ``entries_by_cycle`` maps a cycle's market-local start (``YYYY-MM-DD HH:MM``) to the agent's entry count.
    The draw depends only on ``seed`` and that key, so the same seed gives the same control.
    """

    name = "random"

    def __init__(self, profile: Profile, entries_by_cycle: dict[str, int], seed: int) -> None:
        self.profile = profile
        self.entries_by_cycle = entries_by_cycle
        self.seed = seed

    async def run_cycle(self, executor: ToolExecutor, context: str) -> BrainResult:
        import random

        ctx = executor.ctx
        result = BrainResult(CycleStatus.COMPLETED)
        key = cycle_key(ctx.calendar.local(ctx.clock.now()))
        wanted = self.entries_by_cycle.get(key, 0)
        if not wanted:
            result.final_text = "the agent made no entry in this cycle"
            return result

        async def call(name: str, args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
            outcome = await executor.run(name, args)
            result.iterations += 1
            return outcome.data, outcome.is_error

        portfolio, _ = await call("get_portfolio", {})
        held = {p["symbol"] for p in portfolio.get("positions", [])}
        universe = sorted(str(s) for s in ctx.market.universe if str(s) not in held)
        order = random.Random(f"{self.seed}:{key}").sample(universe, len(universe))
        tier = self.profile.tier(2)
        entered = 0
        for symbol in order:
            if entered >= wanted:
                break
            quote, failed = await call("get_quote", {"symbol": symbol})
            if failed:
                continue
            entry = Decimal(quote["ask"])
            lot = int(quote["lot_size"])
            args = {"symbol": symbol, "quantity": lot, "entry": str(entry), "stop": str(entry), "target": str(entry),
                    "tier": tier.tier}
            probe, _ = await call("check_risk", args)
            levels = probe.get("acceptable_levels")
            if not levels:
                continue
            args.update(stop=levels["stop_at_most"], target=levels["target_at_least"])
            probe, _ = await call("check_risk", args)
            quantity = int(probe.get("suggested_quantity") or 0)
            if quantity <= 0:
                continue
            verdict, _ = await call("check_risk", {**args, "quantity": quantity})
            if not verdict.get("approved"):
                continue
            trade, failed = await call("execute_trade", {
                "symbol": symbol, "side": "buy", "quantity": quantity, "order_type": "market",
                "stop_loss": args["stop"], "take_profit": args["target"], "tier": tier.tier,
                "reason": f"random control (seed {self.seed})"})
            if not failed and trade.get("filled_quantity", 0) > 0:
                entered += 1
        result.final_text = f"{entered} random entr{'y' if entered == 1 else 'ies'} of {wanted}"
        return result


def cycle_key(local_time) -> str:
    """A cycle's market-local start to the minute: how the random control finds the agent's cycle."""
    return local_time.strftime("%Y-%m-%d %H:%M")
