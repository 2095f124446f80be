"""Fake news sources on 127.0.0.1: RSS/Atom feeds and the NewsAPI ``/v2/everything`` endpoint.

    server = FakeNews(newsapi_key="k").start()
    server.add_feed("hkex", [FeedEntry("Alibaba (09988) wins contract", published)], atom=False)
    server.feed_url("hkex")             # http://127.0.0.1:<port>/feeds/hkex.xml
    server.add_article("Apple beats estimates", published, source="Reuters")
    server.base_url                     # NEWSAPI_URL for the real provider

Behaviour, chosen per test:
* ``hang(path_prefix)``: requests to that path get no answer until the server stops (a provider
  that times out); nothing sleeps for a fixed time.
* ``fail(path_prefix, status, body)``: requests to that path are answered with that status.
* NewsAPI checks the ``X-Api-Key`` header (401 ``apiKeyInvalid`` otherwise), matches each quoted
  term of ``q`` (joined by OR) case-insensitively in the title and description, honours
  ``from``/``to`` (inclusive) and ``pageSize``, newest first.
Every request is recorded in ``requests`` (path, query).
"""
from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class FeedEntry:
    title: str
    published: datetime
    summary: str = ""
    link: str | None = None
    guid: str | None = None


def _rss(title: str, entries: list[FeedEntry]) -> str:
    items = "".join(
        f"<item><title>{escape(e.title)}</title><link>{escape(e.link or '')}</link>"
        f"<guid>{escape(e.guid or e.link or e.title)}</guid><pubDate>{format_datetime(e.published.astimezone(timezone.utc), usegmt=True)}</pubDate>"
        f"<description>{escape(e.summary)}</description></item>" for e in entries)
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{escape(title)}</title>'
            f"<link>http://127.0.0.1/</link><description>fake</description>{items}</channel></rss>")


def _atom(title: str, entries: list[FeedEntry]) -> str:
    items = "".join(
        f"<entry><title>{escape(e.title)}</title><link href=\"{escape(e.link or '')}\"/>"
        f"<id>{escape(e.guid or e.link or e.title)}</id><updated>{e.published.astimezone(timezone.utc).isoformat()}</updated>"
        f"<summary>{escape(e.summary)}</summary></entry>" for e in entries)
    return (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>{escape(title)}</title>'
            f"<id>urn:fake</id><updated>2022-01-01T00:00:00Z</updated>{items}</feed>")


class FakeNews:
    def __init__(self, newsapi_key: str = "fake-newsapi-key-0001") -> None:
        self.newsapi_key = newsapi_key
        self.feeds: dict[str, str] = {}
        self.articles: list[dict] = []
        self.requests: list[tuple[str, dict]] = []
        self._hangs: list[str] = []
        self._fails: dict[str, tuple[int, dict]] = {}
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.http: ThreadingHTTPServer | None = None

    # --- content ------------------------------------------------------------------------------
    def add_feed(self, name: str, entries: list[FeedEntry], title: str | None = None, atom: bool = False) -> str:
        self.feeds[name] = (_atom if atom else _rss)(title or f"{name} feed", entries)
        return self.feed_url(name)

    def add_article(self, title: str, published: datetime, description: str = "", url: str | None = None,
                    source: str = "Fake Wire") -> dict:
        article = {"source": {"id": None, "name": source}, "author": None, "title": title, "description": description,
                   "url": url or f"https://news.invalid/newsapi/{len(self.articles)}", "urlToImage": None,
                   "publishedAt": published.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "content": None}
        self.articles.append(article)
        return article

    def hang(self, path_prefix: str) -> None:
        self._hangs.append(path_prefix)

    def fail(self, path_prefix: str, status: int, body: dict | None = None) -> None:
        self._fails[path_prefix] = (status, body or {"status": "error", "code": "unexpectedError", "message": "fake"})

    # --- addresses ----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        assert self.http is not None
        return f"http://127.0.0.1:{self.http.server_address[1]}"

    def feed_url(self, name: str) -> str:
        return f"{self.base_url}/feeds/{name}.xml"

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.requests if p == path)

    # --- serving ------------------------------------------------------------------------------
    def handle(self, path: str, query: dict[str, str], headers) -> tuple[int, str, str]:
        with self._lock:
            self.requests.append((path, query))
        if any(path.startswith(p) for p in self._hangs):
            self._released.wait(60)
            return 503, "text/plain", "released"
        for prefix, (status, body) in self._fails.items():
            if path.startswith(prefix):
                return status, "application/json", json.dumps(body)
        if path.startswith("/feeds/") and path.endswith(".xml"):
            feed = self.feeds.get(path[len("/feeds/"):-len(".xml")])
            if feed is None:
                return 404, "text/plain", "no such feed"
            return 200, "application/rss+xml; charset=utf-8", feed
        if path == "/v2/everything":
            return self._everything(query, headers)
        return 404, "text/plain", "no route"

    def _everything(self, q: dict[str, str], headers) -> tuple[int, str, str]:
        if headers.get("X-Api-Key") != self.newsapi_key:
            return 401, "application/json", json.dumps({"status": "error", "code": "apiKeyInvalid",
                                                        "message": "Your API key is invalid or incorrect."})
        terms = [t.lower() for t in re.findall(r'"([^"]+)"', q.get("q", ""))]
        start = datetime.fromisoformat(q["from"]) if q.get("from") else None
        end = datetime.fromisoformat(q["to"]) if q.get("to") else None
        hits = []
        for a in self.articles:
            at = datetime.fromisoformat(a["publishedAt"].replace("Z", "+00:00"))
            text = f"{a['title']} {a['description']}".lower()
            if terms and not any(t in text for t in terms):
                continue
            if (start and at < start) or (end and at > end):
                continue
            hits.append(a)
        hits.sort(key=lambda a: a["publishedAt"], reverse=True)
        hits = hits[: int(q.get("pageSize") or 100)]
        return 200, "application/json", json.dumps({"status": "ok", "totalResults": len(hits), "articles": hits})

    def start(self) -> "FakeNews":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait
            def do_GET(self):  # noqa: N802 - the http.server name
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                status, kind, body = fake.handle(url.path, query, self.headers)
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, name="fake-news", daemon=True).start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
            self.http = None
