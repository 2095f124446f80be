"""`agent.py --mode report`: the end-of-day report over the demo's sample day, checked against the tables."""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import asyncpg
import pytest

import agent
from tests.fakes.mail_fixtures import PASSWORD
from tests.helpers import query
from tests.report_fixtures import DEMO, report_env


def test_the_daily_report_equals_the_tables_is_emailed_and_posted_once(
        database_url, tmp_path, traded_day, smtp_server, certificate, monkeypatch, capsys):
    controller, sink = smtp_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    mail = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port), "SMTP_USER": "alerts",
            "SMTP_PASSWORD": PASSWORD, "ALERT_EMAIL_TO": "trader@example.test"}
    args = ["--mode", "report", "--day", traded_day.isoformat(), "--days", "3"]

    assert agent.main(args, env=report_env(database_url, tmp_path, **mail)) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "reports" / f"daily-hk-{traded_day.isoformat()}"
    assert {p.name for p in folder.iterdir()} == {"report.json", "report.md", "report.html", "chart.png"}
    assert f"Report: {folder} (posted to Big Bro; emailed to trader@example.test)" in out
    r = json.loads((folder / "report.json").read_text())

    # The figures are the database's.
    positions = query(database_url, "SELECT * FROM positions WHERE agent_id=$1 AND trading_day=$2 AND status='closed'",
                      DEMO, traded_day)
    assert positions and r["n_trades"] == len(positions) == len(r["trades"])
    assert r["net_pnl"] == pytest.approx(float(sum(p["realized_pnl"] for p in positions)), abs=1e-4)
    assert r["fees"] == pytest.approx(float(sum(p["entry_fees"] + p["exit_fees"] for p in positions)), abs=1e-4)
    assert r["exits_by_reason"] == dict(Counter(p["exit_reason"] for p in positions))
    assert sorted(t["position_id"] for t in r["trades"]) == sorted(p["position_id"] for p in positions)
    for t in r["trades"]:
        p = next(p for p in positions if p["position_id"] == t["position_id"])
        assert t["hold_minutes"] == round((p["exit_time"] - p["entry_time"]).total_seconds() / 60, 1)
    [spend] = query(database_url, "SELECT COALESCE(sum(cost_usd), 0) AS usd, count(*) FILTER (WHERE purpose='consult') "
                    "AS haiku FROM api_usage WHERE agent_id=$1 AND trading_day=$2", DEMO, traded_day)
    assert r["llm"]["spend_usd"] == pytest.approx(float(spend["usd"]), abs=1e-6)
    assert r["llm"]["haiku_calls"] == spend["haiku"] and r["llm"]["budget_usd"] == 5.0
    [risk] = query(database_url, "SELECT start_equity FROM risk_day WHERE agent_id=$1 AND trading_day=$2", DEMO, traded_day)
    assert r["start_equity"] == float(risk["start_equity"])
    assert r["end_equity"] == pytest.approx(float(risk["start_equity"]) + r["net_pnl"], abs=1e-4)
    perf = r["performance"]
    assert [d["day"] for d in perf["days"]][-1] == traded_day.isoformat() and len(perf["days"]) == 3
    assert perf["trades"] == len(positions) and perf["net_pnl"] == pytest.approx(r["net_pnl"], abs=1e-4)
    assert perf["days"][-1]["equity"] == pytest.approx(r["end_equity"], abs=1e-4)

    # One DAILY_REPORT for Big Bro with the figures, labelled as the demo's.
    def daily_messages():
        return query(database_url, "SELECT from_agent, subject, data FROM claude_messages WHERE data->>'event'='DAILY_REPORT'")
    [message] = daily_messages()
    data = json.loads(message["data"])
    assert message["from_agent"] == DEMO and message["subject"].startswith("[demo] Catalyst HK")
    assert data["net_pnl"] == r["net_pnl"] and data["n_trades"] == r["n_trades"] and data["run_kind"] == "demo"

    # The email: the HTML part with the chart inline, and the plain text.
    [email] = sink.messages
    assert sink.over_tls == [True] and str(email["Subject"]).strip() == message["subject"]
    text = email.get_body(("plain",)).get_content()
    html_part = email.get_body(("html",))
    html = html_part.get_content()
    [image] = [p for p in email.walk() if p.get_content_type() == "image/png"]
    cid = image["Content-ID"].strip("<>")
    assert f'src="cid:{cid}"' in html and image.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    for body in (text, html):
        assert f"{r['net_pnl']:+,.2f}" in body and positions[0]["symbol"] in body
    assert PASSWORD not in "".join(sink.raw)

    # Again: the files are written again, the email goes again, Big Bro gets no second message.
    assert agent.main(args, env=report_env(database_url, tmp_path, **mail)) == 0
    assert "already posted to Big Bro (one per day: not posted again)" in capsys.readouterr().out
    assert len(daily_messages()) == 1 and len(sink.messages) == 2


