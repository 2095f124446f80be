"""A trading session: the cycles at the profile's times (the brain's tool loop over the twelve
tools), then the monitors until every position is closed or the session ends, then the summary."""
from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from consciousness_notify import Event, EventType, lost_events_line
from store.bigbro import InboxMessage
from data.calendar import Session, SessionState
from ops.logsetup import current_log_file
from position_monitor import MonitorOutcome
from runner.sessions import scheduled_cycle_times
from engine.spend import BudgetExhausted
from tool_executor import CycleContext, ToolExecutor
from engine.workflow import Phase, WorkflowTracker, default_progress_stream
from runner.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_REFUSED
from runner.control import inbox_for_the_brain, obey_controls, record_error, set_mode, supervise
from runner.runtime import Runtime, make_cycle_id

log = logging.getLogger("catalyst.run")



async def trade_mode(rt: Runtime, session: Session | None) -> int:
    """Cycles (after the opening range), then watch the monitors until done.

    On a broker: one cycle now (cron starts the run at a cycle time). On the paper exchange's
    sample session: every cycle of the profile's schedule that day, as cron would have run them.
    """
    code = await trade_session(rt, session)
    print_summary(rt)
    return code


async def trade_session(rt: Runtime, session: Session | None) -> int:
    """The cycles due in ``session`` (or now, on a broker), then the monitors until they end; no summary."""
    code = EXIT_OK
    first = True
    for when in cycle_times(rt, session):
        if when > rt.clock.now():
            await rt.clock.sleep_until(when)
        if session is not None and rt.calendar.state(rt.clock.now()) is not SessionState.OPEN:
            continue  # a scheduled time outside a replayed session (a half day); a broker run was gated at its start
        if not first:  # a later cycle of the same run: Big Bro may have written meanwhile (e.g. resume)
            await obey_controls(rt)
        first = False
        outcome = await run_cycle(rt)
        if outcome == EXIT_REFUSED and len(rt.cycles) > 1:
            outcome = EXIT_OK  # "refused" is about the run's start; a later cycle stopping is a clean end
        code = max(code, outcome)
        if code == EXIT_FAILED:
            break
    await supervise(rt)
    return code


def cycle_times(rt: Runtime, session: Session | None) -> list[datetime]:
    now = rt.clock.now()
    today = session or rt.calendar.session_at(now)
    if today is None:
        return [now]
    if session is None:
        delay = timedelta(minutes=rt.profile.schedule.opening_range_minutes)
        start = today.open + delay if today.state_at(now) is SessionState.OPEN and now < today.open + delay else now
        return [start]
    return scheduled_cycle_times(rt.profile, rt.calendar, today)


async def run_cycle(rt: Runtime) -> int:
    """One trading cycle, recorded from start to finish: its row never stays 'running'."""
    now = rt.clock.now()
    cycle_id = make_cycle_id(rt.profile.market.value, rt.calendar.local(now), rt.owner, len(rt.cycles))
    tracker = WorkflowTracker(rt.clock, default_progress_stream())
    ctx = CycleContext(rt.profile, rt.clock, rt.calendar, rt.broker, rt.market, rt.store, rt.notifier, rt.monitors,
                       tracker, cycle_id, rt.brain_name, rt.live, halted_by_control=rt.halted_by_control, news=rt.news)
    rt.cycles.append(ctx)
    await rt.store.start_cycle(cycle_id, "trade", rt.brain_name, now)
    try:
        return await _cycle_steps(rt, ctx)
    except BaseException as exc:  # a signal (CancelledError) as well: the row must not stay 'running'
        if not any(r["cycle_id"] == cycle_id for r in rt.cycle_results):
            await _abandon_cycle(rt, ctx, exc)
        raise


async def _abandon_cycle(rt: Runtime, ctx: CycleContext, exc: BaseException) -> None:
    """An unexpected error or a stop ended the cycle: its row says so (the run then fails loudly)."""
    stopped = isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))
    error = "the run was stopped during the cycle" if stopped else f"{type(exc).__name__}: {exc}"
    try:
        await _record_cycle_end(rt, ctx, "interrupted" if stopped else "failed", None, rt.notifier.redact(error))
    except Exception as again:  # noqa: BLE001 - the original error is the one to report
        log.warning("could not mark cycle %s failed: %s", ctx.cycle_id, type(again).__name__)


