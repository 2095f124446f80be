"""What ``get_news`` answers: the store's items about a symbol up to now, fresh from the providers.

At time t (the injected clock) the providers are asked for the symbol's news (at most once per
``refresh_minutes`` each, all at once, each in a worker thread with its timeout); what they give
is scored and kept in ``news_items``; the answer is read back from the store: only items
published at or before t, within the last ``hours``, newest first. A replay has no providers:
its ``news.csv`` fills the store before the first session, and the clock does the rest.

A provider that fails (error, timeout, rate limit) is named in the answer; the others' items
are still answered.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence

from core.clock import Clock, external_io
from config.settings import NewsSettings
from core.instruments import Symbol
from news.items import NewsItem, ScoredItem
from news.providers import NewsProvider, describe_failure
from news.sentiment import SentimentScorer
from store.news import NewsStore, StoredNews

log = logging.getLogger(__name__)

NO_SOURCE_NOTE = "no news source is configured; treat the catalyst as unknown (not positive)"
# The tool result's size limit (bytes of compact JSON), and the longest headline it shows.
RESULT_BYTES = 1536
HEADLINE_CHARS = 110
# Older headlines count less in the overall score: their weight halves every this many hours.
SCORE_HALF_LIFE_HOURS = 12.0
# An answer reads at most this many items of the window from the store.
READ_LIMIT = 50

NameLookup = Callable[[Symbol], Awaitable[tuple[str, ...]]]


@dataclass
class NewsService:
    store: NewsStore
    scorer: SentimentScorer
    settings: NewsSettings
    clock: Clock
    providers: Sequence[NewsProvider] = ()
    names: NameLookup | None = None
    sources: list[str] = field(default_factory=list)          # besides the providers, e.g. "news.csv"
    _asked: dict[tuple[str, Symbol], datetime] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        return bool(self.providers or self.sources)

    # --- filling the store ------------------------------------------------------------------------
    async def keep(self, items: Sequence[NewsItem], source: str | None = None) -> int:
        """Score and store ``items`` (e.g. a replay's news.csv); returns how many were new."""
        if source and source not in self.sources:
            self.sources.append(source)
        scored = [ScoredItem(i, *self._score(i)) for i in items]
        return await self.store.add(scored, self.clock.now())

    def _score(self, item: NewsItem) -> tuple[float, tuple[str, ...]]:
        s = self.scorer.score(item.headline, item.summary)
        return s.sentiment, s.tags

    async def refresh(self, symbol: Symbol, hours: int) -> list[dict[str, str]]:
        """Ask every provider due for ``symbol``; keep what they give; return the failures."""
        now = self.clock.now()
        every = timedelta(minutes=self.settings.refresh_minutes)
        due = [p for p in self.providers if now - self._asked.get((p.name, symbol), datetime.min.replace(tzinfo=now.tzinfo)) >= every]
        if not due:
            return []
        names = {symbol: await self._names(symbol)}
        start = now - timedelta(hours=hours)
        outcomes = await asyncio.gather(*(self._ask(p, symbol, names, start, now) for p in due), return_exceptions=True)
        failed, fetched = [], []
        for provider, outcome in zip(due, outcomes):
            if isinstance(outcome, BaseException):
                why = describe_failure(outcome, self.settings.timeout_seconds)
                log.warning("news provider %s failed for %s: %s", provider.name, symbol, why)
                failed.append({"provider": provider.name, "error": why})
                continue
            self._asked[(provider.name, symbol)] = now
            fetched.extend(outcome)
        await self.keep(fetched)
        return failed

    async def _ask(self, provider: NewsProvider, symbol: Symbol, names, start: datetime, end: datetime) -> list[NewsItem]:
        # The request's own timeout bounds the thread; this bounds the wait on the wall clock too.
        with external_io():
            return await asyncio.wait_for(asyncio.to_thread(provider.fetch, [symbol], names, start, end),
                                          self.settings.timeout_seconds * 2 + 1)

    async def _names(self, symbol: Symbol) -> tuple[str, ...]:
        aliases = tuple(self.settings.aliases.get(str(symbol), ()))
        if self.names is None:
            return aliases
        try:
            return tuple(dict.fromkeys((*await self.names(symbol), *aliases)))
        except Exception as exc:  # noqa: BLE001 - a name is a nicety: the code still matches
            log.warning("no company name for %s: %s", symbol, exc)
            return aliases

    # --- answering --------------------------------------------------------------------------------
    async def headlines(self, symbol: Symbol, hours: int, at: datetime | None = None, refresh: bool = True) -> dict[str, Any]:
        """The ``get_news`` result for ``symbol`` at ``at`` (default: now)."""
        now = at or self.clock.now()
        if not self.configured:
            return {"symbol": str(symbol), "hours": hours, "headlines": [], "score": 0.0, "has_catalyst": False,
                    "note": NO_SOURCE_NOTE}
        failed = await self.refresh(symbol, hours) if refresh and self.providers else []
        rows = await self.store.recent(str(symbol), now - timedelta(hours=hours), now, READ_LIMIT)
        return digest(symbol, hours, now, rows, self.settings, self.scorer.positive_tags, failed)


def digest(symbol: Symbol, hours: int, now: datetime, rows: Sequence[StoredNews], settings: NewsSettings,
           positive_tags: frozenset[str], failed: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The compact answer (pure): up to ``max_headlines`` distinct headlines with source, age, score
    and tags, the overall score (recency-weighted mean) and ``has_catalyst``; at most RESULT_BYTES."""
    distinct: list[StoredNews] = []
    seen: set[str] = set()
    for row in rows:
        key = " ".join(row.headline.lower().split())
        if key not in seen:
            seen.add(key)
            distinct.append(row)
    weights = [0.5 ** (max((now - r.published_at).total_seconds(), 0) / 3600 / SCORE_HALF_LIFE_HOURS) for r in distinct]
    score = round(sum(w * r.sentiment for w, r in zip(weights, distinct)) / sum(weights), 3) if distinct else 0.0
    catalysts = sorted({t for r in distinct if r.sentiment > 0 for t in r.tags if t in positive_tags})
    result: dict[str, Any] = {
        "symbol": str(symbol), "hours": hours, "count": len(distinct), "score": score,
        "has_catalyst": bool(catalysts) and score >= settings.catalyst_threshold,
        "catalysts": catalysts,
        "headlines": [_headline(r, now) for r in distinct[: settings.max_headlines]],
    }
    if failed:
        result["failed"] = list(failed)
    if not distinct:
        result["note"] = f"no headline about {symbol} in the last {hours} h"
    return _fit(result)


def _headline(row: StoredNews, now: datetime) -> dict[str, Any]:
    text = row.headline if len(row.headline) <= HEADLINE_CHARS else row.headline[: HEADLINE_CHARS - 3].rstrip() + "..."
    out: dict[str, Any] = {"headline": text, "source": row.source[:24], "age": _age(now - row.published_at),
                           "sentiment": round(row.sentiment, 2)}
    if row.tags:
        out["tags"] = list(row.tags)
    return out


def _age(delta: timedelta) -> str:
    minutes = max(int(delta.total_seconds() // 60), 0)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _size(result: dict[str, Any]) -> int:
    return len(json.dumps(result, separators=(",", ":")))  # as the tool sends it (ASCII-escaped)


def _fit(result: dict[str, Any]) -> dict[str, Any]:
    """Shorten headlines, then drop the oldest, until the result is at most RESULT_BYTES."""
    limit = HEADLINE_CHARS
    while _size(result) > RESULT_BYTES and limit > 40:
        limit -= 20
        for h in result["headlines"]:
            if len(h["headline"]) > limit:
                h["headline"] = h["headline"][: limit - 3].rstrip() + "..."
    while _size(result) > RESULT_BYTES and result["headlines"]:
        result["headlines"].pop()
    return result
