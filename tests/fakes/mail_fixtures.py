"""Real SMTP servers on 127.0.0.1 (aiosmtpd) for the alert tests: one that insists on STARTTLS and
AUTH, one that would take a password in the clear. Each records what it received."""
from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.fakes import free_port

PASSWORD = "smtp-pw-Zq81!x"             # the password the servers accept for the login "alerts"


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
