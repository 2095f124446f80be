"""The replay's report: ``report.json``, ``report.md``, ``report.html`` and ``chart.png``.

``chart.png`` is one screen whatever the number of symbols: the equity at each session close, the
distribution of trade returns and the exits by reason. ``report.html`` (one file, nothing fetched
at view time, see ``report_html``) has the key figures, that summary, the policy and regret tables
of ``--compare``, why candidates were passed, every trade, then one small chart per traded symbol
in its own section, best P&L first, so a 50-symbol replay is a page to scroll, not one giant image.
"""
from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict
from datetime import date, datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import runner.report_html as h
from data.calendar import MarketCalendar, Session
from news.replay_news import catalyst_markdown, catalyst_summary
from runner.sessions import PaperFeed

log = logging.getLogger("catalyst.replay")

# chart.png: 13 x 7.5 inches at 100 dpi, 1,300 x 750 pixels for any number of symbols.
SUMMARY_SIZE_IN = (13.0, 7.5)
SUMMARY_DPI = 100
WIN, LOSS, NEUTRAL, LINE = "#2ca02c", "#d62728", "#1f77b4", "#444444"


def write_report(report: dict[str, Any], feed: PaperFeed, calendar: MarketCalendar, root: Path, name: str,
                 pictures: bool = True) -> Path:
    """``report.json`` and ``report.md`` in a new folder under ``root``; with ``pictures``, also
    ``chart.png`` and ``report.html`` (a range of ``--jobs`` writes none: its parent draws the merged ones)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    n = 1
    while True:
        try:
            folder.mkdir()
            break
        except FileExistsError:
            n += 1
            folder = root / f"{name}-{n}"
    (folder / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report), encoding="utf-8")
    if not pictures:
        return folder
    # The numbers matter more than the pictures: a chart that fails is a note, not a failed replay.
    summary: bytes | None = None
    try:
        summary = summary_png(report)
        (folder / "chart.png").write_bytes(summary)
    except Exception as exc:  # noqa: BLE001
        log.exception("chart failed")
        print(f"note: chart.png could not be drawn ({type(exc).__name__}: {exc})", file=sys.stderr)
    try:
        (folder / "report.html").write_text(render_html(report, feed, calendar, summary), encoding="utf-8")
    except Exception as exc:  # noqa: BLE001
        log.exception("report.html failed")
        print(f"note: report.html could not be written ({type(exc).__name__}: {exc})", file=sys.stderr)
    return folder


def _money(value: float | None, cur: str = "", sign: bool = True) -> str:
    if value is None:
        return "-"
    text = f"{value:+,.2f}" if sign else f"{value:,.2f}"
    return f"{cur} {text}".strip()


def _pct(value: float | None, sign: bool = True) -> str:
    return "-" if value is None else (f"{value:+.2f}%" if sign else f"{value:.2f}%")


def _hm(iso: str | None) -> str:
    return "-" if not iso else datetime.fromisoformat(iso).strftime("%m-%d %H:%M")


def _data_lines(data: dict[str, Any]) -> list[str]:
    """What the bars were: their resolution, sessions with bars missing or left out, lots assumed."""
    lines = []
    resolutions = sorted(set((data.get("resolution_minutes") or {}).values()))
    if resolutions:
        lines.append(f"- Bars: {' and '.join(f'{m}-minute' for m in resolutions)}.")
    if data.get("incomplete_sessions"):
        lines.append("- Sessions with bars missing, replayed as they are (coverage): "
                     + ", ".join(f"{d} {c:.0%}" for d, c in data["incomplete_sessions"].items()) + ".")
    if data.get("skipped_sessions"):
        lines.append("- Sessions left out under --min-coverage: "
                     + ", ".join(f"{d} {c:.0%}" for d, c in data["skipped_sessions"].items()) + ".")
    if data.get("assumed_lots"):
        lines.append("- Board lots assumed (set them in lots.csv or paper.lot_sizes): "
                     + ", ".join(f"{s} {lot}" for s, lot in data["assumed_lots"].items()) + ".")
    if data.get("other_market_files"):
        lines.append(f"- Not read (bars of the other market): {', '.join(data['other_market_files'])}.")
    return lines


# Long: report.md from top to bottom, one section after another, as the page reads.
def render_markdown(r: dict[str, Any]) -> str:
    cur = r["currency"]
    run = r["run"]
    win_rate = "-" if r["win_rate"] is None else f"{r['win_rate'] * 100:.1f}%"
    per_trade = "-" if r["haiku_calls_per_trade"] is None else f"{r['haiku_calls_per_trade']:.2f}"
    p95 = "-" if r["stop_reaction_s_p95"] is None else f"{r['stop_reaction_s_p95']:.1f} s"
    lines = [
        f"# Catalyst replay: {r['market']} {r['first_session']} to {r['last_session']} ({r['sessions']} sessions)",
        "",
        f"- Data: `{run.get('data_path')}`; real symbols: {', '.join(r['symbols']) or 'none'}; "
        f"{r['bars_replayed']:,} minute bars replayed.",
        f"- Synthetic symbols: {', '.join(r['synthetic_symbols']) if r['synthetic_symbols'] else 'none (every symbol traded is real data)'}.",
        f"- Profile: `{run.get('profile_file')}`; brain: {run['brain']}; universe seed {run['universe_seed']}; "
        f"cycles at {', '.join(run['cycle_times'])}; starting cash {_money(run['starting_cash'], cur, sign=False)}.",
        f"- Database rows under agent id `{run['agent_id']}` (kept apart from the live agent).",
        *([f"- **Partial report**: {run['partial']}."] if run.get("partial") else []),
        *_data_lines(r.get("data") or {}),
        "",
        "## Key figures",
        "",
        "| figure | value |",
        "|---|---|",
        f"| trades | {r['n_trades']} ({r['wins']} won, {r['losses']} lost; win rate {win_rate}) |",
        f"| net P&L (after fees) | {_money(r['net_pnl'], cur)} |",
        f"| gross P&L / fees | {_money(r['gross_pnl'], cur)} / {_money(r['fees'], cur, sign=False)} |",
        f"| average win / loss | {_pct(r['avg_win_pct'])} / {_pct(r['avg_loss_pct'])} (net, of entry value) |",
        f"| equity | {_money(r['starting_equity'], cur, sign=False)} to {_money(r['final_equity'], cur, sign=False)} "
        f"({_pct(r['return_pct'])}) |",
        f"| max drawdown | {_pct(r['max_drawdown_pct'], sign=False)} (equity at session closes) |",
        f"| Haiku calls per trade | {per_trade} ({r['haiku_calls']} in all) |",
        f"| LLM cost | USD {r['llm_cost_usd']:.4f} |",
        f"| monitor errors | {r['monitor_errors']} |",
        f"| stop reaction p95 | {p95} over {r['stop_reactions']} price-guard exit(s) |",
        f"| cycles | {r['cycles']} ({', '.join(f'{k} {v}' for k, v in r['cycles_by_status'].items()) or 'none'}) |",
        "",
        "## Exits by reason",
        "",
        "| reason | trades | net P&L |",
        "|---|---|---|",
    ]
    for reason, n in r["exits_by_reason"].items():
        lines.append(f"| {reason} | {n} | {_money(r['net_pnl_by_reason'].get(reason), cur)} |")
    if not r["exits_by_reason"]:
        lines.append("| - | 0 | - |")
    lines += _policy_lines(r, cur)
    lines += ["", "## Trades", "",
              "| # | symbol | tier | qty | entry | exit | reason | fees | net P&L | % | Haiku |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, t in enumerate(r["trades"], 1):
        label = t["symbol"] + (" (synthetic)" if t["synthetic"] else "")
        lines.append(
            f"| {i} | {label} | {t['tier'] or '-'} | {t['quantity']} | {_hm(t['entry_time'])} @ {t['entry_price']:g} | "
            f"{_hm(t['exit_time'])} @ {t['exit_price']:g} | {t['exit_reason']} | {t['fees']:,.2f} | "
            f"{_money(t['net_pnl'])} | {_pct(t['net_pnl_pct'])} | {t['haiku_calls']} |")
    if not r["trades"]:
        lines.append("| - | no trades | | | | | | | | | |")
    if r["open_positions"] or r["not_booked"]:
        lines += ["", "## Not closed at the end", ""]
        for t in r["open_positions"]:
            lines.append(f"- {t['symbol']} {t['quantity']} from {t['entry_price']:g} ({_hm(t['entry_time'])}), "
                         f"last {t['last_price']}: still open")
        for t in r["not_booked"]:
            lines.append(f"- {t['symbol']} {t['quantity']} from {t['entry_price']:g}: {t['status']}")
    lines += catalyst_markdown(r)
    lines += ["", "## Sessions", "", "| session | equity at the close | change |", "|---|---|---|"]
    previous = None
    for pt in r["equity_curve"]:
        change = "" if previous is None else _money(pt["equity"] - previous)
        lines.append(f"| {pt['label']} | {_money(pt['equity'], sign=False)} | {change} |")
        previous = pt["equity"]
    lines += ["", "Charts: `chart.png` (equity at each close, trade returns, exits by reason); `report.html` "
              "(this report with a chart per traded symbol, entries ▲ and exits ▼). Numbers: `report.json`.", ""]
    return "\n".join(lines)


def _policy_lines(r: dict[str, Any], cur: str) -> list[str]:
    lines: list[str] = []
    if r.get("policies"):
        lines += ["", "## Exit policies on the same entries (--compare)", "",
                  "| policy | trades | mean net % | median net % | win rate | payoff | net P&L | worst % |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, row in r["policies"].items():
            win = "-" if row["win_rate"] is None else f"{row['win_rate'] * 100:.1f}%"
            payoff = "-" if row["payoff"] is None else f"{row['payoff']:.2f}"
            lines.append(f"| {name} | {row['trades']} | {_pct(row['mean_net_pct'])} | {_pct(row['median_net_pct'])} | "
                         f"{win} | {payoff} | {_money(row['net_pnl'], cur)} | {_pct(row['worst_net_pct'])} |")
        lines += ["", r.get("compare_note", ""), "",
                  "### Regret per exit reason", "",
                  "What the trades exited for each reason made, and what holding them to the session's time exit "
                  "would have made. A positive regret means that reason sold too early.", "",
                  "| reason | trades | mean net % | held to the time exit | regret (pp per trade) | regret P&L |",
                  "|---|---|---|---|---|---|"]
        for reason, row in r.get("regret", {}).items():
            lines.append(f"| {reason} | {row['trades']} | {_pct(row['mean_net_pct'])} | {_pct(row['held_mean_net_pct'])} | "
                         f"{row['regret_pct']:+.2f} | {_money(row['regret_pnl'], cur)} |")
    reasons = r.get("pass_reasons") or {}
    if reasons:
        lines += ["", "## Why candidates were passed", "", "| reason | times |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in reasons.items()]
    return lines


def top_pass_reasons(r: dict[str, Any], n: int = 3) -> str:
    reasons = r.get("pass_reasons") or {}
    return ", ".join(f"{k} {v}" for k, v in list(reasons.items())[:n]) or "none recorded"


def print_report(r: dict[str, Any], folder: Path) -> None:
    cur = r["currency"]
    win_rate = "-" if r["win_rate"] is None else f"{r['win_rate'] * 100:.1f}%"
    reasons = ", ".join(f"{k} {v}" for k, v in r["exits_by_reason"].items()) or "none"
    print()
    print(f"Replay {r['market']}: {r['sessions']} session(s) {r['first_session']} to {r['last_session']}, "
          f"{r['run']['brain']} brain, {r['cycles']} cycle(s)")
    print(f"Trades: {r['n_trades']}, win rate {win_rate}, avg win {_pct(r['avg_win_pct'])}, "
          f"avg loss {_pct(r['avg_loss_pct'])}")
    print(f"P&L: net {_money(r['net_pnl'], cur)} (gross {_money(r['gross_pnl'], cur)}, fees {_money(r['fees'], cur, sign=False)}); "
          f"equity {_money(r['final_equity'], cur, sign=False)} ({_pct(r['return_pct'])}), "
          f"max drawdown {_pct(r['max_drawdown_pct'], sign=False)}")
    print(f"Exits: {reasons}")
    p95 = "-" if r["stop_reaction_s_p95"] is None else f"{r['stop_reaction_s_p95']:.1f} s"
    per_trade = "-" if r["haiku_calls_per_trade"] is None else f"{r['haiku_calls_per_trade']:.2f}"
    print(f"Haiku calls per trade {per_trade}, LLM cost USD {r['llm_cost_usd']:.4f}, monitor errors {r['monitor_errors']}, "
          f"stop reaction p95 {p95}")
    if not r["n_trades"] or r.get("pass_reasons"):
        print(f"Candidates passed: {top_pass_reasons(r)}")
    for name, row in (r.get("policies") or {}).items():
        print(f"  policy {name:12} {row['trades']:4d} trades, mean net {_pct(row['mean_net_pct'])}, "
              f"median {_pct(row['median_net_pct'])}, net {_money(row['net_pnl'], cur)}")
    if catalyst_summary(r):
        print(catalyst_summary(r))
    if r["open_positions"]:
        print(f"Still open at the end: {', '.join(t['symbol'] for t in r['open_positions'])}")
    if r["synthetic_symbols"]:
        print(f"Synthetic symbols: {', '.join(r['synthetic_symbols'])}")
    if r["run"].get("partial"):
        print(f"PARTIAL report: {r['run']['partial']}")
    print(f"Report: {folder}")


# --- Charts ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_equity(ax, r: Mapping[str, Any]) -> None:
    import matplotlib.ticker

    curve = r["equity_curve"]
    ax.step(range(len(curve)), [pt["equity"] for pt in curve], where="post", color=NEUTRAL)
    ax.plot(range(len(curve)), [pt["equity"] for pt in curve], "o", ms=3, color=NEUTRAL)
    step = max(1, len(curve) // 12)
    ax.set_xticks(range(0, len(curve), step))
    ax.set_xticklabels([pt["label"][5:] if pt["label"] != "start" else "start" for pt in curve][::step], fontsize=8)
    ax.set_title(f"equity at each session close (max drawdown {r['max_drawdown_pct']:.2f}%)", fontsize=10, loc="left")
    ax.set_ylabel(r["currency"])
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))


def _draw_returns(ax, trades: Sequence[Mapping[str, Any]]) -> None:
    returns = [t["net_pnl_pct"] for t in trades if t.get("net_pnl_pct") is not None]
    if returns:
        import numpy as np

        low, high = min(min(returns), 0.0), max(max(returns), 0.0)
        width = (high - low) / max(5, min(40, len(returns))) or 1.0
        # Zero is an edge, so a bar holds only wins or only losses; the outer edges hold the extremes.
        edges = width * np.arange(-np.ceil(-low / width), np.ceil(high / width) + 1)
        edges[0], edges[-1] = min(edges[0], low), max(edges[-1], high)
        if len(edges) < 2:
            edges = np.array([low - 1.0, high + 1.0])
        counts, edges, patches = ax.hist(returns, bins=edges, edgecolor="white")
        for patch, left, right in zip(patches, edges[:-1], edges[1:]):
            patch.set_facecolor(WIN if (left + right) / 2 > 0 else LOSS)
        ax.axvline(0, color=LINE, lw=0.8)
    else:
        ax.text(0.5, 0.5, "no closed trades", ha="center", va="center", transform=ax.transAxes, color=LINE)
    ax.set_title(f"net return per trade, % of entry value ({len(returns)} trades)", fontsize=10, loc="left")
    ax.set_ylabel("trades")


def _draw_exits(ax, r: Mapping[str, Any]) -> None:
    reasons = list(r["exits_by_reason"].items())
    if reasons:
        names = [k for k, _ in reasons][::-1]
        counts = [v for _, v in reasons][::-1]
        pnl = [r["net_pnl_by_reason"].get(k, 0.0) for k in names]
        bars = ax.barh(names, counts, color=[WIN if p > 0 else LOSS if p < 0 else NEUTRAL for p in pnl])
        for bar, p in zip(bars, pnl):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {p:+,.0f}", va="center", fontsize=8)
        ax.set_xlim(0, max(counts) * 1.3)
        ax.tick_params(axis="y", labelsize=8)
    else:
        ax.text(0.5, 0.5, "no exits", ha="center", va="center", transform=ax.transAxes, color=LINE)
    ax.set_title(f"exits by reason (trades; net P&L {r['currency']} at the bar's end)", fontsize=10, loc="left")


def summary_figure(r: Mapping[str, Any]):
    """Equity, returns and exits by reason: the same size for 1 symbol or 500."""
    plt = _pyplot()
    fig = plt.figure(figsize=SUMMARY_SIZE_IN)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1])
    _draw_equity(fig.add_subplot(grid[0, :]), r)
    _draw_returns(fig.add_subplot(grid[1, 0]), r["trades"])
    _draw_exits(fig.add_subplot(grid[1, 1]), r)
    fig.suptitle(f"Catalyst replay {r['market']} {r['first_session']} to {r['last_session']}: "
                 f"{r['n_trades']} trades, net {r['net_pnl']:+,.2f} {r['currency']}", fontsize=11)
    fig.tight_layout()
    return fig


def summary_png(r: Mapping[str, Any]) -> bytes:
    """The summary figure as PNG: ``chart.png``, and the same picture in ``report.html``."""
    return h.png_bytes(summary_figure(r), SUMMARY_DPI)


def traded_symbols_by_pnl(r: Mapping[str, Any]) -> list[tuple[str, float, list[dict[str, Any]]]]:
    """(symbol, net P&L of its closed trades, its rows) for every symbol traded, best P&L first."""
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in [*r["trades"], *r["open_positions"]]:
        rows[t["symbol"]].append(t)
    pnl = {s: round(sum(t.get("net_pnl") or 0.0 for t in ts), 4) for s, ts in rows.items()}
    return [(s, pnl[s], rows[s]) for s in sorted(rows, key=lambda s: (-pnl[s], s))]


def _sessions_of(rows: Sequence[Mapping[str, Any]], calendar: MarketCalendar) -> list[Session]:
    """The sessions from the symbol's first entry to its last exit (open positions: to their entry day)."""
    days = [datetime.fromisoformat(t[k]).date() for t in rows for k in ("entry_time", "exit_time") if t.get(k)]
    first, last = min(days), max(days)
    found = [calendar.session(date.fromordinal(d)) for d in range(first.toordinal(), last.toordinal() + 1)]
    return [s for s in found if s is not None]


