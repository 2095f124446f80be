"""Replay reports of any size, built from the real 09988 sample bars under many codes (no replay run):
what the report tests and the browser test render."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

from config.settings import load_profile, profile_path
from data.bars import SAMPLES_DIR
from data.calendar import MarketCalendar
from core.instruments import Market, parse_symbol
from runner.replay_figures import max_drawdown_pct, summarize
from runner.sessions import PaperFeed, replay_feed

CALENDAR = MarketCalendar(Market.HK)


def feed_of(n_symbols: int) -> PaperFeed:
    """The real 09988 sample bars under ``n_symbols`` codes, over its last five sessions."""
    profile = load_profile(profile_path("hk"), {})
    real = replay_feed(SAMPLES_DIR / "hk", profile, CALENDAR, None, None)
    [series] = real.series.values()
    symbols = [parse_symbol(f"{i:05d}", Market.HK) for i in range(1, n_symbols + 1)]
    return PaperFeed(series={s: dataclasses.replace(series, symbol=s) for s in symbols},
                     sessions=real.sessions[-5:], real_symbols=symbols, synthetic_symbols=[])


def trade_row(feed: PaperFeed, symbol, session, minutes_in: int, held: int, quantity: int, reason: str) -> dict:
    minute = feed.series[symbol].minute
    entry_at, exit_at = session.open + timedelta(minutes=minutes_in), session.open + timedelta(minutes=minutes_in + held)
    entry = float(minute.loc[minute.index <= entry_at, "close"].iloc[-1])
    exit_ = float(minute.loc[minute.index <= exit_at, "close"].iloc[-1])
    fees = 25.0
    gross = round((exit_ - entry) * quantity, 4)
    return {"position_id": 0, "symbol": str(symbol), "synthetic": False, "side": "buy", "quantity": quantity,
            "trading_day": session.day.isoformat(), "tier": 1, "entry_time": CALENDAR.local(entry_at).isoformat(),
            "entry_price": entry, "entry_reason": "test", "stop_price": None, "target_price": None, "entry_fees": 12.5,
            "haiku_calls": 1, "monitor_errors": 0, "stop_reaction_s": [], "exit_time": CALENDAR.local(exit_at).isoformat(),
            "exit_price": exit_, "exit_reason": reason, "exit_signal": None, "exit_type": "market", "exit_fees": 12.5,
            "fees": fees, "gross_pnl": gross, "net_pnl": round(gross - fees, 4),
            "net_pnl_pct": round((gross - fees) / (entry * quantity) * 100, 4)}


def report_of(feed: PaperFeed) -> dict:
    """A replay report over ``feed``: one or two hand-built trades per symbol, every figure from them."""
    reasons = ["stop_loss", "take_profit", "time_exit", "signals", "trailing_stop"]
    trades = []
    for i, symbol in enumerate(feed.real_symbols):
        session = feed.sessions[i % len(feed.sessions)]
        trades.append(trade_row(feed, symbol, session, 20 + i, 30 + 7 * i, 100 * (1 + i % 4), reasons[i % 5]))
        if i % 3 == 0:  # some symbols trade twice, on another day
            trades.append(trade_row(feed, symbol, feed.sessions[(i + 2) % len(feed.sessions)], 60, 90, 100, "time_exit"))
    for n, t in enumerate(trades):
        t["position_id"] = n + 1
    equity, curve = 1_000_000.0, [{"label": "start", "at": "", "equity": 1_000_000.0, "cash": 1_000_000.0}]
    for s in feed.sessions:
        equity += sum(t["net_pnl"] for t in trades if t["trading_day"] == s.day.isoformat())
        curve.append({"label": s.day.isoformat(), "at": "", "equity": round(equity, 4), "cash": round(equity, 4)})
    figures = summarize(trades)
    return {"market": "HK", "currency": "HKD", "sessions": len(feed.sessions),
            "session_days": [s.day.isoformat() for s in feed.sessions],
            "first_session": feed.sessions[0].day.isoformat(), "last_session": feed.sessions[-1].day.isoformat(),
            "symbols": [str(s) for s in feed.real_symbols], "synthetic_symbols": [], "bars_replayed": 1234, **figures,
            "starting_equity": curve[0]["equity"], "final_equity": curve[-1]["equity"],
            "return_pct": round((curve[-1]["equity"] / curve[0]["equity"] - 1) * 100, 4),
            "max_drawdown_pct": max_drawdown_pct([pt["equity"] for pt in curve]), "equity_curve": curve,
            "llm_cost_usd": 0.0, "llm_usage": {}, "cycles": 10, "cycles_by_status": {"completed": 10},
            "trades": trades, "open_positions": [], "not_booked": [],
            "pass_reasons": {"no_tier_holds": 40, "risk_refused": 3},
            "run": {"agent_id": "intl_claude-demo-replay-test", "brain": "rules", "universe_seed": [],
                    "starting_cash": 1_000_000.0, "cycle_times": ["09:45", "13:00"], "data_path": "bars"}}
