"""News providers behind one protocol: Alpaca news, RSS/Atom feeds, NewsAPI.

A provider answers "the items about these symbols published between start and end" and raises
``NewsProviderError`` (one line, no secrets) when it cannot. Calls are blocking HTTP with a
timeout on every request; the news service runs them in worker threads, all at once, and one
provider's failure never fails the others (``news/service.py``).
"""
from __future__ import annotations

import calendar as _calendar
import hashlib
import html
import re
import threading
import time as _time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol, Sequence
from urllib.parse import urlsplit

import requests

from brokers.http import TimeoutSession
from core.instruments import Market, Symbol, SymbolError, parse_symbol
from news.items import NewsItem
from news.matching import core_name, symbols_mentioned

# At most this many items are asked of a provider per call (a tool result shows 8).
FETCH_LIMIT = 50
_TAGS = re.compile(r"<[^>]+>")


class NewsProviderError(Exception):
    """A provider could not answer; the message says what happened (never a key)."""


class NewsProvider(Protocol):
    name: str

    def fetch(self, symbols: Sequence[Symbol], names: Mapping[Symbol, tuple[str, ...]], start: datetime,
              end: datetime) -> list[NewsItem]:
        """Items about ``symbols`` published in [start, end]; blocking, bounded by the timeout."""


def describe_failure(exc: BaseException, timeout_seconds: float) -> str:
    """One line a trader can read: what went wrong with the request (no URL query, no key)."""
    if isinstance(exc, NewsProviderError):
        return str(exc)
    if isinstance(exc, (requests.Timeout, TimeoutError)):
        return f"no answer within {timeout_seconds:g} s"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if status == 429:
        return "rate limited (HTTP 429)"
    if status:
        return f"HTTP {status}"
    return type(exc).__name__


def _plain(text: str | None) -> str:
    return re.sub(r"\s+", " ", html.unescape(_TAGS.sub(" ", text or ""))).strip()


def _host(url: str) -> str:
    return urlsplit(url).hostname or url


# --- Alpaca -----------------------------------------------------------------------------------------
class AlpacaNews:
    """Alpaca's news API through alpaca-py's ``NewsClient`` (the same keys as trading); US symbols."""

    name = "alpaca"

    def __init__(self, api_key: str, secret_key: str, data_url: str | None, timeout_seconds: float) -> None:
        from alpaca.data.historical.news import NewsClient

        self._client = NewsClient(api_key, secret_key, url_override=data_url)
        self._client._session = TimeoutSession(timeout_seconds)
        self._client._retry = 0     # a 429 fails this call at once; the next call asks again

    def fetch(self, symbols, names, start, end):
        from alpaca.common.exceptions import APIError
        from alpaca.data.requests import NewsRequest

        wanted = [s for s in symbols if s.market is Market.US]
        if not wanted:
            return []
        request = NewsRequest(symbols=",".join(s.code for s in wanted), start=start, end=end, limit=FETCH_LIMIT,
                              sort="desc")
        try:
            news_set = self._client.get_news(request)
        except APIError as exc:
            raise NewsProviderError(describe_failure(exc, self._client._session.timeout_seconds)) from None
        items = []
        for article in news_set.data.get("news", []):
            tagged = []
            for code in article.symbols:
                try:
                    symbol = parse_symbol(code, Market.US)
                except SymbolError:
                    continue
                if symbol.market is Market.US:
                    tagged.append(symbol)
            items.append(NewsItem(
                provider=self.name, provider_id=str(article.id), symbols=tuple(tagged) or tuple(wanted),
                published_at=article.created_at.astimezone(timezone.utc), headline=_plain(article.headline),
                summary=_plain(article.summary), url=article.url or None, source=article.source or "alpaca",
            ))
        return items


# --- RSS / Atom -------------------------------------------------------------------------------------
@dataclass
class _Download:
    entries: list[Any]
    title: str
    at: float


