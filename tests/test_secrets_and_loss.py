"""Secrets and data when things go wrong, as the trader finds them afterwards.

* An API gateway that echoes the request headers in its error answer: the agent's key and credentials
  it never configured (a gateway's own bearer token, an upstream key) are in the error text. The real
  anthropic SDK talks to ``FakeAnthropic`` answering so; after the run (and its daily report) no secret
  is in any row of either database, the log, the printed output, the var folder or the reports.
* Big Bro's events that neither the research database nor the outbox could take: counted, said in the
  run's summary and on stderr, the run exits 1, and the trader's webhook hears of it.
"""
from __future__ import annotations

import asyncio
import re
from pathlib import Path

import asyncpg
import pytest

import agent
from config.settings import ENV_VARS
from runner.exit_codes import EXIT_FAILED
from tests.fakes import free_port
from tests.fakes.fake_anthropic import FakeAnthropic, echoing_error
from tests.helpers import every_row

DEMO = "intl_claude-demo"
NO_SECRETS = {var: "" for var in ENV_VARS}  # a developer's .env must not reach the run

ANTHROPIC_KEY = "sk-ant-api03-Tq7Wm2Xr9Lp4Zs8Kd1Vb6Nc3Hf5Jg0Ye-AAAA"   # configured: ANTHROPIC_API_KEY
# What the gateway in front of the API added to the request it forwarded, and echoes too: the agent
# never configured these, so only their shape can give them away.
GATEWAY_TOKEN = "gwtok.Hx71Qa9Zm3Lp"
UPSTREAM_KEY = "sk-ant-admin01-Rr4Mx8Pz2Wq6Tn1Lc9"
ALPACA_SECRET = "Zq8Wx2Mc4Rt6Yp0Ls5Kd7Nf1Hb3Vg9Jx2Qe4Ta"
GATEWAY_HEADERS = {"proxy-authorization": f"Bearer {GATEWAY_TOKEN}", "x-upstream-key": UPSTREAM_KEY,
                   "apca-api-secret-key": ALPACA_SECRET}
SECRETS = [ANTHROPIC_KEY, GATEWAY_TOKEN, UPSTREAM_KEY, ALPACA_SECRET]


# --- helpers -----------------------------------------------------------------------------------------
def rows_of_every_table(url: str) -> dict[str, str]:
    return {f"{table} row {i}": row for i, (table, row) in enumerate(asyncio.run(every_row(url)))}


def files_under(folder: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()}


def leaks(texts: dict[str, str]) -> list[str]:
    return [f"{where}: {secret[:12]}..." for where, text in texts.items() for secret in SECRETS if secret in text]


@pytest.fixture
def echoing_gateway():
    fake = FakeAnthropic(api_key=ANTHROPIC_KEY).start()
    try:
        yield fake
    finally:
        fake.stop()


# --- 11. an error text that echoes the request headers -----------------------------------------------------
@pytest.mark.parametrize("status, etype, cycle_status", [
    (400, "invalid_request_error", "failed"),   # the cycle fails, the run goes on to its summary
    (401, "authentication_error", "failed"),    # fatal: the run ends at once with an urgent message
])
def test_an_error_that_echoes_the_request_headers_leaves_no_secret_anywhere(
        database_url, make_database_url, echoing_gateway, tmp_path, capsys, restore_logging, status, etype,
        cycle_status):
    echoing_gateway.script(echoing_error(status, etype, "the gateway refused the request", GATEWAY_HEADERS))
    research_url = make_database_url("research")
    env = {**NO_SECRETS, "DATABASE_URL": database_url, "RESEARCH_DATABASE_URL": research_url,
           "ANTHROPIC_API_KEY": ANTHROPIC_KEY, "ANTHROPIC_BASE_URL": echoing_gateway.base_url,
           "CATALYST_VAR_DIR": str(tmp_path / "var"), "CATALYST_LOG_DIR": str(tmp_path / "logs"),
           "CATALYST_REPORTS_DIR": str(tmp_path / "reports")}

    code = agent.main(["--force"], env=env)
    report_code = agent.main(["--mode", "report"], env=env)
    printed = capsys.readouterr()

    assert code == EXIT_FAILED, printed.out + printed.err
    assert report_code == 0, printed.err
    assert len(echoing_gateway.requests) == 1
    assert echoing_gateway.headers[0]["authorization"] == f"Bearer {ANTHROPIC_KEY}", "premise: the echo holds the key"
    assert list((tmp_path / "reports").glob("daily-hk-*/report.json")), "the daily report was written"

    found = leaks({"stdout": printed.out, "stderr": printed.err})
    found += leaks(files_under(tmp_path / "logs"))
    found += leaks(files_under(tmp_path / "reports"))
    found += leaks(files_under(tmp_path / "var"))
    found += leaks(rows_of_every_table(database_url))
    found += leaks(rows_of_every_table(research_url))
    assert found == [], "secrets found in: " + "; ".join(found)
    [cycle] = asyncio.run(_cycles(database_url))
    assert cycle["status"] == cycle_status
    # what failed is still said, with the secrets blanked out
    assert f"HTTP {status}" in cycle["error"] and "the gateway refused the request" in cycle["error"]
    assert '"authorization": "Bearer ***"' in cycle["error"], cycle["error"]


