"""The report pages in a real browser: headless Chromium opens report.html from a file URL, offline.

No console error, nothing fetched (every host name is unresolvable for the browser), a screenshot
that is not blank in light and dark mode, and a PDF print. Screenshots stay in the test's temp
folder (``<name>-light.png``, ``<name>-dark.png``, ``<name>.pdf``).
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

import agent
from runner.replay_report import write_report
from tests.browser import open_page
from tests.report_builders import CALENDAR, feed_of, report_of
from tests.report_fixtures import report_env


def assert_not_blank(png: Path, dark: bool) -> None:
    image = Image.open(png).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50, f"{png}: {len(colors)} colour(s), a blank page"
    corner = sum(image.getpixel((3, 3)))
    assert (corner < 150) if dark else (corner > 600), f"{png}: background {image.getpixel((3, 3))}"


def assert_reads_offline(html: Path, folder: Path, name: str) -> None:
    page = open_page(html.resolve().as_uri(), folder, name)
    assert page.errors == [], page.errors
    assert_not_blank(page.light_png, dark=False)
    assert_not_blank(page.dark_png, dark=True)
    assert page.pdf.read_bytes()[:5] == b"%PDF-" and page.pdf.stat().st_size > 20_000


def test_a_30_symbol_replay_report_opens_offline_without_errors(tmp_path):
    feed = feed_of(30)
    folder = write_report(report_of(feed), feed, CALENDAR, tmp_path / "reports", "replay-30")
    assert_reads_offline(folder / "report.html", tmp_path / "browser", "replay-30")


def test_the_daily_report_opens_offline_without_errors(database_url, tmp_path, traded_day, capsys):
    args = ["--mode", "report", "--day", traded_day.isoformat(), "--days", "5"]
    assert agent.main(args, env=report_env(database_url, tmp_path)) == 0, capsys.readouterr().err
    html = tmp_path / "reports" / f"daily-hk-{traded_day.isoformat()}" / "report.html"
    assert_reads_offline(html, tmp_path / "browser", "daily")


def test_the_browser_check_sees_a_page_that_fetches_from_the_network(tmp_path):
    """The check can fail: a page with a remote image and a script error is caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><h1>bad</h1><img src="https://cdn.example.test/x.png">'
                    "<script>console.error('boom')</script></body></html>")
    errors = open_page(page.as_uri(), tmp_path / "browser", "bad").errors
    assert any("boom" in e for e in errors) and any("cdn.example.test" in e for e in errors), errors
