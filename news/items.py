"""One news item as every provider hands it over, before and after it is scored."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.instruments import Symbol


@dataclass(frozen=True)
class NewsItem:
    provider: str                   # how it reached us: alpaca, rss:<host>, newsapi, news.csv
    provider_id: str                # the provider's id for it (its URL where it has none)
    symbols: tuple[Symbol, ...]
    published_at: datetime          # timezone-aware
    headline: str
    summary: str = ""
    url: str | None = None
    source: str = ""                # the publisher (Reuters, Benzinga, the exchange ...)

    def __post_init__(self) -> None:
        if self.published_at.tzinfo is None:
            raise ValueError(f"news item {self.provider_id!r}: published_at must carry a timezone")


@dataclass(frozen=True)
class ScoredItem:
    item: NewsItem
    sentiment: float
    tags: tuple[str, ...] = field(default_factory=tuple)
