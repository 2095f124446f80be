"""The twelve trading tools: pydantic input models (which also generate the JSON schemas sent to
Claude), dispatch, compact JSON results.

Bad input from the model (unknown symbol, wrong type, odd lot, off-tick or far-from-market price,
stop on the wrong side, missing stop) comes back as an error result saying what is wrong and what
is allowed; nothing reaches the broker and the loop goes on.
"""
from __future__ import annotations

import enum
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Awaitable, Callable, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from brokers.base import (
    Broker, BrokerError, OrderStatus, OrderType, Timeframe, UnknownSymbol,
)
from core.clock import Clock
from config.settings import Profile
from consciousness_notify import Event, EventType, Notifier, Priority
from data.calendar import MarketCalendar
from data.universe import is_synthetic_symbol
from data.market import MarketData
from core.instruments import (
    Market, OrderSide, Rounding, Symbol, SymbolError, is_on_tick, parse_symbol, round_to_tick, tick_size,
)
from position_monitor import EntryAttempt, ExecutorStatus, MonitorManager, PositionExecutor
from engine.day_risk import risk_state
from engine.entries import EntryDecision, EntryRefused
from brokers.fees import execution_fees
from data.indicators import minute_volatility_pct
from core.risk import DailyLossAction, EntryProposal, Noise, RiskState, check_risk
from signals import ExitReason
from store.trading import TradingStore
from engine.workflow import WorkflowTracker

log = logging.getLogger(__name__)


# --- Inputs ---------------------------------------------------------------------------------------
class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScanMarketInput(ToolInput):
    """Rank the index's stocks by momentum and volume ratio."""

    index: str = Field("ALL", description="HK: HSI, HSCEI, HSTECH or ALL; US: ALL or a configured list")
    limit: int = Field(10, ge=1, le=20)
    min_volume_ratio: float | None = Field(None, ge=0, description="only stocks trading at least this multiple of normal volume")
    max_price: Decimal | None = Field(None, gt=0)


class SymbolInput(ToolInput):
    symbol: str = Field(description="e.g. HK.00700 (also 700, 0700.HK) or US.AAPL (also AAPL)")


class TimeframeInput(SymbolInput):
    timeframe: Literal["5m", "15m", "1h", "1d"] = "5m"


class NewsInput(SymbolInput):
    hours: int = Field(24, ge=1, le=72)


class CheckRiskInput(SymbolInput):
    side: OrderSide = OrderSide.BUY
    quantity: int = Field(gt=0, description="shares; a whole number of board lots")
    entry: Decimal = Field(gt=0)
    stop: Decimal = Field(gt=0)
    target: Decimal = Field(gt=0)
    tier: int = Field(2, ge=1, le=3)


class PortfolioInput(ToolInput):
    pass


class ExecuteTradeInput(SymbolInput):
    side: OrderSide = OrderSide.BUY
    quantity: int = Field(gt=0, description="shares; a whole number of board lots")
    order_type: Literal["market", "limit"] = "market"
    limit_price: Decimal | None = Field(None, gt=0, description="required for limit orders; on the tick grid")
    stop_loss: Decimal = Field(gt=0, description="the position's stop, below the entry")
    take_profit: Decimal = Field(gt=0, description="the position's target, above the entry")
    tier: int = Field(ge=1, le=3)
    reason: str = Field(min_length=1, max_length=1000)


class ClosePositionInput(SymbolInput):
    reason: str = Field(min_length=1, max_length=500)


class CloseAllInput(ToolInput):
    reason: str = Field(min_length=1, max_length=500)


class SendAlertInput(ToolInput):
    severity: Literal["info", "warning", "critical"]
    subject: str = Field(min_length=1, max_length=200)
    message: str = Field(min_length=1, max_length=4000)


class PassReason(str, enum.Enum):
    """Why a candidate was turned down: counted per replay so a quiet run explains itself."""

    RSI_OUT_OF_RANGE = "rsi_out_of_range"
    VOLUME_BELOW_AVERAGE = "volume_below_average"
    NO_TIER_HOLDS = "no_tier_holds"
    NO_CLEAR_STOP = "no_clear_stop"
    RISK_REFUSED = "risk_refused"
    NO_LOT_FITS = "no_lot_fits"
    ALREADY_HELD = "already_held"
    MAX_POSITIONS = "max_positions"
    DATA_UNAVAILABLE = "data_unavailable"
    NO_CANDIDATES = "no_candidates"
    HALTED = "halted"
    OTHER = "other"


