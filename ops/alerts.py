"""Out-of-band alerts: urgent events by email and/or webhook, rate-limited, secrets redacted.

``build_alerters(secrets, clock)`` returns one alerter per configured channel (none when nothing
is configured); the notifier hands them the events a person must hear of at once
(``consciousness_notify.ALERT_EVENT_TYPES``: risk halt, budget exhausted, run failed (broker
unreachable, model authentication or credit error), monitor error; and anything sent urgent).

* Email: SMTP on ``SMTP_HOST``/``SMTP_PORT`` (587 by default) with STARTTLS required: a server that
  does not offer it gets no mail and no password. Port 465 uses implicit TLS instead. The
  certificate is verified against the system's CAs (``SSL_CERT_FILE`` names another bundle).
  ``SMTP_USER``/``SMTP_PASSWORD`` log in after TLS is up. From ``ALERT_EMAIL_FROM`` (or the SMTP
  user) to ``ALERT_EMAIL_TO`` (comma-separated).
* Webhook: ``ALERT_WEBHOOK_URL`` receives a JSON POST (shape in ``webhook_payload``).
* Storms: the first alert goes at once; later ones within ``window_seconds`` (10 minutes) are
  counted and go as one summary when the window ends (or at the end of the run), which opens the
  next window: at most one message per window per channel, and none is lost.
* Sending happens in a thread (``smtplib``, ``urllib``) inside ``external_io``, as a background
  task: a slow mail server never holds up a monitor. Failures are logged (type only), never raised.
* Every text is redacted (every secret value, key-like strings) before it leaves the process;
  the webhook URL itself (which may hold a token) is never logged.
"""
from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Callable, Protocol

from core.clock import Clock, external_io
from consciousness_notify import Event
from store.bigbro import json_default

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 600.0
SEND_TIMEOUT_SECONDS = 15.0
MAX_LISTED = 50  # events listed one per line in a summary; the count covers the rest


@dataclass(frozen=True)
class Alert:
    """What one email or webhook call carries: an event, a summary of held events, or both."""

    agent: str
    at: datetime
    event: Event | None
    held: tuple[tuple[datetime, Event], ...] = ()

    @property
    def count(self) -> int:
        return len(self.held) + (1 if self.event is not None else 0)

    @property
    def subject(self) -> str:
        if self.event is not None:
            more = f" (+{len(self.held)} more since the last alert)" if self.held else ""
            return f"[Catalyst {self.agent}] {self.event.type.value}: {self.event.subject}{more}"
        first = self.held[0][0]
        kinds = sorted({e.type.value for _, e in self.held})
        return (f"[Catalyst {self.agent}] {len(self.held)} more urgent event(s) since "
                f"{first:%Y-%m-%d %H:%M} UTC: {', '.join(kinds)}")

    @property
    def text(self) -> str:
        lines: list[str] = []
        if self.event is not None:
            e = self.event
            lines += [f"{e.type.value} ({e.effective_priority.value}) at {self.at:%Y-%m-%d %H:%M:%S} UTC", "",
                      e.subject, "", e.body, "", "data: " + json.dumps(e.data, default=json_default, sort_keys=True)]
        if self.held:
            lines += ["", f"{len(self.held)} more urgent event(s) were held back by the rate limit:"]
            for at, e in self.held[:MAX_LISTED]:
                lines.append(f"  {at:%H:%M:%S} {e.type.value}: {e.subject}")
            if len(self.held) > MAX_LISTED:
                lines.append(f"  ... and {len(self.held) - MAX_LISTED} more")
        lines += ["", "Details: claude_messages (to big_bro) and logs/agent.log on the agent's server."]
        return "\n".join(lines)


def webhook_payload(alert: Alert) -> dict[str, Any]:
    """``{agent, at, count, subject, text, event: {type, priority, subject, body, data} | null,
    held: [{at, type, subject}]}``"""
    e = alert.event
    return {
        "agent": alert.agent, "at": alert.at.isoformat(), "count": alert.count, "subject": alert.subject,
        "text": alert.text,
        "event": None if e is None else {"type": e.type.value, "priority": e.effective_priority.value,
                                         "subject": e.subject, "body": e.body, "data": e.data},
        "held": [{"at": at.isoformat(), "type": ev.type.value, "subject": ev.subject} for at, ev in alert.held],
    }


class Channel(Protocol):
    name: str

    def send(self, subject: str, text: str, payload: dict[str, Any]) -> None:
        """Deliver one message (blocking; runs in a thread) or raise."""


@dataclass
class EmailChannel:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None
    timeout: float = SEND_TIMEOUT_SECONDS
    name: str = "email"

    def send(self, subject: str, text: str, payload: dict[str, Any]) -> None:
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message.set_content(text)
        self.send_message(message)

    def send_message(self, message: EmailMessage) -> None:
        """Deliver a message built elsewhere (the daily report's HTML); From and To are this channel's."""
        for header, value in (("From", self.sender), ("To", ", ".join(self.recipients))):
            if header not in message:
                message[header] = value
        context = self.ssl_context or ssl.create_default_context()
        if self.port == 465:
            with smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context) as smtp:
                self._deliver(smtp, message)
            return
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.ehlo()
            smtp.starttls(context=context)  # required: raises SMTPNotSupportedError when not offered
            smtp.ehlo()
            self._deliver(smtp, message)

    def _deliver(self, smtp: smtplib.SMTP, message: EmailMessage) -> None:
        if self.user:
            smtp.login(self.user, self.password or "")
        smtp.send_message(message)


