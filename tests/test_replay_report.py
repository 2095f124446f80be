"""The replay's report at any size: a one-screen chart.png and a self-contained report.html.

A 50-symbol replay drew one PNG 1,170 x 8,640 pixels (a price panel per symbol, stacked). The
report here is built from the real 09988 minute bars under 50 codes, one or two trades in each.
"""
from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import pytest

from runner.replay_figures import summarize
from runner.replay_report import traded_symbols_by_pnl, write_report
from tests.report_builders import CALENDAR, feed_of, report_of


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def fifty(tmp_path_factory) -> tuple[Path, dict]:
    feed = feed_of(50)
    report = report_of(feed)
    folder = write_report(report, feed, CALENDAR, tmp_path_factory.mktemp("reports"), "replay-50")
    return folder, report


def test_chart_png_of_a_50_symbol_replay_is_one_screen(fifty):
    folder, report = fifty
    assert len({t["symbol"] for t in report["trades"]}) == 50
    width, height = png_size(folder / "chart.png")
    assert height <= 2000 and width <= 2000, (width, height)
    assert (folder / "chart.png").stat().st_size > 20_000, "equity, returns and exits are drawn"
    # report.html shows the same picture (drawn once for both).
    assert base64.b64encode((folder / "chart.png").read_bytes()).decode("ascii") in (folder / "report.html").read_text()


def test_report_html_has_one_section_per_traded_symbol_best_pnl_first(fifty):
    folder, report = fifty
    html = (folder / "report.html").read_text()
    sections = re.findall(r'<section class="symbol" id="([^"]+)">(.*?)</section>', html, re.S)
    pnl = {}
    for t in report["trades"]:
        pnl[t["symbol"]] = pnl.get(t["symbol"], 0.0) + t["net_pnl"]
    assert [name for name, _ in sections] == sorted(pnl, key=lambda s: (-round(pnl[s], 4), s))
    assert [s for s, _, _ in traded_symbols_by_pnl(report)] == [name for name, _ in sections]
    for name, body in sections:
        assert body.count('src="data:image/png;base64,') == 1, f"{name} has its own chart"
        trades = [t for t in report["trades"] if t["symbol"] == name]
        assert body.count("<tr>") == len(trades) + 1, f"{name} lists its {len(trades)} trade(s)"
        for t in trades:
            assert f"{t['entry_price']:g}" in body and t["exit_reason"] in body
    # The key figures and the summary, before the symbols.
    head = html.split('<section class="symbol"')[0]
    assert f"{report['net_pnl']:+,.2f}" in head and f"{report['n_trades']} ({report['wins']} won" in head
    assert "Exits by reason" in head and "Why candidates were passed" in head and "no_tier_holds" in head


def test_report_html_is_self_contained_dark_light_and_printable(fifty):
    folder, _ = fifty
    html = (folder / "report.html").read_text()
    assert not re.search(r'(src|href)\s*=\s*"(?!data:|#)', html), "nothing fetched at view time"
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert "prefers-color-scheme: dark" in html and "@media print" in html
    assert "break-inside: avoid" in html


def test_a_replay_without_trades_still_writes_both(tmp_path):
    feed = feed_of(1)
    report = report_of(feed)
    report.update(summarize([]), trades=[], pass_reasons={"no_tier_holds": 7})
    folder = write_report(report, feed, CALENDAR, tmp_path, "replay-0")
    assert png_size(folder / "chart.png")[1] <= 2000
    html = (folder / "report.html").read_text()
    assert '<section class="symbol"' not in html and "No closed trade." in html and "no_tier_holds" in html


@pytest.mark.parametrize("returns", [[-2.78, 2.57], [0.1, 0.2, 0.3], [1.0], [-0.7, -0.7], [i / 7 - 3 for i in range(60)]])
def test_the_returns_histogram_counts_every_trade_the_largest_included(returns):
    """Bin edges summed in floating point once left the largest return outside the last bin."""
    import matplotlib.pyplot as plt

    from runner.replay_report import _draw_returns

    fig, ax = plt.subplots()
    try:
        _draw_returns(ax, [{"net_pnl_pct": r} for r in returns])
        bars = [(p.get_x(), p.get_height(), p.get_facecolor()[:3]) for p in ax.patches]
    finally:
        plt.close(fig)
    assert sum(h for _, h, _ in bars) == len(returns)
    at_or_above_zero = sum(r >= 0 for r in returns)  # a flat 0.0 % sits in the first bar right of zero
    green = sum(h for _, h, c in bars if c[1] > c[0])
    assert green == at_or_above_zero, "gains green, losses red: no bar holds both"
