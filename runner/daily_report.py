"""``agent.py --mode report [--market hk|us] [--day D] [--days N]``: the end-of-day report.

The day: ``--day``, else today when it is a session, else the last session; the demo (no broker
configured) trades a bundled sample day, so without ``--day`` its report is of its latest traded day.

Read from the trading tables (positions, monitor_status, api_usage, decisions, cycles, risk_day)
and Big Bro's (claude_messages) for one agent, market and trading day: the day's trades, exits
by reason, P&L and equity, risk events, LLM spend against the budget, Haiku calls, monitor
errors, reconciliation changes, what Big Bro sent and how it was answered, and, on a day without
trades, why (the top pass reasons). ``--days N`` adds the performance over the last N trading days.

Written to ``reports/daily-<market>-<day>/`` (``CATALYST_REPORTS_DIR``): report.json, report.md,
report.html and chart.png (written again by a second run); posted to Big Bro as one
``DAILY_REPORT`` message per agent, market and day (its idempotency key says which: a second run
never posts a second); and sent by the configured email (HTML with the chart inline, plain text
alternative) on every run.
"""
from __future__ import annotations

import logging
import sys
from collections import Counter
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Mapping, Sequence

from core.clock import Clock
from data.calendar import MarketCalendar
from store.bigbro import messages_between, post_once
from store.reports import RunFigures
from runner.exit_codes import EXIT_OK, EXIT_FAILED, EXIT_USAGE

log = logging.getLogger("catalyst.report")

REPORTS_ENV = "CATALYST_REPORTS_DIR"
MAX_DAYS = 250


class ReportUsageError(Exception):
    pass


def _num(value: Decimal | float | int | None, places: int = 4) -> float | None:
    return None if value is None else round(float(value), places)


def report_day(text: str | None, calendar: MarketCalendar, now: datetime) -> date:
    """``--day`` or, without it, today once today's session has closed, else the last session before
    today (a report run at 07:52 is of yesterday's session, not of one that has not opened)."""
    if text:
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ReportUsageError(f"--day {text!r} is not a date (YYYY-MM-DD)") from None
    today = calendar.local(now).date()
    if has_closed(calendar, today, now):
        return today
    return calendar.previous_sessions(today, 1)[-1].day


def has_closed(calendar: MarketCalendar, day: date, now: datetime) -> bool:
    """The session of ``day`` exists and has closed by ``now``: only then is its report the day's post."""
    session = calendar.session(day)
    return session is not None and now >= session.close


def trade_days(day: date, days: int, calendar: MarketCalendar) -> list[date]:
    """The ``days`` trading days ending with ``day`` (oldest first)."""
    return [s.day for s in calendar.previous_sessions(day, days - 1)] + [day]


# --- Reading the tables ---------------------------------------------------------------------------
def _local_bounds(day: date, calendar: MarketCalendar) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), tzinfo=calendar.tz)
    return start, start + timedelta(days=1)


def _trade_row(p: Mapping[str, Any], calendar: MarketCalendar) -> dict[str, Any]:
    row: dict[str, Any] = {
        "position_id": p["position_id"], "symbol": p["symbol"], "side": p["side"], "quantity": p["quantity"],
        "tier": p["tier"], "entry_time": calendar.local(p["entry_time"]).isoformat(),
        "entry_price": _num(p["entry_price"]), "entry_fees": _num(p["entry_fees"]),
        "haiku_calls": int(p["haiku_calls"] or 0), "monitor_errors": int(p["error_count"] or 0), "stop_reaction_s": [],
    }
    if p["status"] == "closed":
        fees = p["entry_fees"] + p["exit_fees"]
        row.update({
            "exit_time": calendar.local(p["exit_time"]).isoformat(), "exit_price": _num(p["exit_price"]),
            "exit_reason": p["exit_reason"], "exit_fees": _num(p["exit_fees"]), "fees": _num(fees),
            "gross_pnl": _num(p["realized_pnl"] + fees), "net_pnl": _num(p["realized_pnl"]),
            "net_pnl_pct": _num(p["realized_pnl_pct"]),
            "hold_minutes": round((p["exit_time"] - p["entry_time"]).total_seconds() / 60, 1),
        })
    else:
        row["status"] = p["status"]
    return row


