"""get_news from the store: latency of one answer and the size of the tool result.

Run: ``.venv/bin/python -m bench.bench_news``. Prints figures; never fails on them.

An embedded PostgreSQL (temporary folder) holds a busy news store: 60 symbols, 80 headlines each
spread over the last 72 hours (4,800 rows, every one scored by VADER and the catalyst lexicon on
the way in). Then ``get_news`` is answered 300 times for random symbols and windows (1-72 h) at a
fixed time, as the tool does it (no provider: the store alone). Figures: scoring and storing rate,
answer latency p50/p95 (wall ms), result size p50/max in bytes of the JSON sent to Claude (target
<= 1.5 KB), and headlines per answer.
"""
from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from core.clock import SimClock  # noqa: E402
from config.settings import NewsSettings  # noqa: E402
from core.instruments import parse_symbol  # noqa: E402
from news.items import NewsItem  # noqa: E402
from news.sentiment import SentimentScorer, load_lexicon  # noqa: E402
from news.service import RESULT_BYTES, NewsService  # noqa: E402
from store.db import Database, EmbeddedPostgres  # noqa: E402
from store.news import NewsStore  # noqa: E402

SYMBOLS = 60
PER_SYMBOL = 80
CALLS = 300
NOW = datetime(2026, 3, 10, 6, 0, tzinfo=timezone.utc)
HEADLINES = [
    "{name} wins HK$2bn government contract to build data centres across the region",
    "{name} issues profit warning as weak demand and rising costs squeeze margins in the second half",
    "{name} announces share buyback of up to 10% of issued capital after strong results",
    "{name} shares drift lower in quiet trade ahead of the holiday weekend",
    "{name} raises full-year guidance after record quarterly revenue beats analyst estimates",
    "{name} launches rights issue to fund expansion; trading halt pending announcement",
    "Analysts upgrade {name} to buy, lift price target on improving cloud margins",
    "{name} executive resigns; company says strategy unchanged",
]


def _items(rng: random.Random) -> list[NewsItem]:
    out = []
    for s in range(SYMBOLS):
        symbol = parse_symbol(str(1000 + s))
        name = f"Company {s}"
        for i in range(PER_SYMBOL):
            published = NOW - timedelta(minutes=rng.uniform(0, 72 * 60))
            text = rng.choice(HEADLINES).format(name=name)
            out.append(NewsItem("bench", f"{s}-{i}", (symbol,), published, f"{text} ({i})", source="Bench Wire",
                                url=f"https://news.invalid/{s}/{i}"))
    return out


async def _bench(url: str) -> None:
    db = await Database(url, "trading").connect()
    try:
        await db.migrate("trading")
        scorer = SentimentScorer(load_lexicon(PROJECT / "config" / "news_context.yaml"))
        news = NewsService(NewsStore(db, "bench"), scorer, NewsSettings(), SimClock(NOW), sources=["bench"])
        rng = random.Random(7)
        items = _items(rng)
        started = time.perf_counter()
        await news.keep(items)
        took = time.perf_counter() - started
        print(f"scored and stored {len(items):,} headlines in {took:.2f} s ({len(items) / took:,.0f}/s)")
        latency, sizes, shown = [], [], []
        for _ in range(CALLS):
            symbol = parse_symbol(str(1000 + rng.randrange(SYMBOLS)))
            hours = rng.randint(1, 72)
            t = time.perf_counter()
            result = await news.headlines(symbol, hours)
            latency.append((time.perf_counter() - t) * 1000)
            sizes.append(len(json.dumps(result, separators=(",", ":"))))
            shown.append(len(result["headlines"]))
        q = statistics.quantiles(latency, n=20)
        print(f"get_news from the store, {CALLS} calls: p50 {statistics.median(latency):.2f} ms, p95 {q[18]:.2f} ms, "
              f"max {max(latency):.2f} ms")
        print(f"tool result size: p50 {statistics.median(sizes):.0f} B, max {max(sizes)} B (target <= {RESULT_BYTES} B); "
              f"headlines per answer p50 {statistics.median(shown):.0f}, max {max(shown)}")
    finally:
        await db.close()


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="catalyst-bench-news-"))
    server = EmbeddedPostgres(folder / "pg")
    server.start()
    try:
        server._server.psql("CREATE DATABASE bench_news;")  # noqa: SLF001
        asyncio.run(_bench(server.uri("bench_news")))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