async def _cycle_steps(rt: Runtime, ctx: CycleContext) -> int:
    from runner.brains import CycleStatus, FatalBrainError

    cycle_id = ctx.cycle_id
    executor = ToolExecutor(ctx)
    brain = rt.brain
    await set_mode(rt, "trading", f"cycle {cycle_id} ({rt.brain_name} brain)")
    code = EXIT_OK
    try:
        if rt.brain_name == "claude":
            try:
                await rt.spend.ensure_room()
            except BudgetExhausted as exc:
                await rt.notifier.send(Event(EventType.BUDGET, "LLM budget exhausted before the cycle", str(exc),
                                             {"cycle_id": cycle_id}))
                await _finish_cycle(rt, ctx, "budget_stopped", None, str(exc))
                print(f"cycle {cycle_id}: refused, {exc}")
                return EXIT_REFUSED
        if rt.run_lock is not None and not await rt.run_lock.prove():
            await _finish_cycle(rt, ctx, "completed", None, None, summary=f"no new entries: {rt.run_lock.unproven}")
            print(f"cycle {cycle_id}: no new entries ({rt.run_lock.unproven})")
            return EXIT_REFUSED
        state = await executor.risk_state()
        if state.halted:
            await rt.store.log_decision(cycle_id=cycle_id, created_at=rt.clock.now(), decision="skip",
                                        reasoning=f"no new entries: {state.halt_reason}", source=rt.brain_name)
            await _finish_cycle(rt, ctx, "completed", None, None, summary=f"halted: {state.halt_reason}")
            print(f"cycle {cycle_id}: no new entries ({state.halt_reason})")
            return EXIT_REFUSED
        inbox, unread = await inbox_for_the_brain(rt)  # read when the brain is shown them, not before
        context = render_context(rt, ctx, await _portfolio(executor), inbox, await rt.spend.remaining(), unread)
        result = await brain.run_cycle(executor, context)
    except FatalBrainError as exc:
        error = str(exc)
        await rt.notifier.send(Event(EventType.RUN_FAILED, "Claude refused the run: " + error[:120], error,
                                     {"cycle_id": cycle_id}))
        await _finish_cycle(rt, ctx, "failed", None, error)
        await record_error(rt, f"cycle {cycle_id}: {error}")
        print(f"run failed: {rt.notifier.redact(error)}", file=sys.stderr)
        return EXIT_FAILED
    status, error = result.status.value, result.error
    if result.status is CycleStatus.FAILED:
        log.error("cycle %s failed: %s", cycle_id, result.error)
        await record_error(rt, f"cycle {cycle_id} failed: {result.error}")
        print(f"cycle {cycle_id} failed: {rt.notifier.redact(result.error or 'the brain failed')}", file=sys.stderr)
        code = EXIT_FAILED
    outage = ctx.data_outage()
    if outage and result.status is CycleStatus.COMPLETED:
        status, error, code = CycleStatus.FAILED.value, f"market data unavailable: {outage}", EXIT_FAILED
        await market_data_unavailable(rt, ctx, error)
    await _finish_cycle(rt, ctx, status, result, error)
    await executor.check_daily_loss()
    return code


async def market_data_unavailable(rt: Runtime, ctx: CycleContext, error: str) -> None:
    """A cycle that could not see the market: printed, counted, and an urgent event (alerted),
    so that days of "no candidate" are never mistaken for quiet markets."""
    error = rt.notifier.redact(error)
    print(f"cycle {ctx.cycle_id} failed: {error}", file=sys.stderr)
    await rt.notifier.send(Event(
        EventType.DATA_UNAVAILABLE, "Market data unavailable: the cycle could not decide anything",
        f"Cycle {ctx.cycle_id} ({rt.brain_name}): {error}. No entry was considered on real data; check the "
        "broker's market data (quota, permissions, connection).", {"cycle_id": ctx.cycle_id, "error": error}))
    await record_error(rt, f"cycle {ctx.cycle_id}: {error}")


async def _portfolio(executor: ToolExecutor) -> dict[str, Any]:
    from tool_executor import portfolio_summary

    return await portfolio_summary(executor)


def render_context(rt: Runtime, ctx: CycleContext, portfolio: dict[str, Any], inbox: list[InboxMessage],
                   budget_left: Decimal, unread: int = 0) -> str:
    import json

    now = rt.clock.now()
    local = rt.calendar.local(now)
    lines = [
        f"Now {local:%Y-%m-%d %H:%M %Z} ({rt.profile.market.value}); cycle {ctx.cycle_id}.",
        f"Session: {rt.calendar.state(now).value}; {rt.calendar.minutes_to_close(now) or 0:.0f} trading minutes to the close"
        + (f", {rt.calendar.minutes_to_break(now):.0f} to the lunch break" if rt.calendar.minutes_to_break(now) else "") + ".",
        "Portfolio: " + json.dumps(portfolio, separators=(",", ":"), default=str),
        f"LLM budget left today: USD {budget_left:.4f} of {rt.profile.budget.daily_usd}.",
    ]
    if inbox:
        lines.append("Messages from Big Bro (most urgent first): "
                     + json.dumps([m.for_context() for m in inbox], separators=(",", ":"), default=str))
    if unread:
        lines.append(f"{unread:,} more message(s) wait unread in the inbox; later cycles show them, most urgent first.")
    lines.append("Run the trading workflow now.")
    return "\n".join(lines)


