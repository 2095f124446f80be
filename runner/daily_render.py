"""The end-of-day report's files and email: report.json, report.md, report.html, chart.png.

The figures come from ``daily_report.build``; this module only lays them out. The email is the
HTML page with the chart inline (``cid:``, an image part of the same message) and the Markdown
text as its plain-text alternative.
"""
from __future__ import annotations

import asyncio
import json
import logging
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Mapping

import runner.report_html as h
from runner.replay_report import _draw_exits, _draw_returns, _hm, _money, _pct, _pyplot

log = logging.getLogger("catalyst.report")

CHART_SIZE_IN = (12.0, 7.0)
CHART_DPI = 100


def headline(r: Mapping[str, Any]) -> str:
    win = "" if r["win_rate"] is None else f", win rate {r['win_rate'] * 100:.0f}%"
    prefix = f"[{r['run_kind']}] " if r.get("run_kind") else ""
    return (f"{prefix}Catalyst {r['market']} {r['day']}: {r['n_trades']} trade(s), net "
            f"{_money(r['net_pnl'], r['currency'])}{win}")


def _minutes(t: Mapping[str, Any]) -> str:
    return "-" if t.get("hold_minutes") is None else f"{t['hold_minutes']:.0f} min"


def _trade_cells(t: Mapping[str, Any]) -> list[Any]:
    return [t["symbol"], t["quantity"], f"{_hm(t['entry_time'])} @ {t['entry_price']:g}",
            f"{_hm(t['exit_time'])} @ {t['exit_price']:g}", t["exit_reason"], f"{t['fees']:,.2f}",
            _money(t["net_pnl"]), _pct(t["net_pnl_pct"]), _minutes(t)]


TRADE_HEADERS = ["symbol", "qty", "entry", "exit", "reason", "fees", "net P&L", "%", "held"]


def _figures(r: Mapping[str, Any]) -> list[tuple[str, str]]:
    cur = r["currency"]
    llm = r["llm"]
    win = "-" if r["win_rate"] is None else f"{r['win_rate'] * 100:.1f}%"
    equity = ("-" if r["start_equity"] is None else
              f"{_money(r['start_equity'], cur, sign=False)} to {_money(r['end_equity'], cur, sign=False)} "
              f"({_pct(r['return_pct'])}, realized)")
    risk = r["risk"]
    halt = f"HALTED ({risk['halt_reason']})" if risk["halted"] else ("warned" if risk["warned"] else "no halt, no warning")
    return [
        ("trades", f"{r['n_trades']} ({r['wins']} won, {r['losses']} lost; win rate {win})"),
        ("net P&L after fees", _money(r["net_pnl"], cur)),
        ("gross P&L / fees", f"{_money(r['gross_pnl'], cur)} / {_money(r['fees'], cur, sign=False)}"),
        ("equity", equity),
        ("risk", f"{halt}; entries refused by the risk check: {risk['refused_entries']}"),
        ("LLM spend", f"USD {llm['spend_usd']:.4f} of USD {llm['budget_usd']:.2f} budget"),
        ("Haiku calls", str(llm["haiku_calls"])),
        ("monitor errors", str(r["monitor_errors"])),
        ("cycles", ", ".join(f"{k} {v}" for k, v in r["cycles_by_status"].items()) or "none"),
    ]


