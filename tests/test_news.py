"""get_news: providers (real alpaca-py against the fake Alpaca, RSS/Atom and NewsAPI served on
127.0.0.1), the news store on a real PostgreSQL, sentiment and catalysts, and time honesty."""
from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from core.clock import SimClock
from config.settings import CONFIG_DIR, NewsSettings
from core.instruments import parse_symbol
from news.items import NewsItem
from news.providers import AlpacaNews, NewsApiNews, RssNews
from news.sentiment import NewsContextError, SentimentScorer, load_lexicon, parse_lexicon
from news.service import RESULT_BYTES, NewsService, digest
from store.db import Database
from store.news import NewsStore, StoredNews
from tests.fakes.fake_news import FakeNews, FeedEntry

T0 = datetime(2026, 3, 10, 14, 30, tzinfo=timezone.utc)   # the simulated "now" of these tests
AAPL, MSFT, BABA, TENCENT = (parse_symbol(s) for s in ("AAPL", "MSFT", "9988", "700"))
SCORER = SentimentScorer(load_lexicon(CONFIG_DIR / "news_context.yaml"))


@pytest.fixture
def news_server():
    server = FakeNews().start()
    yield server
    server.stop()


def service(db: Database, providers=(), *, at: datetime = T0, agent: str = "news-test", names=None, sources=(),
            **settings) -> NewsService:
    return NewsService(NewsStore(db, agent), SCORER, NewsSettings(**settings), SimClock(at), list(providers),
                       names=names, sources=list(sources))


def headlines(result: dict) -> list[str]:
    return [h["headline"] for h in result["headlines"]]


# --- sentiment and catalysts ----------------------------------------------------------------------
@pytest.mark.parametrize("headline, sign, tag", [
    ("Alibaba issues profit warning as cloud sales slow", -1, "profit_warning"),
    ("Alibaba wins HK$2bn government cloud contract", 1, "contract_win"),
    ("Tencent announces HK$10bn share buyback", 1, "buyback"),
    ("Apple beats Wall Street estimates and raises guidance", 1, "earnings_beat"),
    ("Developer launches rights issue to repay debt", -1, "rights_issue"),
    ("Trading halt pending an announcement on a major transaction", -1, "trading_halt"),
    ("Lender raises funds through a top-up placing at a 9% discount", -1, "share_placing"),
])
def test_hand_made_headlines_score_by_their_catalyst(headline, sign, tag):
    scored = SCORER.score(headline)
    assert scored.sentiment * sign > 0.3, scored
    assert tag in scored.tags
    assert -1 <= scored.sentiment <= 1


def test_a_negated_warning_is_not_negative_and_plain_text_has_no_tag():
    assert SCORER.score("No profit warning expected this year, says CFO").sentiment > 0
    plain = SCORER.score("Shares trade sideways ahead of the weekend")
    assert plain.tags == () and abs(plain.sentiment) < 0.3


def test_a_broken_lexicon_is_refused_with_its_key():
    with pytest.raises(NewsContextError, match=r"catalysts.bad.phrases: not a regular expression"):
        parse_lexicon({"catalysts": {"bad": {"valence": 2, "phrases": ["(unclosed"]}}})
    with pytest.raises(NewsContextError, match=r"catalysts.big.valence = 9"):
        parse_lexicon({"catalysts": {"big": {"valence": 9, "phrases": ["x"]}}})
    with pytest.raises(NewsContextError, match="unknown key"):
        parse_lexicon({"sectors": {}})


def test_the_tool_result_stays_small_with_eight_long_headlines():
    rows = [StoredNews(i, "rss:x", ("HK.09988",), T0 - timedelta(minutes=7 * i), "A very long publisher name indeed",
                       ("Alibaba wins a very large contract and raises its guidance and buys back shares " * 3)[:200],
                       None, 0.9, ("contract_win", "guidance_raised", "buyback")) for i in range(20)]
    result = digest(BABA, 24, T0, rows, NewsSettings(), SCORER.positive_tags)
    assert len(json.dumps(result, separators=(",", ":"))) <= RESULT_BYTES
    assert 1 <= len(result["headlines"]) <= 8
    assert result["count"] == 1, "the same headline twice is shown once"


# --- Alpaca news through the real SDK ----------------------------------------------------------------
def _alpaca(fake) -> AlpacaNews:
    return AlpacaNews(fake.api_key, fake.secret_key, fake.base_url, timeout_seconds=5)