@dataclass
class WebhookChannel:
    url: str
    timeout: float = SEND_TIMEOUT_SECONDS
    name: str = "webhook"

    def send(self, subject: str, text: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, default=json_default).encode()
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "catalyst-alerts"})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - configured URL
            if not 200 <= response.status < 300:
                raise RuntimeError(f"webhook answered HTTP {response.status}")


class ThrottledAlerter:
    """One channel behind a rate limit: the first alert at once, a storm as one summary per window."""

    def __init__(self, channel: Channel, clock: Clock, redact: Callable[[str], str] = lambda s: s,
                 window_seconds: float = DEFAULT_WINDOW_SECONDS) -> None:
        self.channel = channel
        self.clock = clock
        self.redact = redact
        self.window_seconds = window_seconds
        self.sent = 0       # messages the channel accepted
        self.failed = 0
        self._window_end: datetime | None = None
        self._held: list[tuple[datetime, Event]] = []
        self._timer: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    async def alert(self, event: Event, at: datetime) -> None:
        if self._window_end is not None and at < self._window_end:
            self._held.append((at, event))
            if self._timer is None or self._timer.done():
                self._timer = asyncio.get_running_loop().create_task(self._summary_at(self._window_end),
                                                                      name=f"alert-summary-{self.channel.name}")
            return
        held, self._held = tuple(self._held), []
        self._cancel_timer()
        self._window_end = at + timedelta(seconds=self.window_seconds)
        self._dispatch(Alert(str(event.data.get("agent", "agent")), at, event, held))

    async def _summary_at(self, when: datetime) -> None:
        await self.clock.sleep_until(when)
        self._timer = None
        self._send_held()

    def _send_held(self) -> None:
        if not self._held:
            return
        held, self._held = tuple(self._held), []
        now = self.clock.now()
        self._window_end = now + timedelta(seconds=self.window_seconds)
        self._dispatch(Alert(str(held[0][1].data.get("agent", "agent")), now, None, held))

    def _cancel_timer(self) -> None:
        if self._timer is not None and not self._timer.done():
            self._timer.cancel()
        self._timer = None

    def _dispatch(self, alert: Alert) -> None:
        subject = self.redact(alert.subject).replace("\n", " ")[:300]
        text = self.redact(alert.text)
        payload = json.loads(self.redact(json.dumps(webhook_payload(alert), default=json_default)))
        task = asyncio.get_running_loop().create_task(self._send(subject, text, payload, alert.count),
                                                      name=f"alert-{self.channel.name}")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, subject: str, text: str, payload: dict[str, Any], count: int) -> None:
        try:
            with external_io():
                await asyncio.to_thread(self.channel.send, subject, text, payload)
            self.sent += 1
            log.info("alert sent by %s: %s", self.channel.name, subject)
        except Exception as exc:  # noqa: BLE001 - an alert must never stop trading
            self.failed += 1
            log.warning("alert by %s failed (%s: %s); %d event(s) not delivered out of band", self.channel.name,
                        type(exc).__name__, self.redact(str(exc))[:200], count)

    async def close(self) -> None:
        """End of the run: send what is held now, and wait for the sends in flight."""
        self._cancel_timer()
        self._send_held()
        if self._sending:
            await asyncio.gather(*list(self._sending), return_exceptions=True)


def build_alerters(secrets, clock: Clock, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> list[ThrottledAlerter]:
    """An alerter per configured channel (email when SMTP_HOST and ALERT_EMAIL_TO are set, webhook when
    ALERT_WEBHOOK_URL is set); an empty list when none is."""
    from ops.logsetup import RedactSecrets

    redact = RedactSecrets(secrets.secret_values()).redact
    alerters: list[ThrottledAlerter] = []
    channel = email_channel(secrets)
    if channel is not None:
        alerters.append(ThrottledAlerter(channel, clock, redact, window_seconds))
    elif secrets.smtp_host:
        log.warning("SMTP_HOST is set but ALERT_EMAIL_TO is empty: no alert emails")
    if secrets.alert_webhook_url and secrets.alert_webhook_url.get_secret_value():
        alerters.append(ThrottledAlerter(WebhookChannel(secrets.alert_webhook_url.get_secret_value()), clock, redact,
                                         window_seconds))
    return alerters


def email_channel(secrets) -> EmailChannel | None:
    """The configured email (SMTP_HOST and ALERT_EMAIL_TO set), or None."""
    recipients = tuple(a.strip() for a in (secrets.alert_email_to or "").split(",") if a.strip())
    if not (secrets.smtp_host and recipients):
        return None
    sender = secrets.alert_email_from or secrets.smtp_user or recipients[0]
    password = secrets.smtp_password.get_secret_value() if secrets.smtp_password else None
    return EmailChannel(secrets.smtp_host, secrets.smtp_port or 587, sender, recipients,
                        user=secrets.smtp_user or None, password=password)
