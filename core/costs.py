"""Token usage and its price in USD, exactly.

``Usage`` is read from the ``usage`` of an Anthropic response (an SDK object or a plain dict);
the cache fields may be absent or None and then count as 0. ``cost_usd`` prices it with the
profile's ``ModelSpec``: tokens x price per million tokens, summed over input, output, cache
write and cache read, in ``Decimal`` (no float anywhere, so per-call costs add up to the cent).

The real API counts ``input_tokens`` without the cached ones (total prompt = input + cache write
+ cache read), so the four counts are priced independently and never double-counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from config.settings import ModelSpec

TOKENS_PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "cache_write_tokens", "cache_read_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Usage.{name} must be a non-negative integer, got {value!r}")

    @classmethod
    def from_anthropic(cls, usage: Any) -> "Usage":
        """From ``response.usage`` (SDK ``Usage`` object) or the same thing as a mapping."""
        if usage is None:
            raise ValueError("the response carries no usage; cannot account for its cost")
        return cls(
            input_tokens=_field(usage, "input_tokens"),
            output_tokens=_field(usage, "output_tokens"),
            cache_write_tokens=_field(usage, "cache_creation_input_tokens"),
            cache_read_tokens=_field(usage, "cache_read_input_tokens"),
        )

    def __add__(self, other: "Usage") -> "Usage":
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
        )


def _field(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)
    return int(value or 0)


def cost_usd(usage: Usage, spec: ModelSpec) -> Decimal:
    """What ``usage`` costs on model ``spec``, in USD, exact."""
    priced = (
        usage.input_tokens * spec.input_per_mtok
        + usage.output_tokens * spec.output_per_mtok
        + usage.cache_write_tokens * spec.cache_write_per_mtok
        + usage.cache_read_tokens * spec.cache_read_per_mtok
    )
    return priced / TOKENS_PER_MILLION
