"""Secrets never leave the process: a whole sample run (and a replay) with fake secret values in
every secret setting, urgent alerts really sent by email and webhook, then a search of everything
a person or Big Bro can read afterwards: the logs, the printed output, the reports, the var folder,
every row of both databases, the emails and the webhook calls. And logs/agent.log is rotated daily
with 30 days kept."""
from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


import agent
from ops.logsetup import setup_logging
from store.db import Database
from tests.fakes.mail_fixtures import PASSWORD as SMTP_PASSWORD
from tests.helpers import every_row

WEBHOOK_TOKEN = "whk-tok-Q7v2mZp4"
DB_PASSWORD = "dbpw-Hx82kq-trading"
RESEARCH_PASSWORD = "dbpw-Lm3n-research"
SECRETS = [SMTP_PASSWORD, WEBHOOK_TOKEN, DB_PASSWORD, RESEARCH_PASSWORD]


def with_password(unix_url: str, password: str) -> str:
    """The embedded server's URL with a password in it (the server trusts local connections, so any works)."""
    parts = urlsplit(unix_url)
    return f"postgresql://postgres:{password}@/{parts.path.lstrip('/')}?host={parse_qs(parts.query)['host'][0]}"


def files_under(folder: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file()}


def leaks(texts: dict[str, str]) -> list[str]:
    return [f"{where}: {secret}" for where, text in texts.items() for secret in SECRETS if secret in text]


def test_a_whole_run_with_secrets_leaks_none_of_them(
        database_url, make_database_url, smtp_server, webhook_server, certificate, tmp_path, monkeypatch, capsys,
        restore_logging):
    controller, sink = smtp_server
    hook_url, hook_calls = webhook_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    research_url = make_database_url("research")
    env = {
        "DATABASE_URL": with_password(database_url, DB_PASSWORD),
        "RESEARCH_DATABASE_URL": with_password(research_url, RESEARCH_PASSWORD),
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port), "SMTP_USER": "alerts",
        "SMTP_PASSWORD": SMTP_PASSWORD, "ALERT_EMAIL_TO": "trader@example.test", "ALERT_EMAIL_FROM": "catalyst@example.test",
        "ALERT_WEBHOOK_URL": f"{hook_url}/hook?token={WEBHOOK_TOKEN}",
        # a daily-loss limit the first entry's spread already reaches: a RISK_HALT, alerted by email and webhook
        "CATALYST__RISK__DAILY_LOSS_HALT_PCT": "0.001", "CATALYST__RISK__DAILY_LOSS_WARN_PCT": "0.001",
        "CATALYST_VAR_DIR": str(tmp_path / "var"), "CATALYST_LOG_DIR": str(tmp_path / "logs"),
        "CATALYST_REPORTS_DIR": str(tmp_path / "reports"),
    }

    async def big_bro_quotes_a_secret():  # a path by which a secret reaches the log unless it is redacted
        db = await Database(research_url, "research").connect()
        await db.migrate("research")
        await db.execute("""INSERT INTO claude_messages (from_agent, to_agent, msg_type, priority, subject, body)
                            VALUES ('big_bro', 'intl_claude-demo', 'message', 'high', $1, $2)""",
                         f"is the SMTP password still {SMTP_PASSWORD}?", "see subject")
        await db.close()

    asyncio.run(big_bro_quotes_a_secret())
    code = agent.main(["--force"], env=env)
    replay_code = agent.main(["--replay", "data/samples/hk", "--from", "2022-06-15", "--to", "2022-06-15"], env=env)
    printed = capsys.readouterr()

    assert code in (0, 3), printed.err  # done (the afternoon cycle stopped by the daily-loss halt), not failed
    assert replay_code == 0, printed.err
    log_text = (tmp_path / "logs" / "agent.log").read_text()
    assert "event RISK_HALT" in log_text
    assert "is the SMTP password still ***?" in log_text, "the message from Big Bro is logged, redacted"
    assert len(sink.messages) >= 1 and len(hook_calls) >= 1, "the urgent event went out by email and webhook"
    assert list((tmp_path / "reports").rglob("report.json")), "the replay wrote its report"

    found = leaks({"stdout": printed.out, "stderr": printed.err})
    found += leaks(files_under(tmp_path / "logs"))
    found += leaks(files_under(tmp_path / "reports"))
    found += leaks(files_under(tmp_path / "var"))
    for url in (database_url, research_url):
        found += leaks({f"{url} {table}": row for table, row in asyncio.run(every_row(url, except_big_bros_messages=True))})
    found += leaks({f"email {i}": raw for i, raw in enumerate(sink.raw)})
    found += leaks({f"webhook {i}": json.dumps(body) for i, (_path, body) in enumerate(hook_calls)})
    assert found == []


def test_the_log_rotates_daily_keeps_30_days_and_redacts_tracebacks(tmp_path, restore_logging):
    log_dir = tmp_path / "logs"
    redactor = setup_logging(log_dir, [DB_PASSWORD])
    handler = next(h for h in logging.getLogger().handlers if isinstance(h, logging.handlers.TimedRotatingFileHandler))
    assert (handler.when, handler.backupCount, Path(handler.baseFilename)) == ("MIDNIGHT", 30, log_dir / "agent.log")
    assert redactor.redact(f"x {DB_PASSWORD} y") == "x *** y"

    try:
        raise ConnectionError(f"could not connect to postgresql://cat:{DB_PASSWORD}@db/trading")
    except ConnectionError:
        logging.getLogger("catalyst.test").exception("reconnect failed for %s", f"user:{DB_PASSWORD}")
    for h in logging.getLogger().handlers:
        h.flush()
    text = (log_dir / "agent.log").read_text()
    assert "reconnect failed for user:***" in text and "postgresql://cat:***@db/trading" in text
    assert DB_PASSWORD not in text

    # 40 days of old logs: a rollover keeps the newest 30
    for day in range(1, 41):
        (log_dir / f"agent.log.2026-09-{day:02d}" if day <= 30 else log_dir / f"agent.log.2026-10-{day - 30:02d}").write_text("old\n")
    handler.doRollover()
    kept = sorted(p.name for p in log_dir.glob("agent.log.*"))
    assert len(kept) == 30 and kept[-1] > "agent.log.2026-10-10"
    assert "agent.log.2026-09-01" not in kept
