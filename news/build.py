"""The news service of a run, from the profile and the secrets."""
from __future__ import annotations

import logging
from typing import Any

from core.clock import Clock
from config.settings import Profile
from core.instruments import Symbol
from news.providers import AlpacaNews, NewsApiNews, NewsProvider, RssNews
from news.sentiment import SentimentScorer, load_lexicon
from news.service import NewsService
from store.db import Database
from store.news import NewsStore

log = logging.getLogger(__name__)


def build_providers(profile: Profile, secrets: Any) -> list[NewsProvider]:
    """The profile's providers that can work with the given secrets (the others are skipped quietly:
    e.g. ``alpaca`` without Alpaca keys, ``newsapi`` without NEWSAPI_KEY, ``rss`` without feeds)."""
    news = profile.news
    out: list[NewsProvider] = []
    for name in dict.fromkeys(news.providers):
        if name == "alpaca" and secrets.alpaca_api_key and secrets.alpaca_secret_key and profile.market.value == "US":
            out.append(AlpacaNews(secrets.alpaca_api_key.get_secret_value(), secrets.alpaca_secret_key.get_secret_value(),
                                  secrets.alpaca_data_url, news.timeout_seconds))
        elif name == "rss":
            out.extend(RssNews(url, news.timeout_seconds, news.refresh_minutes * 60) for url in news.rss_feeds)
        elif name == "newsapi" and secrets.newsapi_key:
            out.append(NewsApiNews(secrets.newsapi_key.get_secret_value(), secrets.newsapi_url, news.timeout_seconds))
    return out


def build_news(profile: Profile, secrets: Any, clock: Clock, db: Database, broker: Any = None,
               with_providers: bool = True) -> NewsService:
    """The run's news service. ``with_providers`` False (replays, the sample session): the store
    only, filled by whoever has the news (a replay's news.csv)."""
    providers = build_providers(profile, secrets) if with_providers else []
    if providers:
        log.info("news providers: %s", ", ".join(p.name for p in providers))
    return NewsService(NewsStore(db, profile.agent_id), SentimentScorer(load_lexicon(profile.news.context_file)),
                       profile.news, clock, providers, names=_broker_names(broker) if broker is not None else None)


def _broker_names(broker: Any):
    """The broker's name for a symbol (its static info), asked once per symbol."""
    cache: dict[Symbol, tuple[str, ...]] = {}

    async def names(symbol: Symbol) -> tuple[str, ...]:
        if symbol not in cache:
            snaps = await broker.snapshots([symbol])
            cache[symbol] = (snaps[symbol].name,) if symbol in snaps and snaps[symbol].name else ()
        return cache[symbol]
    return names
