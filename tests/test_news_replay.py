"""News in replays and in the get_news tool: a news.csv beside the bars feeds the store, the tool
sees only what was published by the simulated time, and the rules brain's tier 1 fires on it."""
from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import agent
from config.settings import CONFIG_DIR
from data.bars import SAMPLES_DIR
from core.instruments import parse_symbol
from news.items import NewsItem
from news.sentiment import SentimentScorer, load_lexicon
from news.service import NewsService
from store.news import NewsStore
from tests.tool_harness import Tools, run_tools

# One cycle at 15:00 HKT: on 2022-06-07 09988 then trades at 3.35x its usual volume, RSI 52.5, just
# under a breakout: a tier-2 entry (a pattern, no news) unless a positive catalyst makes it tier 1.
BABA = parse_symbol("9988")
ONE_CYCLE = {"CATALYST__SCHEDULE__CYCLE_TIMES": '["15:00"]'}
NEWS_CSV = """published_at,symbol,headline,source,url
2022-06-07 14:20,9988,Alibaba wins HK$2bn government cloud contract,Test Wire,https://news.invalid/baba-contract
2022-06-07 16:30,9988,Alibaba shares close higher after contract news,Test Wire,https://news.invalid/baba-close
2022-06-02T01:00:00Z,HK.09988,Alibaba issues profit warning,Test Wire,https://news.invalid/baba-old
"""


def _replay_folder(tmp_path: Path, news_csv: str | None) -> Path:
    folder = tmp_path / "data"
    folder.mkdir(parents=True)
    for f in (SAMPLES_DIR / "hk").glob("*.csv"):
        shutil.copy(f, folder / f.name)
    if news_csv is not None:
        (folder / "news.csv").write_text(news_csv)
    return folder


def _replay(database_url: str, tmp_path: Path, news_csv: str | None) -> tuple[int, dict, str]:
    folder = _replay_folder(tmp_path, news_csv)
    env = {"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
           "CATALYST_REPORTS_DIR": str(tmp_path / "reports"), "CATALYST_LOG_DIR": str(tmp_path / "logs"), **ONE_CYCLE}
    code = agent.main(["--replay", str(folder), "--from", "2022-06-07", "--to", "2022-06-07", "--brain", "rules"], env=env)
    reports = list((tmp_path / "reports").glob("replay-*"))
    if not reports:
        return code, {}, ""
    return code, json.loads((reports[0] / "report.json").read_text()), (reports[0] / "report.md").read_text()


def test_a_news_csv_makes_a_tier_1_entry_and_the_report_shows_its_catalyst(database_url, make_database_url,
                                                                           tmp_path, capsys):
    code, plain, plain_md = _replay(make_database_url("plain"), tmp_path / "plain", None)
    assert code == 0
    assert plain["trades"], "without news the same candidate is still a (tier-2) entry"
    assert all(t["tier"] != 1 for t in plain["trades"])
    assert "No news in this replay" in plain_md
    capsys.readouterr()

    code, with_news, md = _replay(database_url, tmp_path / "news", NEWS_CSV)
    out = capsys.readouterr().out
    assert code == 0
    [trade] = [t for t in with_news["trades"] if t["tier"] == 1]
    assert trade["symbol"] == "HK.09988" and "catalyst: contract_win" in trade["entry_reason"]
    assert trade["catalyst"]["has_catalyst"] is True and trade["catalyst"]["tags"] == ["contract_win"]
    # Only what was published before the 15:00 entry: not the 16:30 story, not the week-old warning.
    assert trade["catalyst"]["headline"] == "Alibaba wins HK$2bn government cloud contract"
    assert with_news["news"] == {"headlines_loaded": 3, "sources": ["news.csv"], "trades_with_catalyst": 1}
    assert "## Catalysts at entry" in md and "| contract_win |" in md
    assert "Catalysts: 1 of 1 trade(s) entered with one: HK.09988 tier 1 (contract_win)" in out


def test_a_bad_news_csv_exits_2_naming_the_file_and_row(database_url, tmp_path, capsys):
    bad = "published_at,symbol,headline,source,url\n2022-06-07 14:20,9988,Fine,Wire,\nyesterday,9988,Bad time,Wire,\n"
    code, _, _ = _replay(database_url, tmp_path, bad)
    err = capsys.readouterr().err
    assert code == 2
    assert "news.csv row 3: published_at 'yesterday' is not a time" in err


def test_get_news_at_simulated_time_sees_only_what_was_published_by_then(database_url, tmp_path):
    async def scenario(t: Tools):
        t.ctx.news = NewsService(NewsStore(t.db, t.profile.agent_id),
                                 SentimentScorer(load_lexicon(CONFIG_DIR / "news_context.yaml")), t.profile.news,
                                 t.clock)
        now = t.clock.now()
        await t.ctx.news.keep([
            NewsItem("news.csv", "a", (BABA,), now - timedelta(minutes=20), "Alibaba wins cloud contract"),
            NewsItem("news.csv", "b", (BABA,), now + timedelta(minutes=10), "Alibaba issues profit warning"),
        ], source="news.csv")
        first = await t.ok("get_news", {"symbol": "9988", "hours": 24})
        await t.clock.sleep(15 * 60)
        later = await t.ok("get_news", {"symbol": "9988", "hours": 24})
        return first, later

    first, later = run_tools(database_url, tmp_path, scenario)
    assert [h["headline"] for h in first["headlines"]] == ["Alibaba wins cloud contract"]
    assert first["headlines"][0]["age"] == "20m" and first["has_catalyst"] is True
    assert [h["headline"] for h in later["headlines"]] == ["Alibaba issues profit warning", "Alibaba wins cloud contract"]
    assert later["has_catalyst"] is False, "a fresh profit warning outweighs the older contract win"
    assert later["score"] < 0



def test_get_news_through_the_tool_with_a_feed_matched_by_the_brokers_name(database_url, tmp_path):
    """The run's wiring (news.build): the profile's feed, the company name from the broker's static
    info (the paper exchange calls 09988 "Alibaba Group"), the answer through the tool."""
    from config.settings import Secrets
    from news.build import build_news
    from tests.fakes.fake_news import FakeNews, FeedEntry
    from tests.tool_harness import first_cycle, hk_profile

    now = first_cycle()
    server = FakeNews().start()
    try:
        url = server.add_feed("biz", [
            FeedEntry("Alibaba wins cloud contract from a state bank", now - timedelta(hours=2), link="https://n.invalid/1"),
            FeedEntry("Alibaba denies report of a share placing", now + timedelta(hours=1), link="https://n.invalid/2"),
            FeedEntry("Tencent raises dividend", now - timedelta(hours=1), link="https://n.invalid/3"),
        ], title="Business wire")
        profile = hk_profile({"CATALYST__NEWS__RSS_FEEDS": f'["{url}"]'})

        async def scenario(t: Tools):
            t.ctx.news = build_news(t.profile, Secrets(), t.clock, t.db, t.exchange, with_providers=True)
            return await t.ok("get_news", {"symbol": "09988", "hours": 12})

        result = run_tools(database_url, tmp_path, scenario, profile=profile)
    finally:
        server.stop()
    assert [h["headline"] for h in result["headlines"]] == ["Alibaba wins cloud contract from a state bank"]
    assert result["headlines"][0]["source"] == "Business wire" and result["headlines"][0]["age"] == "2h00m"
    assert result["has_catalyst"] is True and "failed" not in result