async def test_alpaca_news_through_the_real_sdk(trading_db, alpaca_fake):
    alpaca_fake.add_news("Apple beats estimates, raises guidance", ["AAPL"], T0 - timedelta(hours=2),
                         summary="Record services revenue.", source="benzinga")
    alpaca_fake.add_news("Apple and Microsoft shares drift", ["AAPL", "MSFT"], T0 - timedelta(hours=5))
    alpaca_fake.add_news("Microsoft wins defence cloud contract", ["MSFT"], T0 - timedelta(hours=1))
    alpaca_fake.add_news("Apple story from the future", ["AAPL"], T0 + timedelta(minutes=5))

    news = service(trading_db, [_alpaca(alpaca_fake)])
    result = await news.headlines(AAPL, 24)

    assert headlines(result) == ["Apple beats estimates, raises guidance", "Apple and Microsoft shares drift"]
    first = result["headlines"][0]
    assert first["source"] == "benzinga" and first["age"] == "2h00m" and first["sentiment"] > 0.3
    assert {"earnings_beat", "guidance_raised"} <= set(first["tags"])
    assert result["has_catalyst"] is True and "failed" not in result
    [request] = [r for r in alpaca_fake.requests if r.path == "/v1beta1/news"]
    assert request.query["symbols"] == "AAPL"
    # The article about two symbols is kept once and found for the other symbol too.
    assert "Apple and Microsoft shares drift" in headlines(await news.headlines(MSFT, 24, refresh=False))


async def test_an_alpaca_rate_limit_names_the_provider_while_a_feed_answers(trading_db, alpaca_fake, news_server):
    alpaca_fake.add_news("Apple wins a supply contract", ["AAPL"], T0 - timedelta(hours=1))
    alpaca_fake.inject_error("GET", "/v1beta1/news", 429, "rate limit exceeded")
    feed = news_server.add_feed("wire", [FeedEntry("AAPL: Apple unveils a share buyback", T0 - timedelta(hours=3),
                                                   link="https://news.invalid/wire/1")])
    news = service(trading_db, [_alpaca(alpaca_fake), RssNews(feed, 5, 0)])

    result = await news.headlines(AAPL, 24)

    assert headlines(result) == ["AAPL: Apple unveils a share buyback"]
    assert result["failed"] == [{"provider": "alpaca", "error": "rate limited (HTTP 429)"}]
    # The next call asks Alpaca again (no refresh was recorded for the failure) and gets its item.
    again = await news.headlines(AAPL, 24)
    assert headlines(again) == ["Apple wins a supply contract", "AAPL: Apple unveils a share buyback"]
    assert "failed" not in again


# --- RSS / Atom ------------------------------------------------------------------------------------
async def test_an_rss_feed_is_matched_by_code_and_by_company_name(trading_db, news_server):
    entries = [
        FeedEntry("Alibaba Group (09988) wins cloud contract", T0 - timedelta(hours=1), link="https://n.invalid/1"),
        FeedEntry("Alibaba shares rally on buyback plan", T0 - timedelta(hours=2), link="https://n.invalid/2"),
        FeedEntry("Tencent (0700) reports results", T0 - timedelta(hours=3), link="https://n.invalid/3"),
        FeedEntry("Retailer cuts 9988 jobs", T0 - timedelta(hours=4), link="https://n.invalid/4"),
        FeedEntry("Market wrap: Hang Seng ends flat", T0 - timedelta(hours=5),
                  summary="Among movers, 9988.HK gained.", link="https://n.invalid/5"),
    ]
    url = news_server.add_feed("hkex", entries, title="Exchange wire")

    async def broker_names(symbol):  # what the broker's static info calls it
        return {"HK.09988": ("Alibaba Group Holding Ltd -SW",), "HK.00700": ("Tencent Holdings Ltd",)}[str(symbol)]

    news = service(trading_db, [RssNews(url, 5, 600)], names=broker_names)
    baba = await news.headlines(BABA, 24)
    assert headlines(baba) == ["Alibaba Group (09988) wins cloud contract", "Alibaba shares rally on buyback plan",
                               "Market wrap: Hang Seng ends flat"]
    assert baba["headlines"][0]["source"] == "Exchange wire"
    assert headlines(await news.headlines(TENCENT, 24)) == ["Tencent (0700) reports results"]
    assert news_server.count("/feeds/hkex.xml") == 1, "one download serves every symbol within max_age"


