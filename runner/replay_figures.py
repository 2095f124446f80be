"""The replay report's figures, from the records: one row per trade (with the deciding exit signal),
the summary (win rate, payoff, drawdown, P&L net of fees), and the report dict that replay_report.py
renders and the daily report reuses."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping, Sequence

from data.calendar import MarketCalendar, Session
from runner.sessions import PaperFeed
from store.trading import PositionRecord


@dataclass
class Watch:
    """What the monitors of one position reported (a position can be watched by several, one a day)."""

    haiku_calls: int = 0
    errors: int = 0
    reactions: list[float] = field(default_factory=list)
    seen: bool = False


def _num(value: Decimal | float | int | None, places: int = 4) -> float | None:
    return None if value is None else round(float(value), places)


def deciding_signal(monitor_row: dict | None) -> str | None:
    """The technical signal behind a ``signals`` exit: the strongest of the last check, first by precedence."""
    import json

    from signals import PRECEDENCE

    raw = (monitor_row or {}).get("signals") or []
    found = json.loads(raw) if isinstance(raw, str) else raw
    order = {"strong": 0, "moderate": 1, "weak": 2}
    rank = {name.value: i for i, name in enumerate(PRECEDENCE)}
    ranked = sorted((s for s in found if s.get("name") in rank),
                    key=lambda s: (order.get(s.get("strength"), 3), rank[s["name"]]))
    return ranked[0]["name"] if ranked else None


def _trade_row(p: PositionRecord, watch: Watch | None, monitor_row: dict | None, calendar: MarketCalendar,
               synthetic: set) -> dict[str, Any]:
    haiku = watch.haiku_calls if watch and watch.seen else int((monitor_row or {}).get("haiku_calls") or 0)
    errors = (watch.errors if watch else 0) + (0 if watch and watch.seen else int((monitor_row or {}).get("error_count") or 0))
    row = {
        "position_id": p.position_id,
        "symbol": str(p.symbol),
        "synthetic": p.symbol in synthetic,
        "side": p.side.value,
        "quantity": p.quantity,
        "trading_day": p.trading_day.isoformat(),
        "tier": p.tier,
        "entry_time": calendar.local(p.entry_time).isoformat(),
        "entry_price": _num(p.entry_price),
        "entry_reason": p.entry_reason,
        "stop_price": _num(p.stop_price),
        "target_price": _num(p.target_price),
        "entry_fees": _num(p.entry_fees),
        "haiku_calls": haiku,
        "monitor_errors": errors,
        "stop_reaction_s": [round(s, 3) for s in (watch.reactions if watch else [])],
    }
    if p.status == "closed":
        gross = p.realized_pnl + p.entry_fees + p.exit_fees
        row.update({
            "exit_time": calendar.local(p.exit_time).isoformat() if p.exit_time else None,
            "exit_price": _num(p.exit_price),
            "exit_reason": p.exit_reason,
            "exit_signal": deciding_signal(monitor_row) if p.exit_reason == "signals" else None,
            "exit_type": p.exit_type,
            "exit_fees": _num(p.exit_fees),
            "fees": _num(p.entry_fees + p.exit_fees),
            "gross_pnl": _num(gross),
            "net_pnl": _num(p.realized_pnl),
            "net_pnl_pct": _num(p.realized_pnl_pct),
        })
    else:
        row["status"] = p.status
    return row


def summarize(trades: Sequence[Mapping[str, Any]], open_positions: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Every trading figure of the report, from the trade rows alone (the test recomputes them this way).

    win: net P&L > 0, loss: net P&L < 0; ``win_rate`` is a fraction (0..1) of all closed trades;
    ``avg_win_pct`` / ``avg_loss_pct`` average ``net_pnl_pct`` (net of fees, of the entry value)
    over wins / losses; ``stop_reaction_s_p95`` is the 95th percentile (linear) of every
    price-guard exit's reaction time; monitor errors include positions still open at the end.
    """
    import numpy as np

    n = len(trades)
    wins = [t for t in trades if t["net_pnl"] > 0]
    losses = [t for t in trades if t["net_pnl"] < 0]
    reactions = [s for t in trades for s in t["stop_reaction_s"]]
    haiku = sum(t["haiku_calls"] for t in trades)
    by_reason = Counter(t["exit_reason"] for t in trades)
    pnl_by_reason: dict[str, float] = defaultdict(float)
    for t in trades:
        pnl_by_reason[t["exit_reason"]] += t["net_pnl"]
    return {
        "n_trades": n,
        "wins": len(wins),
        "losses": len(losses),
        "win_rate": round(len(wins) / n, 4) if n else None,
        "avg_win_pct": round(sum(t["net_pnl_pct"] for t in wins) / len(wins), 4) if wins else None,
        "avg_loss_pct": round(sum(t["net_pnl_pct"] for t in losses) / len(losses), 4) if losses else None,
        "gross_pnl": round(sum(t["gross_pnl"] for t in trades), 4),
        "fees": round(sum(t["fees"] for t in trades), 4),
        "net_pnl": round(sum(t["net_pnl"] for t in trades), 4),
        "exits_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "net_pnl_by_reason": {k: round(v, 4) for k, v in sorted(pnl_by_reason.items())},
        "haiku_calls": haiku,
        "haiku_calls_per_trade": round(haiku / n, 4) if n else None,
        "monitor_errors": sum(t["monitor_errors"] for t in [*trades, *open_positions]),
        "stop_reactions": len(reactions),
        "stop_reaction_s_p95": round(float(np.percentile(reactions, 95)), 3) if reactions else None,
    }


