"""Secrets out of text: the configured values, and what looks like a credential whatever its value.

An error text can carry a credential the agent never configured, or not in the form it configured it:
a gateway that echoes the request headers (``Authorization: Bearer ...``, ``x-api-key: ...``), a
broker's ``APCA-API-SECRET-KEY``, a database URL with its password. ``SECRET_SHAPES`` blanks those by
their shape; ``Redactor`` adds the configured values.
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterable

MASK = "***"

# Header and field names whose value is a credential, in any of the forms an echo writes them:
# ``Authorization: x``, ``'x-api-key': 'x'``, ``"apca-api-secret-key": "x"``, ``ALPACA_SECRET_KEY=x``.
_CREDENTIAL_NAMES = (r"(?:proxy-)?authorization|x-api-key|api[-_]?key|apca-api-secret-key|apca-api-key-id"
                     r"|secret[-_]?key|access[-_]?token|auth[-_]?token|x-auth-token|password|passwd|pwd")
_VALUE = r"[^\s\"'\\,;&})\]]+"

# (pattern, replacement), applied in order: a scheme's token before the header that names it, so that
# ``Authorization: Bearer x`` loses ``x`` and not only the word ``Bearer``.
SECRET_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"sk-ant-[A-Za-z0-9_\-]{8,}"), MASK),                                  # Anthropic keys
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 " + MASK),          # Authorization: Bearer x
    (re.compile(r"(?i)\b(basic)\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}=*"), r"\1 " + MASK),
    (re.compile(rf"(?i)(?<![A-Za-z0-9])({_CREDENTIAL_NAMES})(\\?[\"']?\s*[:=]\s*\\?[\"']?)(?!\*\*\*|(?i:bearer|basic) \*\*\*){_VALUE}"),
     r"\1\2" + MASK),
    (re.compile(r"\b[PA]K[A-Z0-9]{16,}\b"), MASK),                                      # Alpaca key ids
    (re.compile(r"(?<=://)([^/\s:@]+):[^/\s@]+@"), r"\1:" + MASK + "@"),              # user:password@ in URLs
    (re.compile(r"(?<=[?&])(key|token|password)=[^&\s\"']+"), r"\1=" + MASK),          # ?token=x in URLs
)


def blank_secret_shapes(text: str) -> str:
    for pattern, replacement in SECRET_SHAPES:
        text = pattern.sub(replacement, text)
    return text


class Redactor:
    """Blanks every configured secret value and every secret shape (``SECRET_SHAPES``) in a text.

    ``whole_words_below``: configured values shorter than this are blanked only as a whole word (not
    inside a longer run of letters, digits, ``_``, ``.`` or ``-``). The store uses it so that a short
    secret (a six-digit trade PIN) can never change an identifier or a number it writes: a cycle id
    holds the time as six digits, and the agent looks its rows up again by that id.
    """

    def __init__(self, secrets: Iterable[str], whole_words_below: int = 0) -> None:
        values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        forms = {form for value in values for form in (value, json.dumps(value)[1:-1])}  # as-is, and inside JSON
        self._anywhere = sorted((f for f in forms if len(f) >= whole_words_below), key=len, reverse=True)
        words = sorted((f for f in forms if len(f) < whole_words_below), key=len, reverse=True)
        self._words = (re.compile(r"(?<![\w.\-])(?:" + "|".join(map(re.escape, words)) + r")(?![\w.\-])")
                       if words else None)

    def redact(self, text: str) -> str:
        for secret in self._anywhere:
            text = text.replace(secret, MASK)
        if self._words is not None:
            text = self._words.sub(MASK, text)
        return blank_secret_shapes(text)

    def redact_value(self, value: Any) -> Any:
        """Every string in ``value`` (a string, or lists, tuples and dicts of them, keys included) redacted;
        numbers and everything else as they are, so that JSON stays JSON."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact_value(k): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.redact_value(v) for v in value)
        return value