async def _finish_cycle(rt: Runtime, ctx: CycleContext, status: str, result, error: str | None, summary: str | None = None) -> None:
    ctx.tracker.advance(Phase.LOG)
    ctx.tracker.advance(Phase.COMPLETE)
    tokens, cost = await _record_cycle_end(rt, ctx, status, result, error, summary)
    record = {"cycle_id": ctx.cycle_id, "status": status, "brain": rt.brain_name, "tools": len(ctx.tracker.tools),
              "entries": ctx.trades_executed, "decisions": ctx.decisions_made, "tokens": tokens, "cost_usd": cost,
              "requests": result.requests if result else 0, "error": error}
    rt.cycle_results.append(record)
    no_backstop = [e["symbol"] for e in ctx.entries if e.get("backstop") in ("none", "failed")]
    body = (f"Cycle {ctx.cycle_id} ({rt.brain_name}) {status}: {ctx.trades_executed} entr{'y' if ctx.trades_executed == 1 else 'ies'}, "
            f"{len(ctx.tracker.tools)} tool calls, cost USD {cost:.4f}.")
    if no_backstop:
        body += f" No broker backstop for: {', '.join(no_backstop)}."
    if error:
        body += f" Error: {error}"
    await rt.notifier.send(Event(EventType.CYCLE_SUMMARY, f"Cycle {status}: {ctx.trades_executed} entries", body,
                                 {**record, "entries_detail": ctx.entries, "phases": ctx.tracker.timings(),
                                  "no_backstop": no_backstop}))


async def _record_cycle_end(rt: Runtime, ctx: CycleContext, status: str, result, error: str | None,
                            summary: str | None = None) -> tuple[dict[str, int], Decimal]:
    """The cycle's row finished: status, phases, tools, usage and cost; returns (tokens, cost)."""
    usage = result.usage if result else None
    tokens = {"input": usage.input_tokens, "output": usage.output_tokens, "cache_write": usage.cache_write_tokens,
              "cache_read": usage.cache_read_tokens} if usage else {}
    cost = result.cost_usd if result else Decimal(0)
    await rt.store.finish_cycle(
        ctx.cycle_id, status=status, completed_at=rt.clock.now(), phases=ctx.tracker.timings(),
        tools_called=ctx.tracker.tools, iterations=result.iterations if result else 0, tokens=tokens, cost_usd=cost,
        trades_executed=ctx.trades_executed, decisions_made=ctx.decisions_made,
        summary=summary or (result.final_text[:2000] if result else None), error=error,
    )
    return tokens, cost




def print_summary(rt: Runtime) -> None:
    outcomes: list[MonitorOutcome] = rt.monitors.outcomes
    cur = rt.profile.currency
    print()
    for c in rt.cycle_results:
        t = c["tokens"]
        llm = (f"{c['requests']} request(s), {t.get('input', 0)} in / {t.get('output', 0)} out tokens "
               f"(cache read {t.get('cache_read', 0)}), USD {Decimal(c['cost_usd']):.4f}") if c["brain"] == "claude" else "no LLM (rules brain)"
        print(f"cycle {c['cycle_id']}: {c['status']}, {c['brain']} brain, {c['tools']} tool calls, "
              f"{c['entries']} entr{'y' if c['entries'] == 1 else 'ies'}; {llm}")
    from data.universe import is_synthetic_symbol
    from core.instruments import parse_symbol

    def label(symbol: str) -> str:
        return symbol + (" [synthetic]" if is_synthetic_symbol(parse_symbol(symbol)) else "")

    for ctx in rt.cycles:
        for e in ctx.entries:
            print(f"  ENTRY {label(e['symbol'])} {e['filled_quantity']} @ {e['fill_price']} ({e['status']}, backstop {e['backstop']})")
    total = Decimal(0)
    for o in outcomes:
        if o.closed:
            total += o.realized_pnl or Decimal(0)
            pnl = f"{cur} {o.realized_pnl:+,.2f}" if o.realized_pnl is not None else "not booked"
            print(f"  EXIT  {label(o.symbol)} {o.exit_reason} @ {o.exit_price if o.exit_price is None else f'{o.exit_price:.4f}'}: {pnl} "
                  f"({o.checks} check{'' if o.checks == 1 else 's'}, {o.haiku_calls} Haiku)")
        else:
            print(f"  OPEN  {o.symbol}: {o.note or 'still open'}")
    closed = [o for o in outcomes if o.closed and o.realized_pnl is not None]
    wins = sum(1 for o in closed if o.realized_pnl > 0)
    print(f"P&L: realized {cur} {total:+,.2f} over {len(closed)} closed trade(s), {wins} win(s)")
    where = f"embedded PostgreSQL {rt.dbs.embedded.data_dir}" if rt.dbs.embedded else rt.dbs.trading.where
    lost = f"; {lost_events_line(len(rt.notifier.lost))}" if rt.notifier.lost else ""
    print(f"Records: {where} (cycles, decisions, orders, positions, monitor_status, api_usage); "
          f"Big Bro: claude_messages ({len(rt.notifier.sent)} event(s){lost}); log: {current_log_file()}")
