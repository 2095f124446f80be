"""Out-of-band alerts as the trader receives them: a real SMTP server (aiosmtpd, STARTTLS with a
self-signed certificate made by the openssl CLI, AUTH) and a real HTTP server for the webhook, both
on 127.0.0.1; events go through the real Notifier on the simulated clock."""
from __future__ import annotations

import json
import ssl
from datetime import datetime, timezone
from pathlib import Path

from ops.alerts import EmailChannel, ThrottledAlerter, WebhookChannel, build_alerters
from core.clock import SimClock
from config.settings import load_secrets
from consciousness_notify import Event, EventType, Notifier, Priority
from ops.logsetup import RedactSecrets
from tests.fakes import free_port
from tests.fakes.mail_fixtures import PASSWORD

TOKEN = "hook-token-7c1e55aa"
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


def notifier(tmp_path: Path, clock, alerters) -> Notifier:
    redact = RedactSecrets([PASSWORD, TOKEN]).redact
    return Notifier(None, "intl_claude", clock, tmp_path / "outbox.jsonl", "run", alerters=alerters, redact=redact)


def email_channel(controller, certificate) -> EmailChannel:
    return EmailChannel("127.0.0.1", controller.port, "catalyst@example.test", ("trader@example.test",),
                        user="alerts", password=PASSWORD, ssl_context=ssl.create_default_context(cafile=certificate[0]))


# --- the storm -----------------------------------------------------------------------------------
def test_twenty_urgent_events_in_a_minute_arrive_as_two_emails_over_starttls(smtp_server, certificate, tmp_path):
    controller, sink = smtp_server
    clock = SimClock(T0)
    alerter = ThrottledAlerter(email_channel(controller, certificate), clock, RedactSecrets([PASSWORD]).redact,
                               window_seconds=600)
    n = notifier(tmp_path, clock, [alerter])
    seen_after: dict[str, int] = {}

    async def storm():
        await n.send(Event(EventType.RISK_HALT, "Trading halted: daily loss limit",
                           "daily loss -2.04% reached the -2% limit; closing everything. "
                           f"(store postgresql://catalyst:{PASSWORD}@db/trading)"))
        await clock.sleep(3)
        seen_after["first"] = len(sink.messages)
        for i in range(19):
            await n.send(Event(EventType.MONITOR_ERROR, f"Monitor error on 0070{i % 3}",
                               f"quote poll failed: postgresql://catalyst:{PASSWORD}@db/x refused ({i})"))
            await n.send(Event(EventType.EXIT, "EXIT 00700 stop_loss: HKD -120.00", "sold"))  # not an alert
            await clock.sleep(3)
        seen_after["storm"] = len(sink.messages)
        await clock.sleep(600)  # the window ends: one summary
        seen_after["window"] = len(sink.messages)
        await n.close()

    clock.run(storm())
    assert seen_after == {"first": 1, "storm": 1, "window": 2}
    assert len(sink.messages) == 2 and all(sink.over_tls)
    assert sink.logins == [("alerts", PASSWORD)] * 2
    first, summary = sink.messages
    assert first["Subject"] == "[Catalyst intl_claude] RISK_HALT: Trading halted: daily loss limit"
    assert "daily loss -2.04% reached the -2% limit" in first.get_content()
    assert "postgresql://catalyst:***@db/trading" in first.get_content()
    assert summary["Subject"].startswith("[Catalyst intl_claude] 19 more urgent event(s) since 2026-11-23 02:00 UTC")
    assert "MONITOR_ERROR" in summary["Subject"]
    assert summary.get_content().count("MONITOR_ERROR: Monitor error on") == 19
    assert all(PASSWORD not in raw for raw in sink.raw)


# --- configuration from .env ---------------------------------------------------------------------
def test_alerters_from_the_environment_send_email_and_webhook_without_secrets(
        smtp_server, webhook_server, certificate, tmp_path, monkeypatch):
    controller, sink = smtp_server
    url, received = webhook_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the test's CA, as a private relay would
    secrets = load_secrets({
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port), "SMTP_USER": "alerts", "SMTP_PASSWORD": PASSWORD,
        "ALERT_EMAIL_TO": "trader@example.test, ops@example.test", "ALERT_EMAIL_FROM": "catalyst@example.test",
        "ALERT_WEBHOOK_URL": f"{url}/hooks/catalyst?token={TOKEN}",
    })
    clock = SimClock(T0)
    alerters = build_alerters(secrets, clock)
    assert [type(a.channel).__name__ for a in alerters] == ["EmailChannel", "WebhookChannel"]
    n = notifier(tmp_path, clock, alerters)

    async def scenario():
        await n.send(Event(EventType.BUDGET, "LLM budget exhausted before the cycle",
                           f"today's LLM spend USD 5.0012 reached the budget (webhook {url}/hooks/catalyst?token={TOKEN})",
                           {"cycle_id": "hk_20261123_094500_abcdef"}))
        await n.close()

    clock.run(scenario())
    assert len(sink.messages) == 1 and sink.over_tls == [True]
    message = sink.messages[0]
    assert message["To"] == "trader@example.test, ops@example.test"
    assert message["Subject"] == "[Catalyst intl_claude] BUDGET: LLM budget exhausted before the cycle"
    assert len(received) == 1
    path, payload = received[0]
    assert path == f"/hooks/catalyst?token={TOKEN}"
    assert payload["event"]["type"] == "BUDGET" and payload["event"]["priority"] == "urgent"
    assert payload["event"]["data"]["cycle_id"] == "hk_20261123_094500_abcdef" and payload["count"] == 1
    for text in [*sink.raw, json.dumps(payload)]:
        assert PASSWORD not in text and TOKEN not in text