def max_drawdown_pct(equities: Sequence[float]) -> float:
    """The largest fall from a running peak, in percent of that peak (0 when equity never fell)."""
    peak, worst = None, 0.0
    for e in equities:
        peak = e if peak is None else max(peak, e)
        if peak and peak > 0:
            worst = max(worst, (peak - e) / peak * 100)
    return round(worst, 4)


def build_report(*, positions: list[PositionRecord], watches: dict[int, Watch], monitor_rows: dict[int, dict],
                 equity_curve: list[dict[str, Any]], usage: dict[str, dict[str, Any]], cycles: dict[str, int],
                 sessions: list[Session], feed: PaperFeed, calendar: MarketCalendar, profile, brain: str,
                 last_prices: Mapping[str, Decimal | None]) -> dict[str, Any]:
    synthetic = set(feed.synthetic_symbols)
    rows = [_trade_row(p, watches.get(p.position_id), monitor_rows.get(p.position_id), calendar, synthetic)
            for p in positions]
    trades = [r for r in rows if "status" not in r]
    open_positions = [{**r, "last_price": _num(last_prices.get(r["symbol"]))} for r in rows if r.get("status") == "open"]
    not_booked = [r for r in rows if r.get("status") not in (None, "open")]
    curve = [{**pt, "equity": _num(pt["equity"]), "cash": _num(pt["cash"])} for pt in equity_curve]
    start_equity = curve[0]["equity"]
    final_equity = curve[-1]["equity"]
    llm_cost = sum((u["cost_usd"] for u in usage.values()), Decimal(0))
    bars = sum(_bars_in(feed.series[s], sessions) for s in feed.real_symbols + feed.synthetic_symbols)
    figures = summarize(trades, open_positions)
    return {
        "market": profile.market.value,
        "currency": profile.currency,
        "sessions": len(sessions),
        "session_days": [s.day.isoformat() for s in sessions],
        "first_session": sessions[0].day.isoformat() if sessions else None,
        "last_session": sessions[-1].day.isoformat() if sessions else None,
        "symbols": [str(s) for s in feed.real_symbols],
        "synthetic_symbols": [str(s) for s in feed.synthetic_symbols],
        "bars_replayed": bars,
        **figures,
        "starting_equity": start_equity,
        "final_equity": final_equity,
        "return_pct": round((final_equity - start_equity) / start_equity * 100, 4) if start_equity else None,
        "max_drawdown_pct": max_drawdown_pct([pt["equity"] for pt in curve]),
        "equity_curve": curve,
        "llm_cost_usd": _num(llm_cost, 6),
        "llm_usage": {k: {"calls": v["calls"], "cost_usd": _num(v["cost_usd"], 6)} for k, v in sorted(usage.items())},
        "cycles": sum(cycles.values()),
        "cycles_by_status": cycles,
        "trades": trades,
        "open_positions": open_positions,
        "not_booked": not_booked,
        "run": {
            "agent_id": profile.agent_id,
            "brain": brain,
            "universe_seed": profile.paper.universe_seed,
            "starting_cash": _num(profile.paper.starting_cash),
            "cycle_times": [t.strftime("%H:%M") for t in profile.schedule.cycle_times],
        },
    }


def _bars_in(series, sessions: list[Session]) -> int:
    if series.minute.empty or not sessions:
        return 0
    index = series.minute.index
    return int(sum(((index >= s.open) & (index < s.close)).sum() for s in sessions))
