"""`agent.py --download`: bars from the fake OpenD and the fake Alpaca, in exactly the replay's format;
resumable; an unknown symbol is one line; download then --replay gives the same bars; Moomoo's history
K-line quota is reported and kept to; Alpaca's feed is SIP, or IEX when the account has no SIP (issue 15)."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone

import pandas as pd

import agent
from core.clock import SimClock
from data.bars import load_bars, load_samples
from core.instruments import Market, Symbol
from tests.broker_harness import alpaca_env, moomoo_env
from tests.fakes.fake_opend import HK, QOT_REQ_HISTORY_KL

BABA, AAPL = Symbol(Market.HK, "09988"), Symbol(Market.US, "AAPL")
TENCENT, HSBC, HKCG = Symbol(Market.HK, "00700"), Symbol(Market.HK, "00005"), Symbol(Market.HK, "00003")
SH_MOUTAI = 21, "600519"     # QotMarket SH: a code of a market the agent does not trade, counted all the same


def _sessions_of(minute: pd.DataFrame, tz: str, first: str, last: str) -> pd.DataFrame:
    days = pd.Series(minute.index.tz_convert(tz).strftime("%Y-%m-%d"), index=minute.index)
    return minute[((days >= first) & (days <= last)).to_numpy()]


def test_hk_download_round_trip_through_opend_resumes_and_names_an_unknown_code(opend, database_url, tmp_path, capsys):
    sample = load_samples(Market.HK)[BABA]
    clock = SimClock(datetime(2022, 6, 16, 2, 0, tzinfo=timezone.utc))  # the day after the last sample session
    opend.serve_market({BABA: sample}, now=clock.peek)
    env = moomoo_env(opend, database_url, tmp_path / "var", [BABA])
    out = tmp_path / "bars"
    argv = ["--download", "--market", "hk", "--symbols", "9988", "--from", "2022-05-30", "--to", "2022-06-15",
            "--out", str(out)]

    code = agent.main(argv[:7] + ["--to", "2022-06-02", "--out", str(out)], env=env, clock=clock)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "HK.09988: 4 session(s) downloaded (1,320 bars), 0 already there" in printed, printed

    code = agent.main(argv, env=env, clock=clock)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "HK.09988: 8 session(s) downloaded (2,640 bars), 4 already there" in printed, printed
    assert sorted(p.name for p in out.iterdir()) == ["09988_1m_2022-05.csv", "09988_1m_2022-06.csv", "lots.csv"]
    assert (out / "lots.csv").read_text().splitlines() == ["code,lot_size", f"09988,{sample.lot_size}"]

    got = load_bars(out, Market.HK)[BABA].minute
    want = _sessions_of(sample.minute, "Asia/Hong_Kong", "2022-05-30", "2022-06-15")
    pd.testing.assert_frame_equal(got, want, check_freq=False, check_index_type=False)

    code = agent.main(["--download", "--market", "hk", "--symbols", "99999", "--from", "2022-06-13", "--to",
                       "2022-06-15", "--out", str(out)], env=env, clock=clock)
    captured = capsys.readouterr()
    assert code == 1
    [line] = [x for x in captured.out.splitlines() if x.startswith("HK.99999")]
    assert line.startswith("HK.99999: the broker does not know this symbol (") and line.endswith("); skipped")

    replay_env = {"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var2"),
                  "CATALYST_REPORTS_DIR": str(tmp_path / "reports"), "CATALYST_LOG_DIR": str(tmp_path / "logs")}
    code = agent.main(["--replay", str(out)], env=replay_env)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "assumed" not in printed, "the board lot came with the download"
    [folder] = list((tmp_path / "reports").glob("replay-*"))
    report = json.loads((folder / "report.json").read_text())
    assert report["bars_replayed"] == len(want) and report["data"]["incomplete_sessions"] == {}


def test_us_download_round_trip_through_alpaca(alpaca_fake, database_url, tmp_path, capsys):
    sample = load_samples(Market.US)[AAPL]
    clock = SimClock(datetime(2026, 8, 7, 13, 0, tzinfo=timezone.utc))
    alpaca_fake.serve_market({AAPL: sample}, now=clock.peek)
    env = alpaca_env(alpaca_fake, database_url, tmp_path / "var", [AAPL])
    out = tmp_path / "bars"
    code = agent.main(["--download", "--market", "us", "--symbols", "aapl", "--from", "2026-07-29", "--to",
                       "2026-08-05", "--out", str(out)], env=env, clock=clock)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "US.AAPL: 6 session(s) downloaded" in printed and not (out / "lots.csv").exists()
    got = load_bars(out, Market.US)[AAPL].minute
    want = _sessions_of(sample.minute, "America/New_York", "2026-07-29", "2026-08-05")
    pd.testing.assert_frame_equal(got, want, check_freq=False, check_index_type=False)


def test_download_usage_errors_are_one_line_and_exit_2(tmp_path, capsys):
    env = {"CATALYST_LOG_DIR": str(tmp_path / "logs"), "MOOMOO_HOST": "127.0.0.1", "MOOMOO_PORT": "1"}
    cases = [
        (["--download", "--from", "2022-06-01", "--to", "2022-06-02"],
         "download: --download needs --symbols (e.g. --symbols 700 9988 or --symbols AAPL,MSFT)"),
        (["--download", "--symbols", "AAPL", "--from", "2022-06-01", "--to", "2022-06-02"],
         "download: --symbols: US.AAPL is not a HK symbol; add --market us to download it"),
        (["--download", "--symbols", "700", "--from", "2022-06-03", "--to", "2022-06-01"],
         "download: --from 2022-06-03 is after --to 2022-06-01; nothing to download"),
    ]
    for argv, message in cases:
        assert agent.main(argv, env=env) == 2
        assert capsys.readouterr().err.strip() == message
    assert agent.main(["--download", "--market", "us", "--symbols", "AAPL", "--from", "2022-06-01", "--to", "2022-06-02"],
                      env={"CATALYST_LOG_DIR": str(tmp_path / "logs"), "ALPACA_API_KEY": "", "ALPACA_SECRET_KEY": ""}) == 2
    assert capsys.readouterr().err.strip() == ("download: --download reads bars from the broker: set ALPACA_API_KEY and "
                                               "ALPACA_SECRET_KEY (paper keys suffice)")
    assert agent.main(["--symbols", "700"], env=env) == 2
    assert "--symbols and --out only go with --download" in capsys.readouterr().err
    assert agent.main(["--download", "--symbols", "700", "--from", "2022-06-01", "--to", "2022-06-02", "--feed", "sip"],
                      env=env) == 2
    assert "--feed only goes with --download --market us (Alpaca's data feed; Moomoo has one)" in capsys.readouterr().err


def test_hk_download_reports_the_history_quota_and_skips_new_codes_beyond_it(opend, database_url, tmp_path, capsys):
    sample = load_samples(Market.HK)[BABA]
    clock = SimClock(datetime(2022, 6, 16, 2, 0, tzinfo=timezone.utc))
    opend.serve_market({s: replace(sample, symbol=s) for s in (BABA, TENCENT, HSBC, HKCG)}, now=clock.peek)
    opend.history_kl_quota = 3
    opend.history_kl_detail = {(HK, "00700"): datetime(2022, 6, 1, 10, 0), SH_MOUTAI: datetime(2022, 6, 2, 10, 0)}
    env = moomoo_env(opend, database_url, tmp_path / "var", [BABA])
    out = tmp_path / "bars"

    code = agent.main(["--download", "--market", "hk", "--symbols", "9988", "700", "5", "3", "--from", "2022-06-13",
                       "--to", "2022-06-15", "--out", str(out)], env=env, clock=clock)
    printed = capsys.readouterr().out
    assert code == 1, printed
    lines = printed.splitlines()
    assert ("history K-line quota: 2 used, 1 remaining; 3 of the 4 asked code(s) new to it "
            "(a code downloaded in the last 30 days costs nothing again)") in lines, printed
    assert "HK.00005: skipped, over the history K-line quota (1 new code(s) remaining, 3 asked)" in lines, printed
    assert "HK.00003: skipped, over the history K-line quota (1 new code(s) remaining, 3 asked)" in lines, printed
    assert "HK.09988: 3 session(s) downloaded (990 bars), 0 already there -> " + str(out) in lines, printed
    assert "HK.00700: 3 session(s) downloaded (990 bars), 0 already there -> " + str(out) in lines, printed
    assert sorted(p.name for p in out.iterdir()) == ["00700_1m_2022-06.csv", "09988_1m_2022-06.csv", "lots.csv"]
    asked = {req.c2s.security.code for proto, req in opend.calls if proto == QOT_REQ_HISTORY_KL}
    assert asked == {"09988", "00700"}, "a skipped code's history was never asked for"

    code = agent.main(["--download", "--market", "hk", "--symbols", "700", "--from", "2022-06-10", "--to",
                       "2022-06-15", "--out", str(out)], env=env, clock=clock)
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert ("history K-line quota: 3 used, 0 remaining; 0 of the 1 asked code(s) new to it "
            "(a code downloaded in the last 30 days costs nothing again)") in printed.splitlines(), printed
    assert "HK.00700: 1 session(s) downloaded (330 bars), 3 already there" in printed, printed


def _download_us(env, clock, out, *flags: str, days=("2026-08-03", "2026-08-05")) -> int:
    return agent.main(["--download", "--market", "us", "--symbols", "AAPL", "--from", days[0], "--to", days[1],
                       "--out", str(out), *flags], env=env, clock=clock)


def _bar_feeds(fake) -> list[str]:
    return [r.query.get("feed") for r in fake.requests if r.path == "/v2/stocks/bars"]


def test_us_download_auto_feed_takes_iex_when_the_account_has_no_sip(alpaca_fake, database_url, tmp_path, capsys):
    sample = load_samples(Market.US)[AAPL]
    clock = SimClock(datetime(2026, 8, 5, 20, 5, tzinfo=timezone.utc))   # 5 minutes after the close of the last day
    alpaca_fake.serve_market({AAPL: sample}, now=clock.peek)
    alpaca_fake.sip_permitted = False
    env = alpaca_env(alpaca_fake, database_url, tmp_path / "var", [AAPL])

    assert _download_us(env, clock, tmp_path / "old", days=("2026-07-29", "2026-07-31")) == 0
    printed = capsys.readouterr().out
    assert "US.AAPL: 3 session(s) downloaded (1,170 bars, SIP feed), 0 already there" in printed, printed
    assert "IEX" not in printed and set(_bar_feeds(alpaca_fake)) == {"sip"}, "SIP older than 15 minutes is served"

    alpaca_fake.requests.clear()
    out = tmp_path / "bars"
    assert _download_us(env, clock, out) == 0
    printed = capsys.readouterr().out
    assert ("feed: Alpaca refused reading 1m bars of US.AAPL on the SIP feed (403): subscription does not permit "
            "querying recent SIP data; downloading from IEX instead") in printed.splitlines(), printed
    assert "US.AAPL: 3 session(s) downloaded (1,170 bars, IEX feed), 0 already there" in printed, printed
    assert _bar_feeds(alpaca_fake) == ["sip", "iex"], "the SIP probe refused once, then the month from IEX"
    got = load_bars(out, Market.US)[AAPL].minute
    pd.testing.assert_frame_equal(got, _sessions_of(sample.minute, "America/New_York", "2026-08-03", "2026-08-05"),
                                  check_freq=False, check_index_type=False)


def test_us_download_forced_sip_without_sip_is_one_line_and_exit_1(alpaca_fake, database_url, tmp_path, capsys):
    sample = load_samples(Market.US)[AAPL]
    clock = SimClock(datetime(2026, 8, 5, 20, 5, tzinfo=timezone.utc))
    alpaca_fake.serve_market({AAPL: sample}, now=clock.peek)
    alpaca_fake.sip_permitted = False
    env = alpaca_env(alpaca_fake, database_url, tmp_path / "var", [AAPL])
    out = tmp_path / "bars"

    assert _download_us(env, clock, out, "--feed", "sip") == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "download failed: Alpaca refused reading 1m bars of US.AAPL on the SIP feed (403): subscription does not "
        "permit querying recent SIP data; the account's data subscription does not include SIP for these dates: "
        "--feed iex (or auto) downloads from IEX"], captured.err
    assert "Traceback" not in captured.out + captured.err and not list(out.glob("*.csv"))

    assert _download_us(env, clock, out, "--feed", "iex") == 0
    printed = capsys.readouterr().out
    assert "US.AAPL: 3 session(s) downloaded (1,170 bars, IEX feed), 0 already there" in printed, printed
    assert "(iex feed)" in printed.splitlines()[0] and "sip" not in _bar_feeds(alpaca_fake)[1:]