def test_a_day_without_trades_says_why(database_url, tmp_path, traded_day, capsys):
    """The agent's recorded day, seen by another agent id's eyes: a day where the demo's records show
    skips but a profile with max_entries_per_day 0 would not trade; simplest honest case: the same
    database, a trading day after the sample day, when nothing ran."""
    from data.calendar import MarketCalendar
    from core.instruments import Market

    later = MarketCalendar(Market.HK).next_open(
        MarketCalendar(Market.HK).session(traded_day).close).date()
    assert agent.main(["--mode", "report", "--day", later.isoformat()], env=report_env(database_url, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "0 trade(s)" in out and "No trade: no cycle ran that day" in out
    folder = tmp_path / "reports" / f"daily-hk-{later.isoformat()}"
    assert "No trade:" in (folder / "report.md").read_text()


def test_the_pass_reasons_explain_a_day_of_skips(database_url, tmp_path, traded_day, capsys):
    """The sample day's skips (decisions.data->>'pass_reason') are counted as the tables have them."""
    assert agent.main(["--mode", "report", "--day", traded_day.isoformat()], env=report_env(database_url, tmp_path)) == 0
    capsys.readouterr()
    r = json.loads((tmp_path / "reports" / f"daily-hk-{traded_day.isoformat()}" / "report.json").read_text())
    rows = query(database_url, "SELECT COALESCE(data->>'pass_reason', 'unspecified') AS reason, count(*) AS n "
                 "FROM decisions WHERE agent_id=$1 AND decision='skip' GROUP BY 1", DEMO)
    assert r["pass_reasons"] == {row["reason"]: row["n"] for row in rows}


def test_after_make_run_the_report_without_a_day_is_of_the_demos_sample_day(database_url, tmp_path, traded_day, capsys):
    assert agent.main(["--mode", "report"], env=report_env(database_url, tmp_path)) == 0
    captured = capsys.readouterr()
    assert f"[demo] Catalyst HK {traded_day.isoformat()}: " in captured.out and "No trade" not in captured.out
    assert f"agent id {DEMO}" in captured.err
    assert (tmp_path / "reports" / f"daily-hk-{traded_day.isoformat()}" / "report.html").exists()


def test_bad_report_flags_exit_2(database_url, tmp_path, capsys):
    assert agent.main(["--mode", "report", "--day", "June 6"], env=report_env(database_url, tmp_path)) == 2
    assert "--day" in capsys.readouterr().err
    assert agent.main(["--mode", "report", "--day", "2026-11-29"], env=report_env(database_url, tmp_path)) == 2  # a Sunday
    assert "not a HK trading day" in capsys.readouterr().err
    assert agent.main(["--mode", "report", "--days", "0"], env=report_env(database_url, tmp_path)) == 2
    assert "--days 0: give 1 to 250 trading days" in capsys.readouterr().err
    assert agent.main(["--day", "2026-11-27"], env=report_env(database_url, tmp_path)) == 2
    assert "--day and --days only go with --mode report" in capsys.readouterr().err


def test_what_big_bro_sent_how_it_was_answered_and_the_days_risk_and_reconciliation_events(
        database_url, tmp_path, traded_day, capsys):
    from datetime import datetime, timedelta, timezone

    at = datetime.combine(traded_day, datetime.min.time(), tzinfo=timezone(timedelta(hours=8))) + timedelta(hours=10)

    async def seed():
        conn = await asyncpg.connect(database_url)
        try:
            asked = await conn.fetchval(
                """INSERT INTO claude_messages (from_agent, to_agent, msg_type, subject, body, status, created_at)
                   VALUES ('big_bro', $1, 'command', 'halt: earnings week', 'stop entering', 'processed', $2) RETURNING id""",
                DEMO, at)
            await conn.execute(
                """INSERT INTO claude_messages (from_agent, to_agent, msg_type, subject, body, data, reply_to_id, created_at)
                   VALUES ($1, 'big_bro', 'response', '[demo] Halted for the day', 'ok', $2::jsonb, $3, $4)""",
                DEMO, json.dumps({"event": "CONTROL_RESPONSE"}), asked, at + timedelta(minutes=1))
            for event, subject in (("RISK_HALT", "[demo] Daily loss limit reached"), ("RECONCILE", "[demo] Adopted 700")):
                await conn.execute(
                    """INSERT INTO claude_messages (from_agent, to_agent, msg_type, subject, body, data, created_at)
                       VALUES ($1, 'big_bro', 'notification', $2, '', $3::jsonb, $4)""",
                    DEMO, subject, json.dumps({"event": event}), at + timedelta(minutes=2))
            await conn.execute(  # the day before: not this day's
                """INSERT INTO claude_messages (from_agent, to_agent, msg_type, subject, body, created_at)
                   VALUES ('big_bro', $1, 'command', 'yesterday', '', $2)""", DEMO, at - timedelta(days=1))
        finally:
            await conn.close()
    asyncio.run(seed())

    assert agent.main(["--mode", "report", "--day", traded_day.isoformat()], env=report_env(database_url, tmp_path)) == 0
    capsys.readouterr()
    folder = tmp_path / "reports" / f"daily-hk-{traded_day.isoformat()}"
    r = json.loads((folder / "report.json").read_text())
    [asked] = r["big_bro"]
    assert (asked["subject"], asked["status"], asked["answer"]) == ("halt: earnings week", "processed",
                                                                  "[demo] Halted for the day")
    assert [e["subject"] for e in r["risk"]["events"]] == ["[demo] Daily loss limit reached"]
    assert [e["subject"] for e in r["reconciliation"]] == ["[demo] Adopted 700"]
    md = (folder / "report.md").read_text()
    assert "halt: earnings week (processed; answered: [demo] Halted for the day)" in md
    assert "RISK_HALT: [demo] Daily loss limit reached" in md and "Adopted 700" in md