async def test_an_atom_feed_and_a_profile_alias(trading_db, news_server):
    url = news_server.add_feed("atom", [FeedEntry("Taobao owner wins HK$1bn order", T0 - timedelta(minutes=30),
                                                   guid="urn:x:1")], atom=True)
    news = service(trading_db, [RssNews(url, 5, 0)], aliases={"9988": ("Taobao owner",)})
    result = await news.headlines(BABA, 24)
    assert headlines(result) == ["Taobao owner wins HK$1bn order"]
    assert result["headlines"][0]["age"] == "30m" and "contract_win" in result["headlines"][0]["tags"]


# --- NewsAPI ----------------------------------------------------------------------------------------
async def test_newsapi_against_a_local_fake(trading_db, news_server):
    news_server.add_article("Apple faces EU probe over App Store", T0 - timedelta(hours=2), source="Reuters")
    news_server.add_article("Banana prices climb", T0 - timedelta(hours=1))
    news_server.add_article("Apple old news", T0 - timedelta(hours=30))

    async def names(symbol):
        return ("Apple Inc. Common Stock",)

    news = service(trading_db, [NewsApiNews(news_server.newsapi_key, news_server.base_url, 5)], names=names)
    result = await news.headlines(AAPL, 24)

    assert headlines(result) == ["Apple faces EU probe over App Store"]
    assert result["headlines"][0]["source"] == "Reuters" and result["headlines"][0]["sentiment"] < 0
    [(_, query)] = [r for r in news_server.requests if r[0] == "/v2/everything"]
    assert query["q"] == '"Apple" OR "AAPL"'


async def test_a_wrong_newsapi_key_is_named_without_the_key(trading_db, news_server):
    news = service(trading_db, [NewsApiNews("wrong-key-123456", news_server.base_url, 5)])
    result = await news.headlines(AAPL, 24)
    assert result["failed"] == [{"provider": "newsapi", "error": "HTTP 401 (apiKeyInvalid)"}]
    assert result["headlines"] == [] and "wrong-key" not in json.dumps(result)


# --- one provider hangs, another answers ----------------------------------------------------------
async def test_a_provider_that_times_out_does_not_fail_the_tool(trading_db, news_server):
    news_server.add_article("Apple (AAPL) wins a large government contract", T0 - timedelta(hours=1))
    slow = news_server.add_feed("slow", [FeedEntry("AAPL never arrives", T0 - timedelta(hours=1))])
    news_server.hang("/feeds/slow.xml")
    news = service(trading_db, [RssNews(slow, 0.5, 0), NewsApiNews(news_server.newsapi_key, news_server.base_url, 5)],
                   timeout_seconds=0.5)

    result = await news.headlines(AAPL, 24)

    assert headlines(result) == ["Apple (AAPL) wins a large government contract"]
    assert result["failed"] == [{"provider": "rss:127.0.0.1", "error": "no answer within 0.5 s"}]
    assert result["has_catalyst"] is True


# --- the store ---------------------------------------------------------------------------------------
def _item(provider: str, pid: str, symbol, minutes_ago: float, headline: str, url: str | None = None) -> NewsItem:
    return NewsItem(provider, pid, (symbol,), T0 - timedelta(minutes=minutes_ago), headline, url=url, source="wire")


async def test_items_are_kept_once_by_provider_id_and_by_url(trading_db):
    news = service(trading_db, sources=["news.csv"])
    assert await news.keep([_item("alpaca", "1", AAPL, 10, "Apple wins contract", "https://n.invalid/a")]) == 1
    assert await news.keep([_item("alpaca", "1", AAPL, 10, "Apple wins contract", "https://n.invalid/a")]) == 0
    # The same article (same URL) through another provider, about a second symbol too.
    assert await news.keep([_item("newsapi", "https://n.invalid/a", MSFT, 10, "Apple wins contract",
                                  "https://n.invalid/a")]) == 0
    assert await news.keep([_item("rss:x", "guid-2", AAPL, 5, "Apple other story", None)]) == 1
    assert await news.keep([_item("rss:x", "guid-2", AAPL, 5, "Apple other story", None)]) == 0
    assert await news.store.count() == 2
    rows = await trading_db.fetch("SELECT provider, symbols FROM news_items WHERE provider_id = '1'")
    assert [(r["provider"], sorted(r["symbols"])) for r in rows] == [("alpaca", ["US.AAPL", "US.MSFT"])]
    assert headlines(await news.headlines(MSFT, 24)) == ["Apple wins contract"]