async def gather(trading, research, agent_id: str, day: date, days: int, calendar: MarketCalendar) -> dict[str, Any]:
    """Every row the report is made of, as plain values."""
    start, end = _local_bounds(day, calendar)
    span = trade_days(day, days, calendar) if days > 1 else [day]
    figures = RunFigures(trading, agent_id)
    sent, received = await messages_between(research, agent_id, start, end)
    return {"positions": await figures.positions_with_monitors(span),
            "usage": await figures.usage_by_day_and_purpose(span), "risk_day": await figures.risk_day(day),
            "first_risk_day": await figures.first_risk_day(span),
            "pass_reasons": await figures.pass_reasons(start, end), "cycles": await figures.cycle_counts(start, end),
            "sent": sent, "received": received, "span": span}


# --- The figures (pure) ---------------------------------------------------------------------------
def performance(day_rows: Sequence[tuple[date, Sequence[Mapping[str, Any]], float]], start_equity: float | None,
                ) -> dict[str, Any]:
    """Over ``(day, closed trades, LLM spend)`` rows: daily P&L, cumulative equity, win rate, payoff
    (average win / average loss, in money), max drawdown of the equity at each day's end, fees, and
    cost per trade ((fees + LLM spend) / trades)."""
    from runner.replay_figures import max_drawdown_pct

    base = start_equity or 0.0
    equity, out_days, all_trades, spend = base, [], [], 0.0
    for d, trades, llm in day_rows:
        net = round(sum(t["net_pnl"] for t in trades), 4)
        equity = round(equity + net, 4)
        out_days.append({"day": d.isoformat(), "trades": len(trades), "wins": sum(t["net_pnl"] > 0 for t in trades),
                         "net_pnl": net, "fees": round(sum(t["fees"] for t in trades), 4), "llm_usd": round(llm, 6),
                         "equity": equity})
        all_trades += trades
        spend += llm
    wins = [t["net_pnl"] for t in all_trades if t["net_pnl"] > 0]
    losses = [t["net_pnl"] for t in all_trades if t["net_pnl"] < 0]
    fees = round(sum(t["fees"] for t in all_trades), 4)
    n = len(all_trades)
    return {
        "days": out_days, "trades": n, "net_pnl": round(sum(t["net_pnl"] for t in all_trades), 4), "fees": fees,
        "llm_usd": round(spend, 6),
        "win_rate": round(len(wins) / n, 4) if n else None,
        "payoff": round((sum(wins) / len(wins)) / abs(sum(losses) / len(losses)), 4) if wins and losses else None,
        "max_drawdown_pct": max_drawdown_pct([base] + [d["equity"] for d in out_days]) if start_equity else None,
        "max_drawdown": _largest_fall([base] + [d["equity"] for d in out_days]),
        "cost_per_trade": round((fees + spend) / n, 4) if n else None,
        "start_equity": start_equity,
    }


def _largest_fall(equities: Sequence[float]) -> float:
    peak, worst = equities[0], 0.0
    for e in equities:
        peak = max(peak, e)
        worst = max(worst, peak - e)
    return round(worst, 4)


