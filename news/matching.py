"""Which symbols a headline is about: by exchange code and by company name (pure)."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterable, Sequence

from core.instruments import Market, Symbol

# Words a broker's security name carries that headlines leave out ("Apple Inc. Common Stock" is
# "Apple" in a headline; "Alibaba Group Holding Ltd -SW" is "Alibaba").
_NAME_NOISE = re.compile(
    r"(?:\b(?:inc|incorporated|corp|corporation|co|company|ltd|limited|plc|holdings?|group|class [a-z]|"
    r"common stock|ordinary shares?|ads|adr|sa|ag|nv|se|the)\b\.?|-[a-z]{1,3}\b|[,.()])",
    re.IGNORECASE,
)
# A name shorter than this matches too much ordinary text to be trusted alone.
MIN_NAME_CHARS = 3
_US_EXCHANGES = r"(?:NYSE|NASDAQ|Nasdaq|NYSEARCA|NYSE American|AMEX|BATS)"


def core_name(name: str) -> str:
    """The part of a security name that headlines use: legal and class words removed."""
    core = _NAME_NOISE.sub(" ", name)
    return re.sub(r"\s+", " ", core).strip()


@lru_cache(maxsize=4096)
def code_pattern(symbol: Symbol) -> re.Pattern[str]:
    """How a headline writes the symbol's code.

    HK: ``0700.HK``, ``HK.00700``, ``(0700)``, ``(700)``, ``00700``, ``stock code: 700``; a bare
    ``700`` is a number, not a code. US: the ticker in capitals as a word (``AAPL``, ``$AAPL``,
    ``(NASDAQ: AAPL)``); a ticker of one or two letters only with ``$`` or an exchange.
    """
    if symbol.market is Market.HK:
        n = str(int(symbol.code))
        forms = [
            rf"(?<![\d.])0*{n}\.HK\b",
            rf"\bHK\.?0*{n}(?!\d)",
            rf"\(0*{n}(?:\.HK)?\)",
            rf"(?<![\d.])0+{n}(?!\d)",
            rf"(?:HKEX|SEHK|[Ss]tock [Cc]ode)\s*:?\s*0*{n}(?!\d)",
        ]
        return re.compile("|".join(forms))
    ticker = re.escape(symbol.code.upper())
    forms = [rf"\${ticker}(?![A-Za-z0-9])", rf"{_US_EXCHANGES}\s*:\s*{ticker}(?![A-Za-z0-9])"]
    if len(symbol.code) > 2:
        forms.append(rf"(?<![A-Za-z0-9$.]){ticker}(?![A-Za-z0-9])")
    return re.compile("|".join(forms))


@lru_cache(maxsize=4096)
def _name_pattern(name: str) -> re.Pattern[str] | None:
    if len(name) < MIN_NAME_CHARS:
        return None
    return re.compile(rf"(?<![\w]){re.escape(name)}(?![\w])", re.IGNORECASE)


def mentions(text: str, symbol: Symbol, names: Iterable[str] = ()) -> bool:
    """Whether ``text`` names ``symbol`` by its code or by one of ``names`` (broker name, aliases)."""
    if code_pattern(symbol).search(text):
        return True
    for name in names:
        pattern = _name_pattern(core_name(name))
        if pattern is not None and pattern.search(text):
            return True
    return False


def symbols_mentioned(text: str, candidates: Sequence[Symbol], names: dict[Symbol, tuple[str, ...]]) -> tuple[Symbol, ...]:
    return tuple(s for s in candidates if mentions(text, s, names.get(s, ())))
