"""Logging: ``logs/agent.log`` rotated daily (30 kept), one line per event, secrets redacted."""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Iterable, Iterator

from core.redaction import Redactor

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    """Replaces every known secret value, and anything shaped like a credential (an API key, a bearer
    token, a credential header, a password in a URL: ``core.redaction``), with ***."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def redact(self, text: str) -> str:
        return self._redactor.redact(text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class LogFileHandler(logging.handlers.TimedRotatingFileHandler):
    """The log file. A record it cannot write (a full disk, the file gone) is said once, in one line on
    stderr, and the run goes on: trading never waits on its log. Later records are tried again."""

    _said = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self._said:
            return
        self._said = True
        exc = sys.exc_info()[1]
        why = f"{type(exc).__name__}: {exc}" if exc else "unknown error"
        sys.stderr.write(f"logging: cannot write {self.baseFilename} ({why}); the run goes on without its log file\n")


def setup_logging(log_dir: Path, secrets: Iterable[str], level: int = logging.INFO, console: bool = False) -> RedactSecrets:
    log_dir.mkdir(parents=True, exist_ok=True)
    redactor = RedactSecrets(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = LogFileHandler(
        log_dir / "agent.log", when="midnight", backupCount=30, utc=True, encoding="utf-8"
    )
    file_handler.setFormatter(logging.Formatter(_FORMAT))
    file_handler.addFilter(redactor)
    root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        stream.addFilter(redactor)
        stream.setLevel(logging.WARNING)
        root.addHandler(stream)
    # One line per event a person cares about: libraries speak only when something is wrong
    # (pgserver logs every initdb/pg_ctl output, several lines each, at INFO).
    for noisy in ("asyncio", "httpx", "httpx2", "httpcore", "httpcore2", "anthropic", "urllib3", "websockets", "matplotlib",
                  "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor


def current_log_file() -> str:
    """Where this process logs (the file of the handler set up above), for the one-line messages."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.TimedRotatingFileHandler):
            return handler.baseFilename
    return "logs/agent.log"


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """The root logger as it was before the block: a run in this process (``agent.main``) points it at
    the run's log file, which may be in a folder that is gone afterwards (tests, benches)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