def symbol_figure(name: str, feed: PaperFeed, calendar: MarketCalendar, rows: Sequence[Mapping[str, Any]],
                  currency: str):
    """Minute closes over the sessions the symbol was traded in, entries ▲ and exits ▼ (green win, red loss).

    The x axis counts bars, so nights and the lunch break take no room.
    """
    import numpy as np
    import pandas as pd

    plt = _pyplot()
    series = next(v for k, v in feed.series.items() if str(k) == name)
    sessions = _sessions_of(rows, calendar)
    minute = series.minute
    mask = np.zeros(len(minute), dtype=bool)
    for s in sessions:
        mask |= (minute.index >= s.open) & (minute.index < s.close)
    bars = minute.loc[mask, "close"]
    times = bars.index
    fig, ax = plt.subplots(figsize=(11, 2.8))
    ax.plot(np.arange(len(bars)), bars.to_numpy(dtype=float), lw=0.8, color=LINE)

    def x_of(iso: str) -> int:
        if not len(times):
            return 0
        return int(min(max(times.searchsorted(pd.Timestamp(iso).tz_convert("UTC"), "right") - 1, 0), len(times) - 1))

    ax.scatter([x_of(t["entry_time"]) for t in rows], [t["entry_price"] for t in rows], marker="^", s=60,
               color=NEUTRAL, zorder=3, label="entry")
    closed = [t for t in rows if t.get("exit_time")]
    ax.scatter([x_of(t["exit_time"]) for t in closed], [t["exit_price"] for t in closed], marker="v", s=60,
               color=[WIN if t["net_pnl"] > 0 else LOSS for t in closed], zorder=3, label="exit (green win, red loss)")
    starts = [int(times.searchsorted(s.open)) for s in sessions]
    step = max(1, len(starts) // 10)
    ax.set_xticks(starts[::step])
    ax.set_xticklabels([s.day.strftime("%m-%d") for s in sessions][::step], fontsize=8)
    for x in starts[1:]:
        ax.axvline(x, color="#dddddd", lw=0.5, zorder=0)
    ax.set_ylabel(currency)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


# --- report.html ----------------------------------------------------------------------------------
def _figure_cards(r: Mapping[str, Any]) -> str:
    cur = r["currency"]
    win_rate = "-" if r["win_rate"] is None else f"{r['win_rate'] * 100:.1f}%"
    per_trade = "-" if r["haiku_calls_per_trade"] is None else f"{r['haiku_calls_per_trade']:.2f}"
    p95 = "-" if r["stop_reaction_s_p95"] is None else f"{r['stop_reaction_s_p95']:.1f} s"
    return h.key_figures([
        ("trades", f"{r['n_trades']} ({r['wins']} won, {r['losses']} lost)", ""),
        ("win rate", win_rate, ""),
        ("net P&L after fees", _money(r["net_pnl"], cur), h.signed_class(r["net_pnl"])),
        ("gross P&L", _money(r["gross_pnl"], cur), h.signed_class(r["gross_pnl"])),
        ("fees", _money(r["fees"], cur, sign=False), ""),
        ("average win / loss", f"{_pct(r['avg_win_pct'])} / {_pct(r['avg_loss_pct'])}", ""),
        ("equity", f"{_money(r['final_equity'], cur, sign=False)} ({_pct(r['return_pct'])})", h.signed_class(r["return_pct"])),
        ("max drawdown", _pct(r["max_drawdown_pct"], sign=False), ""),
        ("LLM cost", f"USD {r['llm_cost_usd']:.4f}", ""),
        ("Haiku calls per trade", f"{per_trade} ({r['haiku_calls']} in all)", ""),
        ("monitor errors", str(r["monitor_errors"]), "loss" if r["monitor_errors"] else ""),
        ("stop reaction p95", f"{p95} ({r['stop_reactions']} exits)", ""),
    ])


def _policy_html(r: Mapping[str, Any]) -> str:
    cur = r["currency"]
    parts: list[str] = []
    if r.get("policies"):
        rows = []
        for name, row in r["policies"].items():
            win = "-" if row["win_rate"] is None else f"{row['win_rate'] * 100:.1f}%"
            payoff = "-" if row["payoff"] is None else f"{row['payoff']:.2f}"
            rows.append([name, row["trades"], _pct(row["mean_net_pct"]), _pct(row["median_net_pct"]), win, payoff,
                         _money(row["net_pnl"], cur), _pct(row["worst_net_pct"])])
        parts += ["<h2>Exit policies on the same entries (--compare)</h2>",
                  h.table(["policy", "trades", "mean net %", "median net %", "win rate", "payoff", "net P&L", "worst %"],
                          rows, numeric=range(1, 8)),
                  f'<p class="note">{h.esc(r.get("compare_note", ""))}</p>']
    if r.get("regret"):
        rows = [[reason, row["trades"], _pct(row["mean_net_pct"]), _pct(row["held_mean_net_pct"]),
                 f"{row['regret_pct']:+.2f}", _money(row["regret_pnl"], cur)] for reason, row in r["regret"].items()]
        parts += ["<h2>Regret per exit reason</h2>",
                  '<p class="note">What the trades exited for each reason made, and what holding them to the session\'s '
                  "time exit would have made. A positive regret means that reason sold too early.</p>",
                  h.table(["reason", "trades", "mean net %", "held to the time exit", "regret (pp per trade)", "regret P&L"],
                          rows, numeric=range(1, 6))]
    return "\n".join(parts)


def _trade_cells(t: Mapping[str, Any]) -> list[Any]:
    return [t["symbol"] + (" (synthetic)" if t.get("synthetic") else ""), t.get("tier") or "-", t["quantity"],
            f"{_hm(t['entry_time'])} @ {t['entry_price']:g}", f"{_hm(t['exit_time'])} @ {t['exit_price']:g}",
            t["exit_reason"] + (f" ({t['exit_signal']})" if t.get("exit_signal") else ""), f"{t['fees']:,.2f}",
            _money(t["net_pnl"]), _pct(t["net_pnl_pct"]), t["haiku_calls"]]


TRADE_HEADERS = ["symbol", "tier", "qty", "entry", "exit", "reason", "fees", "net P&L", "%", "Haiku"]


def _trades_table(trades: Sequence[Mapping[str, Any]]) -> str:
    classes = [["" for _ in TRADE_HEADERS[:7]] + [h.signed_class(t["net_pnl"])] * 2 + [""] for t in trades]
    return h.table(TRADE_HEADERS, [_trade_cells(t) for t in trades], numeric=(2, 6, 7, 8, 9), classes=classes)


def _symbol_section(name: str, pnl: float, rows: Sequence[Mapping[str, Any]], feed: PaperFeed,
                    calendar: MarketCalendar, cur: str) -> str:
    closed = [t for t in rows if t.get("exit_time")]
    still_open = len(rows) - len(closed)
    title = (f"{name}: {_money(pnl, cur)} over {len(closed)} closed trade(s)"
             + (f", {still_open} still open" if still_open else ""))
    try:
        chart = h.image(symbol_figure(name, feed, calendar, rows, cur), f"{name}: price with entries and exits", dpi=80)
    except Exception as exc:  # noqa: BLE001 - one symbol's chart must not cost the report
        log.exception("chart of %s failed", name)
        chart = f'<p class="note">chart not drawn ({h.esc(type(exc).__name__)}: {h.esc(exc)})</p>'
    table = _trades_table(closed) if closed else ""
    return (f'<section class="symbol" id="{h.esc(name)}"><h3 class="{h.signed_class(pnl)}">{h.esc(title)}</h3>'
            f"{chart}{table}</section>")


def render_html(r: Mapping[str, Any], feed: PaperFeed, calendar: MarketCalendar, summary: bytes | None = None) -> str:
    """The report as one HTML page; ``summary``: the summary chart's PNG when already drawn."""
    cur = r["currency"]
    run = r["run"]
    title = f"Catalyst replay {r['market']} {r['first_session']} to {r['last_session']}"
    meta = [f"{r['sessions']} session(s); data {run.get('data_path')}; real symbols {len(r['symbols'])}, "
            f"{r['bars_replayed']:,} minute bars",
            f"brain {run['brain']}; profile {run.get('profile_file')}; cycles at {', '.join(run['cycle_times'])}; "
            f"starting cash {_money(run['starting_cash'], cur, sign=False)}",
            f"database rows under agent id {run['agent_id']} (kept apart from the live agent)"]
    if r["synthetic_symbols"]:
        meta.append(f"synthetic symbols: {', '.join(r['synthetic_symbols'])}")
    body = [f"<h1>{h.esc(title)}</h1>", '<ul class="meta">' + "".join(f"<li>{h.esc(m)}</li>" for m in meta) + "</ul>"]
    if run.get("partial"):
        body.append(f'<p class="loss"><strong>Partial report:</strong> {h.esc(run["partial"])}</p>')
    body += ["<h2>Key figures</h2>", _figure_cards(r),
             "<h2>Equity, returns and exits</h2>",
             h.png_image(summary if summary is not None else summary_png(r), "equity, trade returns and exits by reason")]
    exits = [[reason, n, _money(r["net_pnl_by_reason"].get(reason), cur)] for reason, n in r["exits_by_reason"].items()]
    body += ["<h2>Exits by reason</h2>",
             h.table(["reason", "trades", "net P&L"], exits or [["-", 0, "-"]], numeric=(1, 2),
                     classes=[["", "", h.signed_class(r["net_pnl_by_reason"].get(k))] for k, _ in r["exits_by_reason"].items()]
                     or None)]
    body.append(_policy_html(r))
    if r.get("pass_reasons"):
        body += ["<h2>Why candidates were passed</h2>",
                 h.table(["reason", "times"], list(r["pass_reasons"].items()), numeric=(1,))]
    elif not r["n_trades"]:
        body.append('<p class="note">No trade and no pass reason recorded.</p>')
    body += ["<h2>Trades</h2>", _trades_table(r["trades"]) if r["trades"] else "<p>No closed trade.</p>"]
    if r["open_positions"] or r["not_booked"]:
        items = [f"{t['symbol']} {t['quantity']} from {t['entry_price']:g} ({_hm(t['entry_time'])}), last "
                 f"{t['last_price']}: still open" for t in r["open_positions"]]
        items += [f"{t['symbol']} {t['quantity']} from {t['entry_price']:g}: {t['status']}" for t in r["not_booked"]]
        body += ["<h2>Not closed at the end</h2>", "<ul>" + "".join(f"<li>{h.esc(i)}</li>" for i in items) + "</ul>"]
    symbols = traded_symbols_by_pnl(r)
    if symbols:
        body += [f"<h2>Per symbol, best P&amp;L first ({len(symbols)})</h2>",
                 '<p class="note">Minute closes over the sessions each symbol was traded in; entries ▲, exits ▼ '
                 "(green a win, red a loss).</p>"]
        body += [_symbol_section(name, pnl, rows, feed, calendar, cur) for name, pnl, rows in symbols]
    return h.page(title, "\n".join(body))
