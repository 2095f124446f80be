"""A replay's news: ``news.csv`` beside the bars, and which trades had a catalyst.

``news.csv`` columns: ``published_at,symbol,headline,source,url`` (``summary`` optional). A time
with an offset (``2022-06-07T14:30:00+08:00``, ``...Z``) is taken as written; a naive one is in
the market's local time. The symbol in any accepted spelling (``9988``, ``HK.09988``, ``AAPL``).
Every row is loaded into the replay agent's news store before the first session; ``get_news``
at simulated time t sees only the rows published by t.
"""
from __future__ import annotations

import csv
import hashlib
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Mapping, Sequence

from data.bars import NEWS_FILE
from core.instruments import Market, SymbolError, parse_symbol
from news.items import NewsItem

PROVIDER = "news.csv"
REQUIRED = ("published_at", "symbol", "headline", "source", "url")
# Which news counts as "at the entry" in the report: the same window as get_news's default.
ENTRY_NEWS_HOURS = 24


class NewsFileError(ValueError):
    """A news.csv that cannot be used; the message names the file, the row and what is wrong."""


def news_file(replay_path: Path) -> Path | None:
    """The news.csv of a replay folder, if there is one."""
    path = Path(replay_path)
    candidate = path / NEWS_FILE if path.is_dir() else None
    return candidate if candidate is not None and candidate.is_file() else None


def read_news_csv(path: Path, market: Market, local_tz: tzinfo) -> list[NewsItem]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise NewsFileError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(REQUIRED)}")
        items = []
        for n, raw in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
            items.append(_item(row, path, n, market, local_tz))
    return items


def _item(row: Mapping[str, str], path: Path, n: int, market: Market, local_tz: tzinfo) -> NewsItem:
    where = f"{path} row {n}"
    try:
        published = datetime.fromisoformat(row["published_at"].replace("Z", "+00:00"))
    except ValueError:
        raise NewsFileError(f"{where}: published_at {row['published_at']!r} is not a time "
                            "(e.g. 2022-06-07 14:30 or 2022-06-07T06:30:00Z)") from None
    if published.tzinfo is None:
        published = published.replace(tzinfo=local_tz)
    try:
        symbol = parse_symbol(row["symbol"])
    except SymbolError as exc:
        raise NewsFileError(f"{where}: {exc}") from None
    if symbol.market is not market:
        raise NewsFileError(f"{where}: {symbol} is not a {market.value} symbol")
    if not row["headline"]:
        raise NewsFileError(f"{where}: the headline is empty")
    url = row["url"] or None
    ident = url or hashlib.sha256(f"{symbol}|{published.isoformat()}|{row['headline']}".encode()).hexdigest()[:32]
    return NewsItem(provider=PROVIDER, provider_id=ident, symbols=(symbol,),
                    published_at=published.astimezone(timezone.utc), headline=row["headline"],
                    summary=row.get("summary", ""), url=url, source=row["source"] or PROVIDER)


# --- the report -----------------------------------------------------------------------------------
async def mark_catalysts(report: dict[str, Any], news: Any, loaded: int) -> None:
    """Say of every trade (and open position) whether its news had a catalyst at the entry time,
    as get_news would have answered then; and how many headlines the replay had."""
    from core.instruments import parse_symbol as symbol_of

    rows = [*report.get("trades", []), *report.get("open_positions", [])]
    for row in rows:
        at = datetime.fromisoformat(row["entry_time"])
        answer = await news.headlines(symbol_of(row["symbol"]), ENTRY_NEWS_HOURS, at=at, refresh=False)
        tagged = [h for h in answer.get("headlines", []) if h.get("tags")]
        row["catalyst"] = {
            "has_catalyst": bool(answer.get("has_catalyst")), "score": answer.get("score"),
            "tags": answer.get("catalysts", []), "headline": (tagged or answer.get("headlines") or [{}])[0].get("headline"),
        }
    report["news"] = {"headlines_loaded": loaded, "sources": list(news.sources),
                      "trades_with_catalyst": sum(1 for t in report.get("trades", []) if t["catalyst"]["has_catalyst"])}


def catalyst_markdown(report: Mapping[str, Any]) -> list[str]:
    news = report.get("news")
    if not news:
        return []
    if not news["sources"]:
        return ["", "## Catalysts at entry", "", "No news in this replay: a `news.csv` beside the bars "
                "(`published_at,symbol,headline,source,url`) feeds get_news and the rules brain's tier 1."]
    lines = ["", "## Catalysts at entry", "",
             f"News: {news['headlines_loaded']} headline(s) from {', '.join(news['sources']) or 'no source'}; "
             f"{news['trades_with_catalyst']} of {len(report.get('trades', []))} trade(s) entered with a catalyst "
             f"(get_news over the {ENTRY_NEWS_HOURS} h before the entry).", "",
             "| # | symbol | tier | entry | catalyst | news score | headline |", "|---|---|---|---|---|---|---|"]
    for i, t in enumerate(report.get("trades", []), 1):
        c = t.get("catalyst") or {}
        what = ", ".join(c.get("tags") or []) if c.get("has_catalyst") else "none"
        headline = (c.get("headline") or "-").replace("|", "/")
        lines.append(f"| {i} | {t['symbol']} | {t.get('tier') or '-'} | {t['entry_time'][5:16].replace('T', ' ')} | "
                     f"{what} | {c.get('score', '-')} | {headline} |")
    return lines


def catalyst_summary(report: Mapping[str, Any]) -> str | None:
    news = report.get("news")
    if not news or not news["sources"]:
        return None
    marked = [f"{t['symbol']} tier {t.get('tier')} ({', '.join(t['catalyst']['tags'])})"
              for t in report.get("trades", []) if t.get("catalyst", {}).get("has_catalyst")]
    return (f"Catalysts: {news['trades_with_catalyst']} of {len(report.get('trades', []))} trade(s) "
            f"entered with one{': ' + '; '.join(marked) if marked else ''} ({news['headlines_loaded']} headline(s) loaded)")


def load_for_replay(replay_path: Path, market: Market, local_tz: tzinfo) -> Sequence[NewsItem]:
    path = news_file(replay_path)
    return read_news_csv(path, market, local_tz) if path else []