async def test_news_is_scoped_to_the_agent(trading_db):
    replay = service(trading_db, agent="intl_claude-replay-x", sources=["news.csv"])
    live = service(trading_db, agent="intl_claude", sources=["news.csv"])
    await replay.keep([_item("news.csv", "h1", BABA, 10, "Alibaba wins contract")])
    assert headlines(await replay.headlines(BABA, 24)) == ["Alibaba wins contract"]
    assert (await live.headlines(BABA, 24))["headlines"] == []


async def test_without_any_source_the_answer_says_so(trading_db):
    result = await service(trading_db).headlines(BABA, 24)
    assert result["headlines"] == [] and result["has_catalyst"] is False
    assert "no news source is configured" in result["note"]


@hyp_settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offsets=st.lists(st.integers(min_value=-100 * 60, max_value=100 * 60), min_size=0, max_size=12),
       now_shift=st.integers(min_value=-48 * 60, max_value=48 * 60), hours=st.integers(min_value=1, max_value=72))
def test_nothing_published_after_the_simulated_time_is_ever_returned(database_url, offsets, now_shift, hours):
    """Items published anywhere around T0; asked at any time t: only items published in
    (t - hours, t], newest first, never one after t."""
    now = T0 + timedelta(minutes=now_shift)

    async def scenario():
        db = await Database(database_url, "trading").connect()
        try:
            await db.migrate("trading")
            agent = f"prop-{now_shift}-{hours}-{len(offsets)}-{abs(hash(tuple(offsets)))}"
            await db.execute("DELETE FROM news_items WHERE agent_id = $1", agent)
            news = service(db, at=now, agent=agent, sources=["news.csv"])
            await news.keep([NewsItem("news.csv", f"n{i}", (BABA,), T0 + timedelta(minutes=m), f"headline {i}")
                             for i, m in enumerate(offsets)])
            return await news.headlines(BABA, hours)
        finally:
            await db.close()

    result = asyncio.run(scenario())
    published = [T0 + timedelta(minutes=m) for m in offsets]
    expected = [p for p in published if now - timedelta(hours=hours) < p <= now]
    assert result["count"] == len(expected)
    shown = sorted(expected, reverse=True)[:8]
    ages = [h["age"] for h in result["headlines"]]
    assert len(ages) == len(shown)
    for age, p in zip(ages, shown):
        assert not age.startswith("-")
        h, _, m = age.rstrip("m").partition("h") if "h" in age else ("0", "", age.rstrip("m"))
        assert int(h) * 60 + int(m) == int((now - p).total_seconds() // 60)


# --- the profile chooses the providers ---------------------------------------------------------------
def test_the_profile_chooses_providers_and_each_is_used_only_where_it_can_work(news_server):
    from config.settings import Secrets, load_profile, profile_path
    from news.build import build_providers

    feeds = f'["{news_server.feed_url("a")}", "{news_server.feed_url("b")}"]'
    us = load_profile(profile_path("us"), {"CATALYST__NEWS__RSS_FEEDS": feeds})
    hk = load_profile(profile_path("hk"), {"CATALYST__NEWS__PROVIDERS": '["alpaca", "newsapi"]'})
    keyed = Secrets(alpaca_api_key="k", alpaca_secret_key="s", newsapi_key="n")
    assert [p.name for p in build_providers(us, keyed)] == ["alpaca", "rss:127.0.0.1", "rss:127.0.0.1", "newsapi"]
    assert [p.name for p in build_providers(us, Secrets())] == ["rss:127.0.0.1", "rss:127.0.0.1"]
    assert [p.name for p in build_providers(hk, keyed)] == ["newsapi"], "Alpaca news has no HK symbols"


def test_a_broken_catalyst_lexicon_stops_the_agent_at_start_with_exit_2(tmp_path, capsys):
    import agent

    bad = tmp_path / "context.yaml"
    bad.write_text("catalysts:\n  oops:\n    valence: 2\n    phrases: ['(']\n")
    code = agent.main(["--mode", "status"], env={"CATALYST__NEWS__CONTEXT_FILE": str(bad),
                                                 "CATALYST_LOG_DIR": str(tmp_path / "logs")})
    assert code == 2
    assert f"{bad}: catalysts.oops.phrases: not a regular expression" in capsys.readouterr().err