async def _cycles(url: str) -> list[dict]:
    conn = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await conn.fetch("SELECT status, error FROM cycles")]
    finally:
        await conn.close()


def test_secret_shapes_are_blanked_and_identifiers_are_left_alone():
    """What the store's redaction catches without being told the value, and what it must never touch:
    a short configured secret (a 6-digit trade PIN) is blanked as a word, not inside a cycle id, an
    order id or a number, so that no identifier the agent looks up again is ever changed."""
    from core.redaction import Redactor

    redact = Redactor(["482913"], whole_words_below=8).redact
    echoed = (f"upstream said 403; headers={{'Authorization': 'Bearer {GATEWAY_TOKEN}', 'x-api-key': '{UPSTREAM_KEY}', "
              f"'APCA-API-KEY-ID': 'PKQ4W8Z2M6R1T5Y9X3N7', 'APCA-API-SECRET-KEY': '{ALPACA_SECRET}'}} "
              f"dsn postgresql://catalyst:hunter2pw@db.example/trading trade pwd 482913")
    clean = redact(echoed)
    assert all(s not in clean for s in (GATEWAY_TOKEN, UPSTREAM_KEY, ALPACA_SECRET, "PKQ4W8Z2M6R1T5Y9X3N7",
                                        "hunter2pw", "482913")), clean
    assert "upstream said 403" in clean and "'APCA-API-SECRET-KEY': '***'" in clean
    assert "postgresql://catalyst:***@db.example/trading" in clean
    for untouched in ("hk_20260115_482913_a1b2c3", "hk_20260115_093000_a1b2c3-HK.09988-1", '{"volume": 1482913}',
                      "Bearer of bad news", "scan_market: 5 candidates"):
        assert redact(untouched) == untouched


# --- 12. events that neither the research database nor the outbox took ----------------------------------------
LOST = re.compile(r"(\d+) event\(s\) lost: neither the research database nor the outbox took them")


def test_events_lost_with_the_research_database_down_and_var_full_fail_the_run_and_are_alerted(
        database_url, webhook_server, tmp_path, capsys, restore_logging):
    hook_url, hook_calls = webhook_server
    var = tmp_path / "var"
    var.mkdir()
    (var / f"outbox-{DEMO}.jsonl").symlink_to("/dev/full")  # var/ is full: every write to the outbox fails
    env = {**NO_SECRETS, "DATABASE_URL": database_url,
           "RESEARCH_DATABASE_URL": f"postgresql://postgres:pw@127.0.0.1:{free_port()}/research",  # nothing listens
           "ALERT_WEBHOOK_URL": f"{hook_url}/hook", "CATALYST_VAR_DIR": str(var),
           "CATALYST_LOG_DIR": str(tmp_path / "logs")}

    code = agent.main(["--force"], env=env)
    printed = capsys.readouterr()
    lost_in_log = (tmp_path / "logs" / "agent.log").read_text().count("could not be recorded even in the outbox")

    assert lost_in_log > 10, "premise: the run's events had nowhere to go"
    assert code == EXIT_FAILED, printed.out + printed.err
    summary = [line for line in printed.out.splitlines() if line.startswith("Records: ")]
    assert len(summary) == 1 and (said := LOST.search(summary[0])), printed.out
    assert int(said.group(1)) == lost_in_log
    failed = [line for line in printed.err.splitlines() if LOST.search(line)]
    assert failed == [f"run failed: {lost_in_log} event(s) lost: neither the research database nor the outbox "
                      f"took them (see {tmp_path / 'logs' / 'agent.log'})"], printed.err
    alerts = [body for _path, body in hook_calls if body["event"] and body["event"]["type"] == "EVENTS_LOST"]
    assert len(alerts) == 1, hook_calls
    assert f"{lost_in_log} event(s) lost" in alerts[0]["subject"] and alerts[0]["agent"] == DEMO
    assert alerts[0]["event"]["data"]["lost"] == lost_in_log


def test_a_secret_made_of_digits_never_breaks_an_events_numbers(tmp_path):
    """A six-digit trade PIN inside a price of an event's data: the event is still recorded (in the
    outbox, the research database being absent), its numbers unchanged, its strings redacted."""
    import json as _json
    from datetime import datetime, timezone
    from decimal import Decimal as D

    from consciousness_notify import Event, EventType, Notifier
    from core.clock import SimClock
    from ops.logsetup import RedactSecrets

    clock = SimClock(datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc))
    outbox = tmp_path / "outbox.jsonl"
    notifier = Notifier(None, "intl_claude", clock, outbox, "pin-test", redact=RedactSecrets(["093015"]).redact)

    async def send():
        await notifier.send(Event(EventType.EXIT, "EXIT 00700", "sold",
                                  {"exit_price": D("1093015.5"), "note": "pin 093015 typed in a note"}))

    clock.run(send())

    [record] = [r for r in map(_json.loads, outbox.read_text().splitlines()) if r["table"] == "claude_messages"]
    data = record["data"] if isinstance(record["data"], dict) else _json.loads(record["data"])
    assert str(data["exit_price"]) == "1093015.5", "the price is the price"
    assert "093015" not in data["note"]
