"""The news store (``news_items``), scoped to one agent id like every trading table."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from news.items import ScoredItem
from store.db import Database


@dataclass(frozen=True)
class StoredNews:
    news_id: int
    provider: str
    symbols: tuple[str, ...]
    published_at: datetime
    source: str
    headline: str
    url: str | None
    sentiment: float
    tags: tuple[str, ...]


# One statement per item: a row with the same provider id or the same URL gets the new symbols
# added; otherwise the item is inserted. ON CONFLICT DO NOTHING covers a race with another writer.
_UPSERT = """
WITH kept AS (
    UPDATE news_items
       SET symbols = ARRAY(SELECT DISTINCT s FROM unnest(news_items.symbols || $3::text[]) AS s ORDER BY s)
     WHERE agent_id = $1 AND ((provider = $2 AND provider_id = $4) OR (url IS NOT NULL AND url = $10))
 RETURNING news_id
)
INSERT INTO news_items (agent_id, provider, symbols, provider_id, published_at, fetched_at, source, headline, summary,
                        url, sentiment, catalyst_tags)
SELECT $1, $2, $3::text[], $4, $5, $6, $7, $8, $9, $10, $11, $12::text[]
 WHERE NOT EXISTS (SELECT 1 FROM kept)
ON CONFLICT DO NOTHING
RETURNING news_id
"""


class NewsStore:
    def __init__(self, db: Database, agent_id: str) -> None:
        self.db = db
        self.agent_id = agent_id

    async def add(self, items: Sequence[ScoredItem], fetched_at: datetime) -> int:
        """Keep ``items`` (deduplicated by provider id and by URL); returns how many were new."""
        if not items:
            return 0
        added = 0
        async with self.db.transaction() as conn:
            for scored in items:
                item = scored.item
                new_id = await conn.fetchval(
                    _UPSERT, self.agent_id, item.provider, sorted({str(s) for s in item.symbols}), item.provider_id,
                    item.published_at, fetched_at, item.source, item.headline, item.summary, item.url,
                    scored.sentiment, list(scored.tags),
                )
                added += new_id is not None
        return added

    async def recent(self, symbol: str, since: datetime, until: datetime, limit: int = 50) -> list[StoredNews]:
        """Items about ``symbol`` published in (since, until], newest first: never one after ``until``."""
        rows = await self.db.fetch(
            """SELECT news_id, provider, symbols, published_at, source, headline, url, sentiment, catalyst_tags
                 FROM news_items
                WHERE agent_id = $1 AND symbols @> ARRAY[$2]::text[] AND published_at > $3 AND published_at <= $4
                ORDER BY published_at DESC, news_id DESC
                LIMIT $5""",
            self.agent_id, symbol, since, until, limit,
        )
        return [StoredNews(r["news_id"], r["provider"], tuple(r["symbols"]), r["published_at"], r["source"],
                           r["headline"], r["url"], float(r["sentiment"]), tuple(r["catalyst_tags"])) for r in rows]

    async def count(self) -> int:
        return int(await self.db.fetchval("SELECT count(*) FROM news_items WHERE agent_id = $1", self.agent_id))
