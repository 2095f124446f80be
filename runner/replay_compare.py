"""``--replay --compare``: the same entries exited under each exit policy (``core.policy_lab``), beside the
agent's own exits and a seeded random control, and the regret per exit reason."""
from __future__ import annotations

from typing import Any

from data.calendar import MarketCalendar
from core.policy_lab import EntryFill
from runner.sessions import PaperFeed


RANDOM_SEED_DEFAULT = 1


def compare_policies(profile, calendar: MarketCalendar, feed: PaperFeed, entries: list[EntryFill],
                     report: dict[str, Any], control_entries: list[EntryFill], control_trades: list[dict[str, Any]],
                     control_error: str | None, seed: int) -> tuple[dict[str, dict], dict[str, dict], str]:
    """The policy table and the regret per exit reason (see ``policy_lab``)."""
    from brokers.paper_tapes import SessionTapes
    from core.policy_lab import index_by_entry, key_of, policy_row, regret_by_reason

    tapes = SessionTapes(feed.series, calendar, profile)
    agent = _outcomes(report["trades"])
    entries = _closed_entries(entries, report["trades"], calendar)
    held = _re_exits(entries, tapes, calendar, profile, backstop=False)
    backstop = _re_exits(entries, tapes, calendar, profile, backstop=True)
    random_outcomes = _outcomes(control_trades)
    random_held = _re_exits(_closed_entries(control_entries, control_trades, calendar), tapes, calendar, profile,
                            backstop=False)
    policies = {
        "agent": policy_row(agent),
        "backstop": policy_row(backstop),
        "close": policy_row(held),
        "random": {**policy_row(random_outcomes), "seed": seed},
        "random_close": {**policy_row(random_held), "seed": seed},
    }
    with_catalyst = {(t["symbol"], t["entry_time"]) for t in report["trades"]
                     if (t.get("catalyst") or {}).get("has_catalyst")}
    if with_catalyst:  # what the news was worth: the same rows split by a catalyst at the entry
        for name, rows in (("agent", agent), ("close", held)):
            policies[f"{name}_with_catalyst"] = policy_row([o for o in rows if key_of(o) in with_catalyst])
            policies[f"{name}_without_catalyst"] = policy_row([o for o in rows if key_of(o) not in with_catalyst])
    note = ("agent: the monitor's exits (the main result); backstop: only the broker-side stop "
            f"{profile.backstop.stop_pct}% and target {profile.backstop.target_pct}%, then the time exit; close: held to "
            "the time exit; random: as many entries at the same cycle times in symbols drawn from the session's "
            f"universe (seed {seed}), exited by the monitor; random_close: those entries held to the time exit.")
    if control_error:
        note += f" The random control stopped early: {control_error}."
    return policies, regret_by_reason(agent, index_by_entry(held)), note


def _outcomes(trades: list[dict[str, Any]]):
    """A report's trades as ``policy_lab.Outcome``s, keyed by exit reason (and deciding signal)."""
    from core.policy_lab import Outcome

    return [Outcome(t["symbol"], t["entry_time"], t["net_pnl"], t["net_pnl_pct"], _reason(t)) for t in trades]


def _closed_entries(entries: list[EntryFill], trades: list[dict[str, Any]], calendar: MarketCalendar) -> list[EntryFill]:
    """The entries of the closed trades (an entry still open at the end has no exit to compare)."""
    closed = {(t["symbol"], t["entry_time"]) for t in trades}
    return [e for e in entries if (str(e.symbol), calendar.local(e.time).isoformat()) in closed]


def _reason(trade: dict[str, Any]) -> str:
    """The exit reason, with the deciding technical signal for ``signals`` exits (``signals:volume_dying``)."""
    signal = trade.get("exit_signal")
    return f"{trade['exit_reason']}:{signal}" if signal else trade["exit_reason"]


def _re_exits(entries, tapes, calendar: MarketCalendar, profile, *, backstop: bool):
    from core.policy_lab import barrier_levels, outcome_of, re_exit, time_exit_after

    out = []
    for e in entries:
        session = calendar.session_at(e.time)
        steps = tapes.steps(e.symbol, session.day) if session else None
        if not steps or not steps.times:
            continue
        stop = target = None
        if backstop:
            stop, target = barrier_levels(e.price, e.symbol, session.day, profile)
        x = re_exit(e, steps, time_exit_after(session, e.time, profile), profile, stop=stop, target=target)
        out.append(outcome_of(x, calendar.local))
    return out
