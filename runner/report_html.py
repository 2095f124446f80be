"""One self-contained HTML page for a report: no script, no font or image fetched at view time.

Figures are matplotlib figures embedded as base64 PNG. Why matplotlib and not plotly: it already
draws ``chart.png``, a static image costs nothing to open and prints exactly as seen, and a
self-contained plotly page carries its ~3.5 MB JavaScript bundle in every file (and a 50-symbol
report would be fifty interactive plots to initialise). Light or dark follows the reader's
``prefers-color-scheme``; figures sit on a light card in both, so one image serves both and the
page prints to PDF on white with each section kept whole.
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Iterable, Sequence

CSS = """
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1d232a; --muted: #5b6670; --rule: #d8dde2;
        --card: #f4f6f8; --win: #1a7f37; --loss: #c62828; --accent: #1f5fa8; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14181c; --fg: #e4e8ec; --muted: #9aa5b0; --rule: #2f363d; --card: #1e242a;
          --win: #4cc26a; --loss: #ff6b6b; --accent: #6ea8fe; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1120px; padding: 24px; background: var(--bg); color: var(--fg);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 1.5em; margin: 0 0 .3em; } h2 { font-size: 1.2em; margin: 1.6em 0 .5em; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.05em; margin: 0 0 .4em; }
.meta { color: var(--muted); margin: 0 0 1em; padding-left: 1.1em; }
.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
.figure { background: var(--card); border-radius: 8px; padding: 10px 12px; }
.figure .label { color: var(--muted); font-size: .85em; } .figure .value { font-size: 1.25em; font-weight: 600; }
table { border-collapse: collapse; width: 100%; margin: .4em 0 1em; font-size: .9em; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--rule); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.win { color: var(--win); } .loss { color: var(--loss); }
img.chart { display: block; width: 100%; height: auto; background: #ffffff; border-radius: 8px; }
section.symbol { margin: 1.2em 0; padding: 12px; border: 1px solid var(--rule); border-radius: 8px; }
.note { color: var(--muted); }
@media print {
  :root { --bg: #ffffff; --fg: #000000; --muted: #444444; --rule: #bbbbbb; --card: #f2f2f2;
          --win: #1a7f37; --loss: #b00020; }
  body { max-width: none; padding: 0; font-size: 11pt; }
  section.symbol, .keep, table, img.chart { break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def signed_class(value: float | None) -> str:
    return "" if not value else ("win" if value > 0 else "loss")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = (),
          classes: Sequence[Sequence[str]] | None = None) -> str:
    """An HTML table; ``numeric`` columns align right; ``classes[i][j]`` colours cell j of row i."""
    head = "".join(f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, cell in enumerate(row):
            cls = " ".join(c for c in ("num" if i in numeric else "", classes[r][i] if classes else "") if c)
            cells.append(f'<td class="{cls}">{esc(cell)}</td>' if cls else f"<td>{esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def key_figures(items: Sequence[tuple[str, str, str]]) -> str:
    """Cards of (label, value, css class)."""
    cards = "".join(f'<div class="figure"><div class="label">{esc(label)}</div>'
                    f'<div class="value {cls}">{esc(value)}</div></div>' for label, value, cls in items)
    return f'<div class="figures">{cards}</div>'


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG (closes the figure)."""
    import matplotlib.pyplot as plt

    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
        return buf.getvalue()
    finally:
        plt.close(fig)


def image(fig, alt: str, dpi: int = 100) -> str:
    """The figure as an inline PNG (closes the figure)."""
    return png_image(png_bytes(fig, dpi), alt)


def png_image(png: bytes, alt: str) -> str:
    """A PNG already drawn, inline."""
    return f'<img class="chart" alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
