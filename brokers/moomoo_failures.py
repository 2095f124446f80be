"""What OpenD's failure messages mean: transient (retried) or final, and which ``BrokerError`` they become."""
from __future__ import annotations

import enum

from brokers.base import (
    BrokerError,
    Disconnected,
    InsufficientFunds,
    OrderRejected,
    OrderRequest,
    RateLimited,
    UnknownSymbol,
)


class Transient(enum.Enum):
    DISCONNECT = "disconnect"
    RATE_LIMIT = "rate_limit"


_RATE_HINTS = ("frequen", "too many", "too fast", "rate limit", "频率", "频繁")
_DISCONNECT_HINTS = ("connect timeout", "connection", "not connected", "context status bad", "disconnect",
                     "timeout", "sendfail", "network", "not ready")
_FUNDS_HINTS = ("insufficient", "not enough", "buying power", "资金不足", "购买力")
_UNKNOWN_HINTS = ("unknown stock", "unknown code", "unknown security", "not exist", "invalid code", "未知")


def classify_failure(message: str) -> Transient | None:
    """Whether an OpenD failure message is transient (and of which kind) or final."""
    text = str(message).lower()
    if any(h in text for h in _RATE_HINTS):
        return Transient.RATE_LIMIT
    if any(h in text for h in _DISCONNECT_HINTS):
        return Transient.DISCONNECT
    return None


class SdkFailure(Exception):
    """An SDK call answered ``ret != RET_OK``; ``message`` is already scrubbed of the trade password."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = classify_failure(message)

    @property
    def transient(self) -> bool:
        return self.kind is not None


def broker_error(what: str, failure: SdkFailure, address: str) -> BrokerError:
    if failure.kind is Transient.RATE_LIMIT:
        return RateLimited(f"Moomoo {what}: OpenD says the request rate is too high ({failure.message}); "
                           "wait and try again")
    if failure.kind is Transient.DISCONNECT:
        return Disconnected(f"Moomoo {what}: no answer from OpenD at {address} ({failure.message}); "
                            "is OpenD running and logged in?")
    text = failure.message.lower()
    if any(h in text for h in _UNKNOWN_HINTS):
        return UnknownSymbol(f"Moomoo {what}: {failure.message}")
    return BrokerError(f"Moomoo {what} failed: {failure.message}")


def rejection(request: OrderRequest, message: str) -> OrderRejected:
    text = f"Moomoo rejected order {request.client_order_id} ({request.side.value} {request.quantity} " \
           f"{request.symbol}): {message}"
    if any(h in message.lower() for h in _FUNDS_HINTS):
        return InsufficientFunds(text)
    return OrderRejected(text)