class LogDecisionInput(ToolInput):
    decision: Literal["trade", "skip", "close", "emergency", "observation"]
    pass_reason: PassReason | None = Field(None, description="for a skip: the main reason the candidate was passed")
    symbol: str | None = None
    reasoning: str = Field(min_length=1, max_length=4000)
    tier: int | None = Field(None, ge=1, le=3)
    entry: Decimal | None = None
    stop: Decimal | None = None
    target: Decimal | None = None


class ToolError(Exception):
    """A refusal to report back to the model as an error result."""


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.content)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Symbol):
        return str(value)
    return str(value)


# --- Context --------------------------------------------------------------------------------------
class DataCall(NamedTuple):
    """One market data tool call of a cycle: ``problem`` is None when the market answered."""

    tool: str
    problem: str | None


@dataclass
class CycleContext:
    """Everything one cycle's tools need; built by the run, shared with the brains."""

    profile: Profile
    clock: Clock
    calendar: MarketCalendar
    broker: Broker
    market: MarketData
    store: TradingStore
    notifier: Notifier
    monitors: MonitorManager
    tracker: WorkflowTracker
    cycle_id: str
    brain: str
    live: bool = False
    halted_by_control: str | None = None
    trades_executed: int = 0
    decisions_made: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)
    data_calls: list[DataCall] = field(default_factory=list)
    news: Any = None  # news.service.NewsService; None: no news source at all

    @property
    def market_id(self) -> Market:
        return self.profile.market

    def today(self):
        return self.calendar.trading_day(self.clock.now())

    def data_outage(self) -> str | None:
        """Why this cycle could not see the market, or None: the scan failed or found no history,
        or every market data call failed. A cycle that decided nothing for this reason must not
        pass for a quiet day (the original's technicals were broken for three days unnoticed)."""
        def all_failed(calls: list[DataCall]) -> bool:
            return bool(calls) and all(c.problem for c in calls)

        scans = [c for c in self.data_calls if c.tool == "scan_market"]
        if not (all_failed(scans) or all_failed(self.data_calls)):
            return None
        return "; ".join(dict.fromkeys(c.problem for c in self.data_calls if c.problem))


