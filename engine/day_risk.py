"""The day's risk as the account and the store tell it (``RiskState`` for ``core.risk``), and the
daily-loss rule enforced: a warning once at the warning level; at the halt level no new entries and
every position closed."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Awaitable, Callable

from consciousness_notify import Event, EventType
from core.risk import DailyLossAction, RiskState, daily_loss_action
from engine.context import MonitorContext
from signals import ExitReason

CloseAll = Callable[[ExitReason, str], Awaitable[list[dict[str, Any]]]]


async def risk_state(ctx: MonitorContext, halted_by_control: str | None = None) -> RiskState:
    now = ctx.clock.now()
    day = ctx.trading_day()
    account = await ctx.broker.account()
    open_positions = await ctx.store.open_positions()
    unrealized = Decimal(0)
    if open_positions:
        snaps = await ctx.broker.snapshots([p.symbol for p in open_positions])
        for p in open_positions:
            if p.symbol in snaps:
                unrealized += (snaps[p.symbol].quote.price - p.entry_price) * p.quantity
    risk_day = await ctx.store.ensure_risk_day(day, account.equity)
    day_start = ctx.calendar.at_local(day, datetime.min.time())
    halted = bool(risk_day["halted"]) or halted_by_control is not None
    reason = risk_day["halt_reason"] or halted_by_control
    return RiskState(
        equity=account.equity, cash=account.cash, open_symbols=frozenset(p.symbol for p in open_positions),
        entries_today=await ctx.store.entries_on(day), realized_pnl_today=await ctx.store.realized_pnl_on(day, day_start),
        unrealized_pnl=unrealized, start_of_day_equity=Decimal(risk_day["start_equity"]), halted=halted,
        halt_reason=reason, minutes_to_close=ctx.calendar.minutes_to_close(now),
        minutes_to_break=ctx.calendar.minutes_to_break(now),
    )


async def enforce_daily_loss(ctx: MonitorContext, close_all: CloseAll, state: RiskState) -> DailyLossAction:
    """Warn at the warning level; at the halt level stop new entries and close everything."""
    action = daily_loss_action(state, ctx.profile)
    day = ctx.trading_day()
    risk_day = await ctx.store.risk_day(day)
    if action is DailyLossAction.WARN and risk_day and not risk_day["warned"]:
        await ctx.store.set_warned(day)
        await ctx.notifier.send(Event(EventType.RISK_WARNING, f"Daily loss {state.daily_pnl_pct:.2f}%",
                                      f"Daily P&L {state.daily_pnl:,.2f} ({state.daily_pnl_pct:.2f}%); halt at "
                                      f"-{ctx.profile.risk.daily_loss_halt_pct}%.", {"daily_pnl_pct": state.daily_pnl_pct}))
    if action is DailyLossAction.HALT and risk_day and not risk_day["halted"]:
        reason = f"daily loss {state.daily_pnl_pct:.2f}% reached the -{ctx.profile.risk.daily_loss_halt_pct}% limit"
        await ctx.store.set_halt(day, True, reason, ctx.clock.now())
        await ctx.notifier.send(Event(EventType.RISK_HALT, "Trading halted: daily loss limit", reason + "; closing everything.",
                                      {"daily_pnl": state.daily_pnl, "daily_pnl_pct": state.daily_pnl_pct}))
        await close_all(ExitReason.RISK_HALT, reason)
    return action