def build(raw: Mapping[str, Any], *, agent_id: str, market: str, currency: str, day: date, days: int,
          budget_usd: float, calendar: MarketCalendar, label: str | None) -> dict[str, Any]:
    from runner.replay_figures import summarize

    rows = [_trade_row(p, calendar) for p in raw["positions"]]
    today = [r for r, p in zip(rows, raw["positions"]) if p["trading_day"] == day]
    trades = [r for r in today if "status" not in r]
    still_open = [r for r in today if r.get("status") == "open"]
    figures = summarize(trades, still_open)
    usage = [u for u in raw["usage"] if u["trading_day"] == day]
    by_purpose = {u["purpose"]: {"calls": int(u["calls"]), "cost_usd": _num(u["cost_usd"], 6)} for u in usage}
    spend = round(sum(v["cost_usd"] for v in by_purpose.values()), 6)
    risk = raw["risk_day"]
    start_equity = _num(risk["start_equity"]) if risk else None
    events = Counter(m["event"] for m in raw["sent"])
    report: dict[str, Any] = {
        "kind": "daily", "agent_id": agent_id, "run_kind": label, "market": market, "currency": currency,
        "day": day.isoformat(),
        **figures,
        "trades": trades, "open_positions": still_open,
        "not_booked": [r for r in today if r.get("status") not in (None, "open")],
        "start_equity": start_equity,
        "end_equity": round(start_equity + figures["net_pnl"], 4) if start_equity is not None else None,
        "return_pct": round(figures["net_pnl"] / start_equity * 100, 4) if start_equity else None,
        "risk": {
            "halted": bool(risk and risk["halted"]), "halt_reason": risk["halt_reason"] if risk else None,
            "warned": bool(risk and risk["warned"]),
            "refused_entries": raw["pass_reasons"].get("risk_refused", 0),
            "events": [{"at": calendar.local(m["created_at"]).isoformat(), "event": m["event"], "subject": m["subject"]}
                       for m in raw["sent"] if m["event"] in ("RISK_HALT", "RISK_WARNING", "BUDGET")],
        },
        "llm": {"spend_usd": spend, "budget_usd": budget_usd, "by_purpose": by_purpose,
                "haiku_calls": by_purpose.get("consult", {}).get("calls", 0)},
        "reconciliation": [{"at": calendar.local(m["created_at"]).isoformat(), "subject": m["subject"]}
                           for m in raw["sent"] if m["event"] == "RECONCILE"],
        "events_sent": dict(sorted(events.items())),
        "big_bro": [{"id": m["id"], "at": calendar.local(m["created_at"]).isoformat(), "msg_type": m["msg_type"],
                     "subject": m["subject"], "status": m["status"], "answer": m["answer"]} for m in raw["received"]],
        "pass_reasons": raw["pass_reasons"],
        "cycles_by_status": raw["cycles"],
    }
    if days > 1:
        spend_by_day: dict[date, float] = Counter()
        for u in raw["usage"]:
            spend_by_day[u["trading_day"]] += float(u["cost_usd"])
        day_rows = [(d, [r for r, p in zip(rows, raw["positions"]) if p["trading_day"] == d and "status" not in r],
                     spend_by_day.get(d, 0.0)) for d in raw["span"]]
        report["performance"] = performance(day_rows, _span_start_equity(raw["first_risk_day"], day_rows))
    return report


def _span_start_equity(first_risk: Mapping[str, Any] | None, day_rows) -> float | None:
    """Equity before the span's first day: the first recorded day's start equity less the P&L of the
    span's days before it (None when no day of the span has a risk record: then the curve is P&L)."""
    if not first_risk:
        return None
    before = sum(t["net_pnl"] for d, trades, _ in day_rows if d < first_risk["trading_day"] for t in trades)
    return round(float(first_risk["start_equity"]) - before, 4)


# --- Big Bro --------------------------------------------------------------------------------------
def message_key(agent_id: str, market: str, day: date) -> str:
    return f"{agent_id}:daily-report:{market}:{day.isoformat()}"


async def post_to_big_bro(research, r: Mapping[str, Any], subject: str, body: str, at: datetime) -> bool:
    """One DAILY_REPORT per agent, market and day: True when this call posted it, False when it was there."""
    data = {"event": "DAILY_REPORT", **{k: r[k] for k in (
        "day", "market", "currency", "n_trades", "wins", "losses", "win_rate", "gross_pnl", "fees", "net_pnl",
        "exits_by_reason", "start_equity", "end_equity", "return_pct", "monitor_errors", "pass_reasons")},
        "llm_spend_usd": r["llm"]["spend_usd"], "llm_budget_usd": r["llm"]["budget_usd"],
        "haiku_calls": r["llm"]["haiku_calls"], "risk_halted": r["risk"]["halted"]}
    if r.get("performance"):
        data["performance"] = {k: v for k, v in r["performance"].items() if k != "days"}
    if r.get("run_kind"):
        data["run_kind"] = r["run_kind"]
    return await post_once(research, r["agent_id"], subject, body, data, at,
                           message_key(r["agent_id"], r["market"], date.fromisoformat(r["day"])))


