"""HTTP for the SDKs that build a ``requests`` session of their own (alpaca-py's clients)."""
from __future__ import annotations

import requests


class TimeoutSession(requests.Session):
    """A session whose every request has a timeout (alpaca-py's sets none, so a silent server hangs it)."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__()
        self.timeout_seconds = timeout_seconds

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", self.timeout_seconds)
        return super().request(method, url, **kwargs)