def test_starttls_is_required_a_plain_server_gets_no_mail_and_no_password(plain_smtp_server, tmp_path):
    controller, sink = plain_smtp_server
    clock = SimClock(T0)
    channel = EmailChannel("127.0.0.1", controller.port, "catalyst@example.test", ("trader@example.test",),
                           user="alerts", password=PASSWORD)
    alerter = ThrottledAlerter(channel, clock)

    async def scenario():
        await notifier(tmp_path, clock, [alerter]).send(Event(EventType.RUN_FAILED, "Broker unreachable", "OpenD down"))
        await alerter.close()

    clock.run(scenario())
    assert sink.messages == [] and sink.logins == []
    assert alerter.failed == 1 and alerter.sent == 0


def test_which_events_go_out_of_band(webhook_server, tmp_path):
    url, received = webhook_server
    clock = SimClock(T0)
    n = notifier(tmp_path, clock, [ThrottledAlerter(WebhookChannel(url), clock, window_seconds=0)])
    kinds = [
        Event(EventType.ENTRY, "ENTRY", ""), Event(EventType.EXIT, "EXIT", ""), Event(EventType.SIGNAL, "SIGNAL", ""),
        Event(EventType.RISK_WARNING, "daily loss -1.6%", ""), Event(EventType.RECONCILE, "RECONCILE", ""),
        Event(EventType.NO_BACKSTOP, "NO_BACKSTOP", ""), Event(EventType.CYCLE_SUMMARY, "CYCLE", ""),
        Event(EventType.RISK_HALT, "halt", ""), Event(EventType.BUDGET, "budget", ""),
        Event(EventType.RUN_FAILED, "Claude refused the run: authentication_error", ""),
        Event(EventType.MONITOR_ERROR, "monitor error", ""),  # high for Big Bro, still alerted
        Event(EventType.RISK_WARNING, "send_alert critical", "", priority=Priority.URGENT),
    ]

    async def scenario():
        for event in kinds:
            await n.send(event)
            await clock.sleep(1)
        await n.close()

    clock.run(scenario())
    assert [p["event"]["subject"] for _, p in received] == [
        "halt", "budget", "Claude refused the run: authentication_error", "monitor error", "send_alert critical"]


def test_nothing_configured_means_no_alerters():
    assert build_alerters(load_secrets({}), SimClock(T0)) == []
    assert build_alerters(load_secrets({"SMTP_HOST": "mail.example.test"}), SimClock(T0)) == []  # no recipient


def test_a_trading_database_that_cannot_be_reached_is_still_alerted_and_kept_for_big_bro(
        webhook_server, tmp_path, capsys, restore_logging):
    import agent

    url, received = webhook_server
    code = agent.main(["--market", "us", "--force"], env={
        "DATABASE_URL": f"postgresql://catalyst:{PASSWORD}@127.0.0.1:{free_port()}/trading",
        "ALPACA_API_KEY": "PKTESTKEY123", "ALPACA_SECRET_KEY": "not-used-here-123",
        "ALERT_WEBHOOK_URL": f"{url}/hook?token={TOKEN}",
        "CATALYST_VAR_DIR": str(tmp_path / "var"), "CATALYST_LOG_DIR": str(tmp_path / "logs")})
    err = capsys.readouterr().err
    assert code == 1 and "cannot connect to the trading database at 127.0.0.1" in err
    assert [(p["event"]["type"], p["event"]["subject"]) for _, p in received] == [
        ("RUN_FAILED", "Trading database unreachable")]
    outbox = (tmp_path / "var" / "outbox-public_claude.jsonl").read_text()
    assert "Trading database unreachable" in outbox
    for text in (err, outbox, json.dumps([payload for _path, payload in received])):
        assert PASSWORD not in text and TOKEN not in text
