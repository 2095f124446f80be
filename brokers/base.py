"""The broker contract: what every venue (paper, Moomoo, Alpaca) offers the agent.

Plain typed values in, plain typed values out. Prices are ``Decimal`` on the tick grid,
quantities are integers, sides are enums, symbols are canonical. Bars are pandas frames of
floats (indicators work on them); anything that becomes an order goes back through
``instruments.round_to_tick`` first.

Rules every implementation keeps:
* ``place_order`` is idempotent on ``client_order_id``: a second request with the same id
  returns the existing order instead of placing another one.
* Nothing returned describes the future: bars are only those closed by the clock's now, quotes
  are the latest at or before now.
* Errors are ``BrokerError`` subclasses whose message a person can act on.
* Callbacks registered with ``subscribe_*`` are called on the event loop's thread.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable, Protocol, Sequence

import pandas as pd

from core.instruments import OrderSide, PositionSide, Symbol

BAR_COLUMNS = ["open", "high", "low", "close", "volume"]


class Timeframe(str, enum.Enum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    D1 = "1d"

    @property
    def minutes(self) -> int:
        return {"1m": 1, "5m": 5, "15m": 15, "1h": 60, "1d": 1440}[self.value]


class OrderType(str, enum.Enum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


class OrderStatus(str, enum.Enum):
    SUBMITTED = "submitted"          # accepted, working, nothing filled yet
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"          # may carry a partial fill (filled_quantity > 0)
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in (OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


class OrderPurpose(str, enum.Enum):
    ENTRY = "entry"
    EXIT = "exit"
    BACKSTOP_STOP = "stop_loss"
    BACKSTOP_TARGET = "take_profit"


@dataclass(frozen=True)
class Capabilities:
    supports_stop_orders: bool
    supports_bracket: bool
    supports_quote_push: bool
    supports_order_push: bool
    is_paper: bool
    name: str


@dataclass(frozen=True)
class Quote:
    symbol: Symbol
    time: datetime
    price: Decimal
    bid: Decimal
    ask: Decimal
    volume: int                     # session volume so far
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    prev_close: Decimal | None = None


@dataclass(frozen=True)
class Snapshot:
    quote: Quote
    lot_size: int
    tick: Decimal
    name: str
    synthetic: bool = False         # generated data, not a listed security


@dataclass(frozen=True)
class OrderRequest:
    symbol: Symbol
    side: OrderSide
    quantity: int
    order_type: OrderType
    client_order_id: str
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    purpose: OrderPurpose = OrderPurpose.ENTRY
    # Bracket legs (only where ``supports_bracket``): the broker holds them until the parent fills.
    take_profit_price: Decimal | None = None
    stop_loss_price: Decimal | None = None


@dataclass(frozen=True)
class Order:
    broker_order_id: str
    client_order_id: str
    symbol: Symbol
    side: OrderSide
    order_type: OrderType
    quantity: int
    status: OrderStatus
    filled_quantity: int = 0
    avg_fill_price: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    fees: Decimal = Decimal(0)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    reject_reason: str | None = None
    purpose: OrderPurpose = OrderPurpose.ENTRY
    parent_order_id: str | None = None
    legs: tuple["Order", ...] = ()

    @property
    def remaining(self) -> int:
        return self.quantity - self.filled_quantity

    def with_(self, **changes) -> "Order":
        return replace(self, **changes)


@dataclass(frozen=True)
class Fill:
    broker_order_id: str
    symbol: Symbol
    side: OrderSide
    quantity: int
    price: Decimal
    time: datetime
    fees: Decimal = Decimal(0)
    fill_id: str = ""


@dataclass(frozen=True)
class BrokerPosition:
    symbol: Symbol
    side: PositionSide
    quantity: int
    avg_cost: Decimal
    market_price: Decimal | None = None


@dataclass(frozen=True)
class HistoryQuota:
    """A broker's allowance of codes whose history may be downloaded (Moomoo: per 30 days).

    ``counted`` are the codes already downloaded in the current period: asking them again costs nothing."""
    used: int
    remaining: int
    counted: frozenset[Symbol] = frozenset()


@dataclass(frozen=True)
class Account:
    cash: Decimal
    equity: Decimal
    currency: str
    buying_power: Decimal | None = None


# --- Errors -----------------------------------------------------------------------------------
class BrokerError(Exception):
    """Base of every broker failure; the message says what failed and what to do."""


class OrderRejected(BrokerError):
    pass


class InsufficientFunds(OrderRejected):
    pass


class RateLimited(BrokerError):
    def __init__(self, message: str, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class Disconnected(BrokerError):
    pass


class UnknownSymbol(BrokerError):
    pass


class FeedNotPermitted(BrokerError):
    """The account's market-data subscription does not cover the feed asked for."""


class MarketClosed(OrderRejected):
    pass


class Subscription(Protocol):
    def close(self) -> None: ...


@dataclass
class CallbackSubscription:
    """A subscription that stops calling back once closed."""

    _on_close: Callable[[], None] = field(default=lambda: None)
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_close()


class Broker(Protocol):
    @property
    def capabilities(self) -> Capabilities: ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def snapshots(self, symbols: Sequence[Symbol]) -> dict[Symbol, Snapshot]:
        """Latest quote plus board lot and tick; raises ``UnknownSymbol`` naming what is unknown."""

    async def bars(self, symbol: Symbol, timeframe: Timeframe, start: datetime, end: datetime) -> pd.DataFrame:
        """Closed bars with open time in [start, end), UTC index, columns ``BAR_COLUMNS``."""

    async def history_quota(self) -> HistoryQuota | None:
        """How many more codes' history may be downloaded; None where the broker counts none."""
        return None

    async def place_order(self, request: OrderRequest) -> Order: ...

    async def cancel_order(self, broker_order_id: str) -> Order: ...

    async def get_order(self, broker_order_id: str) -> Order: ...

    async def find_order(self, client_order_id: str) -> Order | None:
        """The order placed with this client order id, in any state, or None."""

    async def list_orders(self, open_only: bool = True, symbol: Symbol | None = None) -> list[Order]: ...

    async def positions(self) -> list[BrokerPosition]: ...

    async def account(self) -> Account: ...

    async def fills(self, since: datetime, symbol: Symbol | None = None) -> list[Fill]:
        """Executions since ``since`` (deal history), oldest first."""

    def subscribe_quotes(self, symbols: Sequence[Symbol], on_quote: Callable[[Quote], None]) -> Subscription: ...

    def subscribe_orders(self, on_order: Callable[[Order], None]) -> Subscription: ...