# --- The executor ---------------------------------------------------------------------------------
Handler = Callable[["ToolExecutor", Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    model: type[ToolInput]
    handler: Handler


TOOL_SPECS: dict[str, ToolSpec] = {}
MARKET_DATA_TOOLS = frozenset({"scan_market", "get_quote", "get_technicals", "detect_patterns"})


def tool(name: str, description: str, model: type[ToolInput]):
    def register(fn: Handler) -> Handler:
        TOOL_SPECS[name] = ToolSpec(name, description, model, fn)
        return fn
    return register


def tool_schemas() -> list[dict[str, Any]]:
    """The tool definitions sent to Claude, generated from the input models (one source)."""
    out = []
    for spec in TOOL_SPECS.values():
        schema = spec.model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        out.append({"name": spec.name, "description": spec.description, "input_schema": schema})
    return out


def round_trip_cost(symbol: Symbol, entry: Decimal, quantity: int, bid: Decimal, ask: Decimal,
                    profile: Profile) -> Decimal:
    """Per share: the fees of buying and selling ``quantity`` at ``entry`` plus the spread."""
    shares = max(quantity, 1)
    value = entry * shares
    fees = (execution_fees(symbol.market, OrderSide.BUY, shares, value, profile).total
            + execution_fees(symbol.market, OrderSide.SELL, shares, value, profile).total)
    return fees / shares + max(ask - bid, Decimal(0))


class ToolExecutor:
    def __init__(self, ctx: CycleContext) -> None:
        self.ctx = ctx
        self._minute_sigma: dict[Symbol, float | None] = {}

    async def run(self, name: str, raw_input: Any) -> ToolResult:
        spec = TOOL_SPECS.get(name)
        if spec is None:
            return ToolResult(_json({"error": f"unknown tool {name!r}", "tools": sorted(TOOL_SPECS)}), True)
        self.ctx.tracker.tool_called(name)
        try:
            parsed = spec.model.model_validate(raw_input if raw_input is not None else {})
        except ValidationError as exc:
            return ToolResult(_json({"error": "invalid input", "problems": _problems(exc)}), True)
        try:
            result = await spec.handler(self, parsed)
        except (ToolError, SymbolError, UnknownSymbol) as exc:
            return ToolResult(_json({"error": str(exc)}), True)
        except BrokerError as exc:
            if name in MARKET_DATA_TOOLS:
                self.ctx.data_calls.append(DataCall(name, f"{name}: {exc}"))
            return ToolResult(_json({"error": f"broker: {exc}"}), True)
        if name in MARKET_DATA_TOOLS and not result.get("no_history"):  # a blind scan recorded itself
            self.ctx.data_calls.append(DataCall(name, None))
        return ToolResult(_json(result))

    # --- helpers ----------------------------------------------------------------------------
    def symbol(self, text: str) -> Symbol:
        symbol = parse_symbol(text)
        if symbol.market is not self.ctx.market_id:
            raise ToolError(f"{symbol} is not a {self.ctx.market_id.value} symbol; this agent trades {self.ctx.market_id.value} only")
        if not self.ctx.broker.capabilities.is_paper and is_synthetic_symbol(symbol):
            raise ToolError(f"{symbol} is a synthetic sample code; it does not exist at a real broker")
        return symbol

    async def risk_state(self) -> RiskState:
        return await risk_state(self.ctx.monitors.ctx, self.ctx.halted_by_control)

    async def noise(self, symbol: Symbol, entry: Decimal, quantity: int, bid: Decimal, ask: Decimal) -> Noise:
        """The symbol's one-minute noise (two sessions of bars, once per cycle) and an entry's round-trip cost."""
        ctx = self.ctx
        if symbol not in self._minute_sigma:
            try:
                bars = await ctx.market.bars(symbol, Timeframe.M1, 2 * ctx.calendar.full_day_minutes(symbol.market))
            except BrokerError as exc:
                log.warning("no minute bars for the noise floor of %s: %s", symbol, exc)
                bars = None
            self._minute_sigma[symbol] = minute_volatility_pct(bars) if bars is not None else None
        return Noise(self._minute_sigma[symbol], round_trip_cost(symbol, entry, quantity, bid, ask, ctx.profile),
                     ctx.today())

    def _check_price(self, label: str, price: Decimal, symbol: Symbol) -> None:
        day = self.ctx.today()
        phase2 = self.ctx.profile.ticks.hk_phase2_date
        if not is_on_tick(symbol.market, price, day, phase2):
            tick = tick_size(symbol.market, price, day, phase2)
            down = round_to_tick(symbol.market, price, day, Rounding.DOWN, phase2)
            up = round_to_tick(symbol.market, price, day, Rounding.UP, phase2)
            raise ToolError(f"{label} {price} is not on the tick grid of {symbol} (tick {tick}): use {down} or {up}")

    async def check_daily_loss(self, state: RiskState | None = None) -> DailyLossAction:
        """Warn at the warning level; at the halt level stop new entries and close everything."""
        return await self.ctx.monitors.check_daily_loss(state or await self.risk_state())


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "input"
        value = err.get("input")
        if err["type"] == "missing":
            out.append(f"{where}: required")
        elif err["type"] == "extra_forbidden":
            out.append(f"{where}: not an input of this tool")
        else:
            out.append(f"{where} = {value!r}: {err['msg']}")
    return out


# --- The tools ------------------------------------------------------------------------------------
@tool("scan_market", "Scan an index for momentum candidates: symbol, name, price, change %, volume ratio "
      "(today's volume vs the usual volume by this minute), momentum score. Synthetic sample symbols say so.",
      ScanMarketInput)
async def _scan(ex: ToolExecutor, inp: ScanMarketInput) -> dict[str, Any]:
    market = ex.ctx.market
    rows = await market.scan(inp.index, inp.limit, inp.min_volume_ratio, inp.max_price)
    scanned = market.scan_list(inp.index)
    blind = market.without_history(scanned)
    if scanned and len(blind) == len(scanned):
        why = "; ".join(sorted(set(blind.values()))[:3])
        problem = f"scan_market: no price history for any of the {len(scanned)} symbols of {inp.index} ({why})"
        ex.ctx.data_calls.append(DataCall("scan_market", problem))
        return {"index": inp.index, "candidates": rows, "count": len(rows), "no_history": len(blind),
                "warning": problem + "; volume ratios are unknown, so nothing can be ranked"}
    return {"index": inp.index, "candidates": rows, "count": len(rows)}


@tool("get_quote", "Latest quote: price, bid, ask, volume, volume ratio, change %, day high/low, open, "
      "previous close, board lot size and tick.", SymbolInput)
async def _quote(ex: ToolExecutor, inp: SymbolInput) -> dict[str, Any]:
    return (await ex.ctx.market.quote(ex.symbol(inp.symbol))).to_dict()


@tool("get_technicals", "Technical indicators on closed bars of the timeframe: RSI14, MACD 12/26/9, EMA9/21, "
      "SMA20/50, ATR14, session VWAP, Bollinger bands, support/resistance, trend.", TimeframeInput)
async def _technicals(ex: ToolExecutor, inp: TimeframeInput) -> dict[str, Any]:
    symbol = ex.symbol(inp.symbol)
    tech = await ex.ctx.market.technicals(symbol, Timeframe(inp.timeframe))
    return {"symbol": str(symbol), "timeframe": inp.timeframe, **tech.to_dict()}


@tool("detect_patterns", "Chart patterns on closed bars of the timeframe (breakout, near_breakout, "
      "momentum_continuation, bull_flag, ascending_triangle, cup_handle, abcd and bearish mirrors) with "
      "entry/stop/target on the tick grid and a confidence.", TimeframeInput)
async def _patterns(ex: ToolExecutor, inp: TimeframeInput) -> dict[str, Any]:
    symbol = ex.symbol(inp.symbol)
    found = await ex.ctx.market.patterns(symbol, Timeframe(inp.timeframe))
    return {"symbol": str(symbol), "timeframe": inp.timeframe, "patterns": [p.to_dict() for p in found]}


@tool("get_news", "Recent headlines about the symbol (newest first, a few) with source, age, sentiment "
      "(-1..1) and catalyst tags (earnings_beat, contract_win, profit_warning, ...); the overall score and "
      "has_catalyst (a positive catalyst with a score at the profile's threshold). Providers that failed are named.",
      NewsInput)
async def _news(ex: ToolExecutor, inp: NewsInput) -> dict[str, Any]:
    from news.service import NO_SOURCE_NOTE

    symbol = ex.symbol(inp.symbol)
    if ex.ctx.news is None:
        return {"symbol": str(symbol), "hours": inp.hours, "headlines": [], "score": 0.0, "has_catalyst": False,
                "note": NO_SOURCE_NOTE}
    return await ex.ctx.news.headlines(symbol, inp.hours)


@tool("check_risk", "Check a proposed long entry against every risk limit (positions, caps, stop distance, "
      "reward:risk of the tier, daily entries, time to the break/close, daily loss). Returns approved, reasons, "
      "warnings, position value, max loss, reward:risk and a suggested quantity in whole board lots.", CheckRiskInput)
async def _check_risk(ex: ToolExecutor, inp: CheckRiskInput) -> dict[str, Any]:
    symbol = ex.symbol(inp.symbol)
    snap = (await ex.ctx.broker.snapshots([symbol]))[symbol]
    proposal = EntryProposal(symbol, inp.side, inp.quantity, inp.entry, inp.stop, inp.target, inp.tier, snap.lot_size)
    noise = await ex.noise(symbol, inp.entry, inp.quantity, snap.quote.bid, snap.quote.ask)
    verdict = check_risk(proposal, await ex.risk_state(), ex.ctx.profile, noise)
    ex.ctx.tracker.risk_checked()
    return {"symbol": str(symbol), "board_lot": snap.lot_size, **verdict.to_dict()}


@tool("get_portfolio", "Cash, equity, open positions (symbol, quantity, average cost, price, P&L), today's "
      "realized P&L, entries today and whether trading is halted.", PortfolioInput)
async def _portfolio(ex: ToolExecutor, inp: PortfolioInput) -> dict[str, Any]:
    return await portfolio_summary(ex)


async def portfolio_summary(ex: ToolExecutor) -> dict[str, Any]:
    ctx = ex.ctx
    state = await ex.risk_state()
    positions = await ctx.store.open_positions()
    snaps = await ctx.broker.snapshots([p.symbol for p in positions]) if positions else {}
    rows = []
    for p in positions:
        price = snaps[p.symbol].quote.price if p.symbol in snaps else None
        pnl = None if price is None else (price - p.entry_price) * p.quantity
        rows.append({"symbol": str(p.symbol), "side": p.side.value, "quantity": p.quantity, "avg_cost": p.entry_price,
                     "price": price, "pnl": None if pnl is None else pnl.quantize(Decimal("0.01")),
                     "stop": p.stop_price, "target": p.target_price})
    return {
        "currency": ctx.profile.currency, "cash": state.cash.quantize(Decimal("0.01")),
        "equity": state.equity.quantize(Decimal("0.01")), "positions": rows,
        "realized_pnl_today": state.realized_pnl_today.quantize(Decimal("0.01")),
        "daily_pnl_pct": state.daily_pnl_pct.quantize(Decimal("0.01")), "entries_today": state.entries_today,
        "max_entries_per_day": ctx.profile.risk.max_entries_per_day, "max_positions": ctx.profile.risk.max_positions,
        "halted": state.halted, "halt_reason": state.halt_reason,
    }


@tool("execute_trade", "Buy to open a position: sized in whole board lots, checked against every risk limit, "
      "sent with a client order id (never twice), filled or cancelled at the timeout, recorded, protected by a "
      "broker-side backstop where the broker supports one, and handed to the exit monitor.", ExecuteTradeInput)
async def _execute(ex: ToolExecutor, inp: ExecuteTradeInput) -> dict[str, Any]:
    ctx = ex.ctx
    symbol = ex.symbol(inp.symbol)
    snap = (await ctx.broker.snapshots([symbol]))[symbol]
    market_price = snap.quote.ask if inp.side is OrderSide.BUY else snap.quote.bid
    if inp.order_type == "limit":
        if inp.limit_price is None:
            raise ToolError("limit_price is required for a limit order")
        ex._check_price("limit_price", inp.limit_price, symbol)
        deviation = abs(inp.limit_price - snap.quote.price) / snap.quote.price * 100
        if deviation > ctx.profile.risk.max_price_deviation_pct:
            raise ToolError(f"limit_price {inp.limit_price} is {deviation:.2f}% from the market {snap.quote.price}; "
                            f"allowed within {ctx.profile.risk.max_price_deviation_pct}%")
        entry = inp.limit_price
    else:
        entry = market_price
    ex._check_price("stop_loss", inp.stop_loss, symbol)
    ex._check_price("take_profit", inp.take_profit, symbol)
    proposal = EntryProposal(symbol, inp.side, inp.quantity, entry, inp.stop_loss, inp.take_profit, inp.tier, snap.lot_size)
    noise = await ex.noise(symbol, entry, inp.quantity, snap.quote.bid, snap.quote.ask)
    verdict = check_risk(proposal, await ex.risk_state(), ctx.profile, noise)
    ctx.tracker.risk_checked()
    if not verdict.approved:
        raise ToolError("refused by risk: " + "; ".join(verdict.reasons)
                        + f" (suggested quantity {verdict.suggested_quantity}, board lot {snap.lot_size})")
    return await place_entry(ex, symbol, inp, entry)


async def place_entry(ex: ToolExecutor, symbol: Symbol, inp: ExecuteTradeInput, entry: Decimal) -> dict[str, Any]:
    """Hand the approved decision to a position executor: it sends the order, waits for the fill, opens
    the position and places the backstop; the run's monitors then watch it."""
    ctx = ex.ctx
    decision = EntryDecision(
        symbol=symbol, side=inp.side, quantity=inp.quantity,
        order_type=OrderType.MARKET if inp.order_type == "market" else OrderType.LIMIT,
        limit_price=inp.limit_price if inp.order_type == "limit" else None, stop=inp.stop_loss,
        target=inp.take_profit, tier=inp.tier, reason=inp.reason, cycle_id=ctx.cycle_id,
    )
    attempt = EntryAttempt(decision, ExecutorStatus.PENDING_ENTRY)
    try:
        attempt = await PositionExecutor.enter(ctx.monitors.ctx, ctx.market, decision, entry, attempt)
    except EntryRefused as exc:
        raise ToolError(str(exc)) from None
    finally:
        if attempt.order is not None:  # the order reached its end at the broker: the decision is recorded
            await log_entry_decision(ctx, decision, entry, attempt)
    order = attempt.order
    result: dict[str, Any] = {
        "symbol": str(symbol), "order_id": order.broker_order_id, "client_order_id": attempt.client_order_id,
        "requested_quantity": inp.quantity, "filled_quantity": order.filled_quantity,
        "fill_price": order.avg_fill_price, "fees": order.fees,
    }
    if attempt.executor is None:
        result["status"] = "rejected" if order.status is OrderStatus.REJECTED else "not_filled"
        result["reason"] = order.reject_reason or f"no fill within {ctx.monitors.ctx.fill_timeout:g} s; the order was cancelled"
        return result
    result["status"] = "filled" if order.filled_quantity == inp.quantity else "partial"
    result["position_id"] = attempt.executor.position.position_id
    result["backstop"] = attempt.backstop
    ctx.trades_executed += 1
    ctx.entries.append(result)
    ctx.monitors.watch(attempt.executor)
    ctx.tracker.advance_monitor()
    return result


async def log_entry_decision(ctx: CycleContext, decision: EntryDecision, entry: Decimal, attempt: EntryAttempt) -> None:
    await ctx.store.log_decision(
        cycle_id=ctx.cycle_id, created_at=ctx.clock.now(), decision="trade", reasoning=decision.reason, source=ctx.brain,
        symbol=decision.symbol, tier=decision.tier, entry=entry, stop=decision.stop, target=decision.target,
        data={"client_order_id": attempt.client_order_id, "quantity": decision.quantity,
              "filled": attempt.order.filled_quantity if attempt.order else 0},
    )
    ctx.decisions_made += 1


@tool("close_position", "Close an open position now at the market: cancels its protective orders first, "
      "returns the fill and realized P&L.", ClosePositionInput)
async def _close(ex: ToolExecutor, inp: ClosePositionInput) -> dict[str, Any]:
    symbol = ex.symbol(inp.symbol)
    position = await ex.ctx.store.open_position_for(symbol)
    if position is None:
        held = [str(p.symbol) for p in await ex.ctx.store.open_positions()]
        raise ToolError(f"no open position in {symbol}; open positions: {', '.join(held) or 'none'}")
    await ex.ctx.store.log_decision(cycle_id=ex.ctx.cycle_id, created_at=ex.ctx.clock.now(), decision="close",
                                    reasoning=inp.reason, source=ex.ctx.brain, symbol=symbol)
    return await ex.ctx.monitors.close(position, ExitReason.MANUAL, inp.reason)


@tool("close_all", "Close every open position now (emergency or end of day); one result per position.", CloseAllInput)
async def _close_all(ex: ToolExecutor, inp: CloseAllInput) -> dict[str, Any]:
    await ex.ctx.store.log_decision(cycle_id=ex.ctx.cycle_id, created_at=ex.ctx.clock.now(), decision="emergency",
                                    reasoning=inp.reason, source=ex.ctx.brain)
    return {"results": await ex.ctx.monitors.close_all(ExitReason.CLOSE_ALL, inp.reason)}


@tool("send_alert", "Send an alert to the oversight agent (and email/webhook for critical ones when configured).",
      SendAlertInput)
async def _alert(ex: ToolExecutor, inp: SendAlertInput) -> dict[str, Any]:
    priority = {"info": Priority.NORMAL, "warning": Priority.HIGH, "critical": Priority.URGENT}[inp.severity]
    await ex.ctx.notifier.send(Event(EventType.CYCLE_SUMMARY if inp.severity == "info" else EventType.RISK_WARNING,
                                     inp.subject, inp.message, {"severity": inp.severity, "cycle_id": ex.ctx.cycle_id},
                                     priority, msg_type="message"))
    return {"sent": True, "priority": priority.value}


@tool("log_decision", "Record a decision (trade, skip, close, emergency, observation) with its reasoning; every "
      "decision states tier, entry, stop and target where they apply.", LogDecisionInput)
async def _log(ex: ToolExecutor, inp: LogDecisionInput) -> dict[str, Any]:
    symbol = ex.symbol(inp.symbol) if inp.symbol else None
    decision_id = await ex.ctx.store.log_decision(
        cycle_id=ex.ctx.cycle_id, created_at=ex.ctx.clock.now(), decision=inp.decision, reasoning=inp.reasoning,
        source=ex.ctx.brain, symbol=symbol, tier=inp.tier, entry=inp.entry, stop=inp.stop, target=inp.target,
        data={"pass_reason": inp.pass_reason.value} if inp.pass_reason else None,
    )
    ex.ctx.decisions_made += 1
    return {"decision_id": decision_id}
