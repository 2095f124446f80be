"""Out-of-band alerts as the trader receives them: a real SMTP server (aiosmtpd, STARTTLS with a
self-signed certificate made by the openssl CLI, AUTH) and a real HTTP server for the webhook, both
on 127.0.0.1; events go through the real Notifier on the simulated clock."""
from __future__ import annotations

import email
import email.policy
import http.server
import json
import socket
import ssl
import subprocess
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from alerts import EmailChannel, ThrottledAlerter, WebhookChannel, build_alerters
from clock import SimClock
from config.settings import load_secrets
from consciousness_notify import Event, EventType, Notifier, Priority
from logsetup import RedactSecrets
from tests.test_bigbro import restore_logging  # noqa: F401 - fixture

PASSWORD = "smtp-pw-Zq81!x"
TOKEN = "hook-token-7c1e55aa"
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


class MailSink:
    """What the SMTP server received: messages (parsed), whether each came over TLS, the logins."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.raw: list[str] = []
        self.over_tls: list[bool] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):
        self.raw.append(envelope.content.decode("utf-8", "replace"))
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        self.over_tls.append(session.ssl is not None)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        return AuthResult(success=(login, password) == ("alerts", PASSWORD))


@pytest.fixture
def smtp_server(certificate):
    """A STARTTLS-only SMTP server that requires AUTH (and AUTH only over TLS)."""
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), tls_context=tls, require_starttls=True,
                            auth_required=True, auth_require_tls=True, authenticator=sink.authenticate)
    controller.start()
    yield controller, sink
    controller.stop()


@pytest.fixture
def plain_smtp_server():
    """A server without STARTTLS that would even take a password in the clear."""
    sink = MailSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), auth_require_tls=False,
                            authenticator=sink.authenticate)
    controller.start()
    yield controller, sink
    controller.stop()


@pytest.fixture
def webhook_server():
    received: list[tuple[str, dict]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


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