async def _tell_big_bro(research, report: Mapping[str, Any], subject: str, body: str, calendar: MarketCalendar,
                       now: datetime) -> tuple[str, bool]:
    """The day's DAILY_REPORT once its session has closed (and the calendar's end when it is near):
    (what the report line says about Big Bro, whether that failed)."""
    day = date.fromisoformat(report["day"])
    if not has_closed(calendar, day, now):
        return "not posted to Big Bro: the session has not closed yet (the report after the close is)", False
    try:
        if report.get("calendar_warning"):
            await post_calendar_ending(research, report["agent_id"], report["market"], calendar, now)
        posted = await post_to_big_bro(research, report, subject, body, now)
    except Exception as exc:  # noqa: BLE001 - the files are written; say what did not go
        log.exception("DAILY_REPORT not posted")
        return f"NOT posted to Big Bro ({type(exc).__name__})", True
    return ("posted to Big Bro" if posted else "already posted to Big Bro (one per day: not posted again)"), False


async def post_calendar_ending(research, agent_id: str, market: str, calendar: MarketCalendar, now: datetime) -> bool:
    """One CALENDAR_ENDING a day while the calendar's end is near: the agent stops trading on that day."""
    today = calendar.trading_day(now)
    subject = f"Calendar ends {calendar.end}: upgrade exchange-calendars or {agent_id} stops trading"
    data = {"event": "CALENDAR_ENDING", "market": market, "calendar_end": calendar.end.isoformat(),
            "days_left": (calendar.end - today).days}
    return await post_once(research, agent_id, subject, calendar.end_warning(now) or subject, data, now,
                           f"{agent_id}:calendar-ending:{market}:{today.isoformat()}", priority="high")


# --- The command ----------------------------------------------------------------------------------
def run_report(args, settings, calendar: MarketCalendar, clock: Clock, env: Mapping[str, str]) -> int:
    from config.settings import PROJECT_DIR

    days = 1 if getattr(args, "days", None) is None else args.days
    try:
        if not 1 <= days <= MAX_DAYS:
            raise ReportUsageError(f"--days {days}: give 1 to {MAX_DAYS} trading days")
        day = report_day(getattr(args, "day", None), calendar, clock.now())
        if not calendar.session(day):
            raise ReportUsageError(f"--day {day} is not a {settings.profile.market.value} trading day")
    except ReportUsageError as exc:
        print(f"report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the calendar's range, said in one line
        print(f"report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    root = Path(env.get(REPORTS_ENV) or PROJECT_DIR / "reports").expanduser()
    # The demo trades a bundled sample day, not today: without --day, its report is of its latest day.
    latest_recorded = settings.label == "demo" and not getattr(args, "day", None)
    return clock.run(_report(settings, calendar, clock, day, days, root, latest_recorded))


async def _report(settings, calendar: MarketCalendar, clock: Clock, day: date, days: int, root: Path,
                  latest_recorded: bool = False) -> int:
    import runner.daily_render as daily_render
    from store import open_databases
    from store.db import DatabaseError

    profile, secrets = settings.profile, settings.secrets
    try:
        dbs = await open_databases(*secrets.database_urls(), settings.var_dir, secrets.secret_values())
    except DatabaseError as exc:
        print(f"report failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    failed = False
    try:
        if latest_recorded:
            day = await RunFigures(dbs.trading, profile.agent_id).latest_trading_day() or day
        raw = await gather(dbs.trading, dbs.research, profile.agent_id, day, days, calendar)
        report = build(raw, agent_id=profile.agent_id, market=profile.market.value, currency=profile.currency, day=day,
                       days=days, budget_usd=float(profile.budget.daily_usd), calendar=calendar, label=settings.label)
        report["calendar_warning"] = calendar.end_warning(clock.now())
        folder = daily_render.write(report, root / f"daily-{profile.market.value.lower()}-{day.isoformat()}")
        subject, body = daily_render.headline(report), daily_render.render_text(report)
        big_bro, failed = await _tell_big_bro(dbs.research, report, subject, body, calendar, clock.now())
    except Exception as exc:  # noqa: BLE001 - one line for the trader, the trace for the log
        from ops.logsetup import current_log_file

        log.exception("report failed")
        print(f"report failed: {type(exc).__name__}: {exc} (the trace is in {current_log_file()})", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await dbs.close()
    mailed = await daily_render.send_email(report, folder, secrets)
    failed = failed or mailed.startswith("NOT")
    print(subject)
    if report["calendar_warning"]:
        print(report["calendar_warning"])
    if not report["n_trades"]:
        print(f"No trade: {daily_render.why_no_trades(report)}")
    print(f"Report: {folder} ({big_bro}; {mailed})")
    return EXIT_FAILED if failed else EXIT_OK
