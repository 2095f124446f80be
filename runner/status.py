"""`agent.py --mode status`: what the agent holds, did and spent today, from the database.

JSON shape (``--mode status --json``)::

    {"agent_id": str, "market": "HK"|"US", "live": bool, "now": ISO time,
     "session": {"state": "open"|"lunch"|"closed", "trading_day": date, "is_trading_day": bool,
                 "minutes_to_close": float|null, "minutes_to_break": float|null,
                 "next_open": ISO time|null (past the calendar's end), "calendar_end": date,
                 "calendar_warning": str|null (within 60 days of the calendar's end)},
     "positions": [{"position_id", "symbol", "side", "quantity", "entry_price", "entry_time",
                    "stop_price", "target_price", "backstop_status", "monitor": {"status" (running, stopped,
                    error, dead: its run was killed and the lease lapsed), "owner",
                    "last_check_at", "last_price", "pnl_pct", "decision"}|null}],
     "today": {"realized_pnl": str, "currency": str, "entries": int, "max_entries": int,
               "closed_trades": int, "halted": bool, "halt_reason": str|null},
     "llm": {"spend_usd": str, "budget_usd": str},
     "cycles": [{"cycle_id", "status", "brain", "started_at", "trades_executed", "cost_usd"}],
     "database": str, "empty": bool}
"""
from __future__ import annotations

import sys
from datetime import datetime
from decimal import Decimal
from typing import Any

from config.settings import Profile
from data.calendar import CalendarRangeError, MarketCalendar
from store.db import AgentLock, Database
from store.trading import TradingStore


# Long: the status document's fields in the order `--mode status` prints them.
async def build_status(store: TradingStore, calendar: MarketCalendar, profile: Profile, now: datetime, database: str) -> dict[str, Any]:
    day = calendar.trading_day(now)
    session = calendar.session(day)
    day_start = calendar.at_local(day, datetime.min.time())
    positions = await store.open_positions()
    monitors = {row["position_id"]: row for row in await store.monitor_rows()}
    closed = await store.closed_between(day_start, calendar.at_local(day, datetime.max.time()))
    risk = await store.risk_day(day)
    cycles = await store.recent_cycles(5)
    return {
        "agent_id": profile.agent_id,
        "market": profile.market.value,
        "live": profile.live,
        "now": now.isoformat(),
        "session": {
            "state": calendar.state(now).value,
            "trading_day": day.isoformat(),
            "is_trading_day": session is not None,
            "minutes_to_close": calendar.minutes_to_close(now),
            "minutes_to_break": calendar.minutes_to_break(now),
            "next_open": _next_open(calendar, now),
            "calendar_end": calendar.end.isoformat(),
            "calendar_warning": calendar.end_warning(now),
        },
        "positions": [
            {
                "position_id": p.position_id,
                "symbol": str(p.symbol),
                "side": p.side.value,
                "quantity": p.quantity,
                "entry_price": str(p.entry_price),
                "entry_time": p.entry_time.isoformat(),
                "stop_price": _s(p.stop_price),
                "target_price": _s(p.target_price),
                "backstop_status": p.backstop_status,
                "monitor": _monitor(monitors.get(p.position_id), now),
            }
            for p in positions
        ],
        "today": {
            "realized_pnl": str(sum((c.realized_pnl or Decimal(0) for c in closed), Decimal(0))),
            "currency": profile.currency,
            "entries": await store.entries_on(day),
            "max_entries": profile.risk.max_entries_per_day,
            "closed_trades": len(closed),
            "halted": bool(risk and risk["halted"]),
            "halt_reason": risk["halt_reason"] if risk else None,
        },
        "llm": {"spend_usd": str(await store.spend_on(day)), "budget_usd": str(profile.budget.daily_usd)},
        "cycles": [
            {
                "cycle_id": c["cycle_id"],
                "status": c["status"],
                "brain": c["brain"],
                "started_at": c["started_at"].isoformat(),
                "trades_executed": c["trades_executed"],
                "cost_usd": str(c["cost_usd"]),
            }
            for c in cycles
        ],
        "database": database,
        "empty": not positions and not cycles and not closed,
    }