# --- Plain text / Markdown ------------------------------------------------------------------------
def render_text(r: Mapping[str, Any]) -> str:

    cur = r["currency"]
    lines = [f"# {headline(r)}", "", f"Agent `{r['agent_id']}`.", "", "## Key figures", "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _figures(r)]
    if r.get("calendar_warning"):
        lines += ["", f"**{r['calendar_warning']}**"]
    if not r["n_trades"]:
        lines += ["", f"**No trade:** {why_no_trades(r)}."]
    lines += ["", "## Trades", "", "| " + " | ".join(TRADE_HEADERS) + " |", "|" + "---|" * len(TRADE_HEADERS)]
    lines += ["| " + " | ".join(str(c) for c in _trade_cells(t)) + " |" for t in r["trades"]]
    for t in r["open_positions"]:
        lines.append(f"- still open: {t['symbol']} {t['quantity']} from {t['entry_price']:g} ({_hm(t['entry_time'])})")
    lines += ["", "## Exits by reason", "", "| reason | trades | net P&L |", "|---|---|---|"]
    lines += [f"| {k} | {n} | {_money(r['net_pnl_by_reason'].get(k), cur)} |" for k, n in r["exits_by_reason"].items()]
    for title, rows in _lists(r):
        lines += ["", f"## {title}", ""] + ([f"- {row}" for row in rows] or ["- none"])
    if r.get("pass_reasons"):
        lines += ["", "## Why candidates were passed", "", "| reason | times |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in r["pass_reasons"].items()]
    if r.get("performance"):
        lines += _performance_lines(r)
    lines += ["", "Numbers: `report.json`; chart: `chart.png`; the same as a page: `report.html`.", ""]
    return "\n".join(lines)


def _lists(r: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    return [
        ("Risk events", [f"{e['at'][11:16]} {e['event']}: {e['subject']}" for e in r["risk"]["events"]]),
        ("Reconciliation changes", [f"{e['at'][11:16]} {e['subject']}" for e in r["reconciliation"]]),
        ("What Big Bro sent and how it was answered",
         [f"{m['at'][11:16]} {m['msg_type']}: {m['subject']} ({m['status']}"
          + (f"; answered: {m['answer']}" if m["answer"] else "") + ")" for m in r["big_bro"]]),
    ]


def _performance_lines(r: Mapping[str, Any]) -> list[str]:
    p, cur = r["performance"], r["currency"]
    win = "-" if p["win_rate"] is None else f"{p['win_rate'] * 100:.1f}%"
    lines = ["", f"## Performance over {len(p['days'])} trading days", "",
             f"{p['trades']} trades, net {_money(p['net_pnl'], cur)}, win rate {win}, payoff "
             f"{'-' if p['payoff'] is None else format(p['payoff'], '.2f')}, max drawdown "
             f"{_money(p['max_drawdown'], cur, sign=False)}"
             + ("" if p["max_drawdown_pct"] is None else f" ({p['max_drawdown_pct']:.2f}%)")
             + f", fees {_money(p['fees'], cur, sign=False)}, LLM USD {p['llm_usd']:.4f}, cost per trade "
             f"{'-' if p['cost_per_trade'] is None else format(p['cost_per_trade'], ',.2f')}.", "",
             "| day | trades | wins | net P&L | fees | equity |", "|---|---|---|---|---|---|"]
    lines += [f"| {d['day']} | {d['trades']} | {d['wins']} | {_money(d['net_pnl'], cur)} | {d['fees']:,.2f} | "
              f"{d['equity']:,.2f} |" for d in p["days"]]
    return lines


# --- Chart ----------------------------------------------------------------------------------------
def figure(r: Mapping[str, Any]):
    """Cumulative P&L (over the days with --days, else over the day's exits), returns, exits by reason."""
    import matplotlib.ticker

    plt = _pyplot()
    fig = plt.figure(figsize=CHART_SIZE_IN)
    grid = fig.add_gridspec(2, 2)
    ax = fig.add_subplot(grid[0, :])
    if r.get("performance"):
        days = r["performance"]["days"]
        net = [d["net_pnl"] for d in days]
        ax.bar(range(len(days)), net, color=["#2ca02c" if v > 0 else "#d62728" if v < 0 else "#999999" for v in net],
               label="daily net P&L (green gain, red loss)")
        cumulative = [sum(net[: i + 1]) for i in range(len(net))]
        ax.plot(range(len(days)), cumulative, "o-", color="#1f77b4", label="cumulative")
        ax.set_xticks(range(len(days)))
        ax.set_xticklabels([d["day"][5:] for d in days], fontsize=8)
        ax.set_title(f"net P&L per day over {len(days)} trading days ({r['currency']})", fontsize=10, loc="left")
        ax.legend(loc="upper left", fontsize=8)
    else:
        closed = sorted(r["trades"], key=lambda t: t["exit_time"])
        cumulative = [sum(t["net_pnl"] for t in closed[: i + 1]) for i in range(len(closed))]
        ax.step(range(len(closed) + 1), [0.0] + cumulative, where="post", color="#1f77b4")
        ax.set_xticks(range(1, len(closed) + 1))
        ax.set_xticklabels([t["exit_time"][11:16] for t in closed], fontsize=8, rotation=45 if len(closed) > 12 else 0)
        ax.set_title(f"realized net P&L through the day, at each exit ({r['currency']})", fontsize=10, loc="left")
    ax.axhline(0, color="#999999", lw=0.6)
    ax.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    _draw_returns(fig.add_subplot(grid[1, 0]), r["trades"])
    _draw_exits(fig.add_subplot(grid[1, 1]), r)
    fig.suptitle(headline(r), fontsize=11)
    fig.tight_layout()
    return fig


def chart_png(r: Mapping[str, Any]) -> bytes:
    import io

    plt = _pyplot()
    fig = figure(r)
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=CHART_DPI, facecolor="white")
    finally:
        plt.close(fig)
    return buf.getvalue()


# --- HTML -----------------------------------------------------------------------------------------
def render_html(r: Mapping[str, Any], chart_src: str) -> str:
    """The page; ``chart_src`` is a data: URL (report.html) or a cid: URL (the email)."""

    cur = r["currency"]
    body = [f"<h1>{h.esc(headline(r))}</h1>", f'<p class="note">Agent {h.esc(r["agent_id"])}</p>',
            "<h2>Key figures</h2>", h.table(["figure", "value"], _figures(r))]
    if r.get("calendar_warning"):
        body.append(f"<p><strong>{h.esc(r['calendar_warning'])}</strong></p>")
    if not r["n_trades"]:
        body.append(f"<p><strong>No trade:</strong> {h.esc(why_no_trades(r))}.</p>")
    body += [f'<img class="chart" alt="P&amp;L, returns and exits by reason" src="{h.esc(chart_src)}">',
             "<h2>Trades</h2>",
             h.table(TRADE_HEADERS, [_trade_cells(t) for t in r["trades"]], numeric=(1, 5, 6, 7, 8),
                     classes=[[""] * 6 + [h.signed_class(t["net_pnl"])] * 2 + [""] for t in r["trades"]])
             if r["trades"] else "<p>No closed trade.</p>"]
    if r["open_positions"]:
        body.append("<ul>" + "".join(f"<li>still open: {h.esc(t['symbol'])} {t['quantity']} from {t['entry_price']:g}</li>"
                                     for t in r["open_positions"]) + "</ul>")
    body += ["<h2>Exits by reason</h2>",
             h.table(["reason", "trades", "net P&L"], [[k, n, _money(r["net_pnl_by_reason"].get(k), cur)]
                                                      for k, n in r["exits_by_reason"].items()], numeric=(1, 2))]
    for title, rows in _lists(r):
        body += [f"<h2>{h.esc(title)}</h2>", "<ul>" + "".join(f"<li>{h.esc(x)}</li>" for x in rows or ["none"]) + "</ul>"]
    if r.get("pass_reasons"):
        body += ["<h2>Why candidates were passed</h2>",
                 h.table(["reason", "times"], list(r["pass_reasons"].items()), numeric=(1,))]
    if r.get("performance"):
        p = r["performance"]
        lines = _performance_lines(r)
        body += [f"<h2>{h.esc(lines[1][3:])}</h2>", f"<p>{h.esc(lines[3])}</p>",
                 h.table(["day", "trades", "wins", "net P&L", "fees", "equity"],
                         [[d["day"], d["trades"], d["wins"], _money(d["net_pnl"], cur), f"{d['fees']:,.2f}",
                           f"{d['equity']:,.2f}"] for d in p["days"]], numeric=(1, 2, 3, 4, 5))]
    return h.page(headline(r), "\n".join(body))


def write(r: Mapping[str, Any], folder: Path) -> Path:
    """The four files (a second run for the same day writes them again)."""
    import base64

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(r, indent=2, default=str) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_text(r), encoding="utf-8")
    png = chart_png(r)
    (folder / "chart.png").write_bytes(png)
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    (folder / "report.html").write_text(render_html(r, src), encoding="utf-8")
    return folder


# --- Email ----------------------------------------------------------------------------------------
def email_message(r: Mapping[str, Any], folder: Path) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = headline(r)
    message.set_content(render_text(r))
    cid = make_msgid(domain="catalyst.report")
    message.add_alternative(render_html(r, f"cid:{cid[1:-1]}"), subtype="html")
    message.get_payload()[1].add_related((folder / "chart.png").read_bytes(), "image", "png", cid=cid,
                                         filename="chart.png")
    return message


async def send_email(r: Mapping[str, Any], folder: Path, secrets) -> str:
    """Send by the configured email; what happened, in words ("NOT ..." when it failed)."""
    from ops.alerts import email_channel
    from core.clock import external_io
    from ops.logsetup import RedactSecrets

    channel = email_channel(secrets)
    if channel is None:
        return "no email configured (SMTP_HOST, ALERT_EMAIL_TO)"
    try:
        with external_io():
            await asyncio.to_thread(channel.send_message, email_message(r, folder))
    except Exception as exc:  # noqa: BLE001 - one line, never the password
        redact = RedactSecrets(secrets.secret_values()).redact
        log.warning("daily report email failed: %s: %s", type(exc).__name__, redact(str(exc))[:200])
        return f"NOT emailed ({type(exc).__name__}: {redact(str(exc))[:120]})"
    return f"emailed to {', '.join(channel.recipients)}"


def why_no_trades(r: Mapping[str, Any], n: int = 3) -> str:
    reasons = list((r.get("pass_reasons") or {}).items())[:n]
    if not r.get("cycles_by_status"):
        return "no cycle ran that day"
    if not reasons:
        return "no candidate was recorded as passed"
    return "top pass reasons: " + ", ".join(f"{k} {v}" for k, v in reasons)