class RssNews:
    """One RSS or Atom feed (``feedparser``), its entries matched to symbols by code and name.

    The feed is downloaded at most once per ``max_age_seconds`` (of the monotonic clock: the
    feed's freshness is a property of the wire, not of the trading clock) for all symbols.
    """

    def __init__(self, url: str, timeout_seconds: float, max_age_seconds: float) -> None:
        self.url = url
        self.name = f"rss:{_host(url)}"
        self._timeout = timeout_seconds
        self._max_age = max_age_seconds
        self._session = requests.Session()
        self._last: _Download | None = None
        self._lock = threading.Lock()

    def _download(self) -> _Download:
        import feedparser

        with self._lock:
            if self._last is not None and _time.monotonic() - self._last.at < self._max_age:
                return self._last
            response = self._session.get(self.url, timeout=self._timeout,
                                         headers={"Accept": "application/rss+xml, application/atom+xml, */*"})
            if response.status_code != 200:
                raise NewsProviderError(describe_failure(requests.HTTPError(response=response), self._timeout))
            parsed = feedparser.parse(response.content)
            if parsed.bozo and not parsed.entries:
                raise NewsProviderError("not an RSS or Atom feed")
            self._last = _Download(list(parsed.entries), _plain(parsed.feed.get("title")) or _host(self.url),
                                   _time.monotonic())
            return self._last

    def fetch(self, symbols, names, start, end):
        feed = self._download()
        items = []
        for entry in feed.entries:
            stamp = entry.get("published_parsed") or entry.get("updated_parsed")
            if stamp is None:
                continue  # an undated item cannot be placed before or after the clock
            published = datetime.fromtimestamp(_calendar.timegm(stamp), timezone.utc)
            if not start <= published <= end:
                continue
            headline = _plain(entry.get("title"))
            summary = _plain(entry.get("summary"))
            matched = symbols_mentioned(f"{headline}\n{summary}", list(symbols), dict(names))
            if not headline or not matched:
                continue
            link = entry.get("link") or None
            ident = entry.get("id") or link or hashlib.sha256(f"{headline}|{published.isoformat()}".encode()).hexdigest()
            items.append(NewsItem(provider=self.name, provider_id=str(ident), symbols=matched, published_at=published,
                                  headline=headline, summary=summary, url=link, source=feed.title))
        return items


# --- NewsAPI ----------------------------------------------------------------------------------------
NEWSAPI_URL = "https://newsapi.org"


class NewsApiNews:
    """NewsAPI's ``/v2/everything``, searched by company name and code (needs NEWSAPI_KEY)."""

    name = "newsapi"

    def __init__(self, api_key: str, base_url: str | None, timeout_seconds: float) -> None:
        self._key = api_key
        self._url = (base_url or NEWSAPI_URL).rstrip("/") + "/v2/everything"
        self._timeout = timeout_seconds
        self._session = requests.Session()

    @staticmethod
    def query(symbol: Symbol, names: Sequence[str]) -> str:
        terms = dict.fromkeys([*(core_name(n) for n in names if len(core_name(n)) >= 3),
                               f"{int(symbol.code):04d}.HK" if symbol.market is Market.HK else symbol.code])
        return " OR ".join(f'"{t}"' for t in terms)

    def fetch(self, symbols, names, start, end):
        items = []
        for symbol in symbols:
            response = self._session.get(self._url, timeout=self._timeout, headers={"X-Api-Key": self._key}, params={
                "q": self.query(symbol, names.get(symbol, ())), "from": start.astimezone(timezone.utc).isoformat(),
                "to": end.astimezone(timezone.utc).isoformat(), "sortBy": "publishedAt", "pageSize": FETCH_LIMIT,
                "language": "en",
            })
            body = _json_or_empty(response)
            if response.status_code != 200 or body.get("status") != "ok":
                why = describe_failure(requests.HTTPError(response=response), self._timeout)
                code = body.get("code")
                raise NewsProviderError(f"{why}{f' ({code})' if code else ''}")
            for article in body.get("articles") or []:
                url = article.get("url") or None
                headline = _plain(article.get("title"))
                try:
                    published = datetime.fromisoformat(str(article.get("publishedAt")).replace("Z", "+00:00"))
                except ValueError:
                    continue
                if not headline or published.tzinfo is None:
                    continue
                items.append(NewsItem(
                    provider=self.name, provider_id=url or hashlib.sha256(headline.encode()).hexdigest(),
                    symbols=(symbol,), published_at=published.astimezone(timezone.utc), headline=headline,
                    summary=_plain(article.get("description")), url=url,
                    source=_plain((article.get("source") or {}).get("name")) or "newsapi",
                ))
        return items


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