def _next_open(calendar: MarketCalendar, now: datetime) -> str | None:
    """None past the calendar's end: status still shows what is held (the warning says why)."""
    try:
        return calendar.next_open(now).isoformat()
    except CalendarRangeError:
        return None


async def repair_when_no_run_is_alive(db: Database, store: TradingStore, now: datetime) -> None:
    """Status is a run too: when no run of the agent holds its lock, what a killed one left (cycles
    'running', monitors whose lease lapsed) is put right before it is shown."""
    lock = await AgentLock.try_take(db.url, store.agent_id)
    if lock is None:
        return
    try:
        cycles, _monitors = await store.repair_after_stopped_runs(now)
        if cycles:
            print(f"repaired: {len(cycles)} cycle(s) left running by a stopped run are marked interrupted",
                  file=sys.stderr)
    finally:
        await lock.release()


def _price(value: Decimal | None) -> str | None:
    """A price as traders write it: 383.4, not the column's 383.400000."""
    return None if value is None else format(value.normalize(), "f")


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _monitor(row: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    if row is None:
        return None
    status = row["status"]
    if status == "running" and (row["lease_expires_at"] is None or row["lease_expires_at"] < now):
        status = "dead"  # its process stopped renewing the lease (killed): the next run or heartbeat adopts it
    return {
        "status": status,
        "owner": row["owner"],
        "last_check_at": row["last_check_at"].isoformat() if row["last_check_at"] else None,
        "last_price": _price(row["last_price"]),
        "pnl_pct": _s(row["pnl_pct"]),
        "decision": row["decision"],
    }


def render_status(status: dict[str, Any], calendar: MarketCalendar) -> str:
    now = datetime.fromisoformat(status["now"])
    local = calendar.local(now)
    s = status["session"]
    mode = "LIVE" if status["live"] else "paper"
    lines = [f"Catalyst {status['agent_id']} — {status['market']} ({mode})"]
    state = s["state"]
    if state == "open":
        when = f"open, {s['minutes_to_close']:.0f} trading minutes to the close"
        if s["minutes_to_break"] is not None:
            when += f", {s['minutes_to_break']:.0f} to the lunch break"
    elif state == "lunch":
        when = "lunch break"
    else:
        when = "closed" + ("" if s["is_trading_day"] else " (no session today)")
    next_open = (f"{calendar.local(datetime.fromisoformat(s['next_open'])):%a %Y-%m-%d %H:%M %Z}" if s["next_open"]
                 else "unknown (past the calendar's end)")
    lines.append(f"Market: {local:%Y-%m-%d %H:%M %Z} — {when}; next open {next_open}")
    if s["calendar_warning"]:
        lines.append(s["calendar_warning"])
    if status["empty"]:
        lines.append("Nothing recorded yet: no positions, no trades, no cycles. `make run` trades a sample session.")
    if status["positions"]:
        lines.append("Open positions:")
        for p in status["positions"]:
            mon = p["monitor"]
            watch = f"monitor {mon['status']} (last {mon['last_price']}, {mon['decision']})" if mon else "NOT monitored"
            lines.append(
                f"  {p['symbol']} {p['side']} {p['quantity']} @ {p['entry_price']} stop {p['stop_price']} "
                f"target {p['target_price']} backstop {p['backstop_status']}; {watch}"
            )
    else:
        lines.append("Open positions: none")
    t = status["today"]
    halted = f"; HALTED: {t['halt_reason']}" if t["halted"] else ""
    lines.append(
        f"Today ({s['trading_day']}): realized P&L {t['currency']} {Decimal(t['realized_pnl']):,.2f} over "
        f"{t['closed_trades']} closed trade(s); entries {t['entries']} of {t['max_entries']}{halted}"
    )
    lines.append(f"LLM spend today: USD {Decimal(status['llm']['spend_usd']):.4f} of {Decimal(status['llm']['budget_usd']):.2f}")
    if status["cycles"]:
        lines.append("Recent cycles:")
        for c in status["cycles"]:
            lines.append(
                f"  {c['cycle_id']} {c['status']} ({c['brain']}) trades {c['trades_executed']} cost USD {Decimal(c['cost_usd']):.4f}"
            )
    else:
        lines.append("Recent cycles: none")
    lines.append(f"Database: {status['database']}")
    return "\n".join(lines)
