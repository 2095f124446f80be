"""Draft."""
from __future__ import annotations

import json
import time

import agent
from clock import SimClock
from config.settings import load_profile, profile_path
from data.calendar import MarketCalendar
from sessions import sample_feed


def test_hk_draft(opend, database_url, tmp_path, capsys):
    profile = load_profile(profile_path("hk"), {})
    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)
    opend.serve_market(feed.series, now=clock.peek)
    env = {"MOOMOO_HOST": "127.0.0.1", "MOOMOO_PORT": str(opend.port), "DATABASE_URL": database_url,
           "CATALYST_VAR_DIR": str(tmp_path), "ANTHROPIC_API_KEY": "",
           "CATALYST__SCAN__INDICES": json.dumps({"ALL": [str(s) for s in feed.universe]})}
    started = time.monotonic()
    code = agent.main(["--force"], env=env, clock=clock)
    out = capsys.readouterr()
    print(out.out, out.err, time.monotonic() - started, clock.peek())
    assert code == 0


def test_hk_profile_draft(opend, database_url, tmp_path, capsys):
    import collections, threading
    profile = load_profile(profile_path("hk"), {})
    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)
    opend.serve_market(feed.series, now=clock.peek)
    stamps = []
    orig = opend._dispatch
    def timed(proto_id, body, conn_id):
        t = time.monotonic()
        r = orig(proto_id, body, conn_id)
        stamps.append((proto_id, t, time.monotonic() - t, clock.peek()))
        return r
    opend._dispatch = timed
    env = {"MOOMOO_HOST": "127.0.0.1", "MOOMOO_PORT": str(opend.port), "DATABASE_URL": database_url,
           "CATALYST_VAR_DIR": str(tmp_path), "ANTHROPIC_API_KEY": "",
           "CATALYST__SCAN__INDICES": json.dumps({"ALL": [str(s) for s in feed.universe]})}
    started = time.monotonic()
    code = agent.main(["--force"], env=env, clock=clock)
    total = time.monotonic() - started
    by = collections.defaultdict(lambda: [0, 0.0])
    for pid, t, d, v in stamps:
        by[pid][0] += 1; by[pid][1] += d
    print({k: (v[0], round(v[1], 2)) for k, v in by.items()}, total)
    # wall time by virtual phase
    first_monitor = next(t for pid, t, d, v in stamps if v.hour >= 2 and v.minute >= 0 and pid == 3203 and v.minute > 50 or v.hour >= 2)
    print("scan done at wall", [ (round(t - started,1), v.time()) for pid, t, d, v in stamps if pid == 2202])
    print("last", round(stamps[-1][1] - started, 1))


def test_us_draft(alpaca_fake, database_url, tmp_path, capsys):
    profile = load_profile(profile_path("us"), {"CATALYST__PAPER__UNIVERSE_SEED": "1"})
    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)
    alpaca_fake.serve_market(feed.series, now=clock.peek)
    env = {"ALPACA_API_KEY": alpaca_fake.api_key, "ALPACA_SECRET_KEY": alpaca_fake.secret_key,
           "ALPACA_BASE_URL": alpaca_fake.base_url, "ALPACA_DATA_URL": alpaca_fake.base_url,
           "DATABASE_URL": database_url,
           "CATALYST_VAR_DIR": str(tmp_path), "ANTHROPIC_API_KEY": "",
           "CATALYST__SCAN__INDICES": json.dumps({"ALL": [str(s) for s in feed.universe]})}
    started = time.monotonic()
    code = agent.main(["--force", "--market", "us"], env=env, clock=clock)
    out = capsys.readouterr()
    print(out.out, out.err, time.monotonic() - started, clock.peek())
    assert code == 0


def test_us_profile(alpaca_fake, database_url, tmp_path, capsys):
    import collections
    profile = load_profile(profile_path("us"), {"CATALYST__PAPER__UNIVERSE_SEED": "1"})
    calendar = MarketCalendar(profile.market)
    feed = sample_feed(profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)
    alpaca_fake.serve_market(feed.series, now=clock.peek)
    stamps = []
    orig = alpaca_fake.handle
    def timed(method, path, query, body):
        t = time.monotonic()
        r = orig(method, path, query, body)
        stamps.append((method + path, t, time.monotonic() - t, clock.peek()))
        return r
    alpaca_fake.handle = timed
    env = {"ALPACA_API_KEY": alpaca_fake.api_key, "ALPACA_SECRET_KEY": alpaca_fake.secret_key,
           "ALPACA_BASE_URL": alpaca_fake.base_url, "ALPACA_DATA_URL": alpaca_fake.base_url,
           "DATABASE_URL": database_url,
           "CATALYST_VAR_DIR": str(tmp_path), "ANTHROPIC_API_KEY": "",
           "CATALYST__SCAN__INDICES": json.dumps({"ALL": [str(s) for s in feed.universe]})}
    started = time.monotonic()
    code = agent.main(["--force", "--market", "us"], env=env, clock=clock)
    total = time.monotonic() - started
    by = collections.defaultdict(lambda: [0, 0.0])
    for pid, t, d, v in stamps:
        by[pid.split("/v2/orders/")[0]][0] += 1; by[pid.split("/v2/orders/")[0]][1] += d
    print({k: (v[0], round(v[1], 2)) for k, v in by.items()}, total)
    print("orders at wall", [ (round(t - started,1), v.time()) for pid, t, d, v in stamps if pid == "POST/v2/orders"])
