"""Moomoo / Futu OpenD: HK (and US) securities through ``moomoo-api``, behind the ``Broker`` contract.

Decisions, with their sources:

* Paper (``TrdEnv.SIMULATE``) accounts take only limit (``NORMAL``) and market orders (Futu OpenAPI
  trade definitions, OrderType: "Paper trade only supports limit orders (NORMAL) and market orders
  (MARKET)"; FAQ "How to use paper trading": "Order Types: limit order and market order"). So
  ``supports_stop_orders`` is False on SIMULATE and a stop order is refused here with that reason,
  before anything is sent. REAL securities accounts list STOP / STOP_LIMIT without a market
  restriction (trigger price in ``aux_price``), so REAL defaults to True.
* Paper trading has no deal data ("Paper trading does not support deals related operations": the
  real OpenD answers "Paper trading does not support deal data."). On SIMULATE, ``fills`` is built
  from the orders' filled quantity and average price, one aggregated fill per order.
* Rate limits (Futu): place / modify order at most 15 per 30 s per account and at least 0.02 s
  apart; market snapshots at most 60 per 30 s and 400 codes per call; historical K-lines 60 per 30 s.
  Client-side sliding windows wait on the injected clock, never ``time.sleep``.
* Futu stamps a minute K-line with its END time (the first HK bar is ``09:31:00``) in
  exchange-local time; ``bars`` converts to the bar's open time in UTC, as the contract asks.
* ``accinfo_query`` has no "today's P&L" fields; ``account`` reports cash, total assets and power
  only (daily P&L comes from our own fills and marks).
* ``import moomoo`` installs a SIGINT handler calling ``os._exit(0)`` and logs INFO to the
  console; both are undone when the SDK is first loaded, and its callback threads are made
  daemon threads so a context the SDK failed to close cannot keep the process alive.
* Every blocking SDK call runs in a worker thread inside ``external_io()``, so a simulated clock
  never moves while OpenD is working for us. The SDK's own connect wait is bounded by
  ``set_sync_query_connect_timeout``, so an absent OpenD fails fast instead of hanging.

The trade password is used only for ``unlock_trade`` on REAL accounts; it never enters a log line
or an error message (messages from OpenD are scrubbed of it as well).
"""
from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import logging
import math
import signal
import threading
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Sequence
from zoneinfo import ZoneInfo

import pandas as pd
from pydantic import SecretStr

from brokers.base import (
    BAR_COLUMNS,
    Account,
    BrokerError,
    BrokerPosition,
    CallbackSubscription,
    Capabilities,
    Disconnected,
    Fill,
    InsufficientFunds,
    Order,
    OrderPurpose,
    OrderRequest,
    OrderRejected,
    OrderStatus,
    OrderType,
    Quote,
    RateLimited,
    Snapshot,
    Subscription,
    Timeframe,
    UnknownSymbol,
)
from core.clock import Clock, external_io
from core.instruments import (
    Market,
    OrderSide,
    PositionSide,
    Symbol,
    check_lot_multiple,
    is_on_tick,
    parse_symbol,
    round_to_tick,
    tick_size,
    to_decimal,
)

log = logging.getLogger("catalyst.brokers.moomoo")

DEFAULT_PORT = 11111
SNAPSHOT_BATCH = 400                 # codes per get_market_snapshot call (Futu limit)
REMARK_MAX_BYTES = 64                # place_order remark limit (SDK check)
EXCHANGE_TZ = {Market.HK: ZoneInfo("Asia/Hong_Kong"), Market.US: ZoneInfo("America/New_York")}
# A daily bar is final after the closing auction (HK CAS ends 16:10) / the close (US).
DAY_BAR_FINAL = {Market.HK: time(16, 10), Market.US: time(16, 0)}
_KTYPES = {Timeframe.M1: "K_1M", Timeframe.M5: "K_5M", Timeframe.M15: "K_15M", Timeframe.H1: "K_60M",
           Timeframe.D1: "K_DAY"}
_SDK_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


class TradingEnvironment(str, enum.Enum):
    SIMULATE = "SIMULATE"
    REAL = "REAL"


# --- Status and side vocabulary --------------------------------------------------------------
_WORKING = {"UNSUBMITTED", "WAITING_SUBMIT", "SUBMITTING", "SUBMITTED", "TIMEOUT", "CANCELLING_ALL",
            "CANCELLING_PART", "FILLED_PART", "N/A", "NONE"}
_STATUS_MAP = {
    "FILLED_ALL": OrderStatus.FILLED,
    "CANCELLED_ALL": OrderStatus.CANCELLED,
    "CANCELLED_PART": OrderStatus.CANCELLED,
    "SUBMIT_FAILED": OrderStatus.REJECTED,
    "FAILED": OrderStatus.REJECTED,
    "DISABLED": OrderStatus.REJECTED,
    "DELETED": OrderStatus.REJECTED,
    "FILL_CANCELLED": OrderStatus.REJECTED,
}
OPEN_SDK_STATUSES = ["UNSUBMITTED", "WAITING_SUBMIT", "SUBMITTING", "SUBMITTED", "FILLED_PART",
                     "CANCELLING_PART", "CANCELLING_ALL", "TIMEOUT"]
_BUY_SIDES = {"BUY", "BUY_BACK"}
_SELL_SIDES = {"SELL", "SELL_SHORT"}


def map_order_status(sdk_status: str, filled_quantity: int) -> OrderStatus:
    """Moomoo's order status (a ``moomoo.OrderStatus`` string) in the contract's vocabulary.

    Working states are SUBMITTED, or PARTIALLY_FILLED once something filled. Cancelled orders keep
    their filled quantity (CANCELLED_PART is CANCELLED with a fill). An order disabled after a
    partial fill is reported CANCELLED so the fill is not lost; failed, deleted and reversed orders
    are REJECTED.
    """
    status = str(sdk_status).upper()
    if status in _WORKING:
        return OrderStatus.PARTIALLY_FILLED if filled_quantity > 0 else OrderStatus.SUBMITTED
    mapped = _STATUS_MAP.get(status)
    if mapped is None:
        log.warning("unknown Moomoo order status %r; treating it as still working", sdk_status)
        return OrderStatus.PARTIALLY_FILLED if filled_quantity > 0 else OrderStatus.SUBMITTED
    if status == "DISABLED" and filled_quantity > 0:
        return OrderStatus.CANCELLED
    return mapped


def map_order_side(sdk_side: str) -> OrderSide:
    side = str(sdk_side).upper()
    if side in _BUY_SIDES:
        return OrderSide.BUY
    if side in _SELL_SIDES:
        return OrderSide.SELL
    raise BrokerError(f"Moomoo reported an order side this agent does not know: {sdk_side!r}")


def map_position_side(sdk_side: str, quantity: float) -> PositionSide:
    side = str(sdk_side).upper()
    if side == "LONG":
        return PositionSide.LONG
    if side == "SHORT":
        return PositionSide.SHORT
    return PositionSide.SHORT if quantity < 0 else PositionSide.LONG


# --- Client-side rate limits -----------------------------------------------------------------
@dataclass(frozen=True)
class RateLimit:
    max_calls: int
    window_seconds: float
    min_interval_seconds: float = 0.0
    # Requests reach OpenD a little after we stamp them; keep a margin so its window agrees.
    safety_margin_seconds: float = 0.1


ORDER_RATE = RateLimit(15, 30.0, min_interval_seconds=0.02)
SNAPSHOT_RATE = RateLimit(60, 30.0)
HISTORY_RATE = RateLimit(60, 30.0)


class SlidingWindowLimiter:
    """At most ``max_calls`` per sliding ``window_seconds`` and ``min_interval_seconds`` apart.

    ``acquire()`` waits on the injected clock, so under a simulated clock it takes no wall time.
    """

    def __init__(self, limit: RateLimit, clock: Clock, name: str = "") -> None:
        self.limit = limit
        self._clock = clock
        self._name = name
        self._stamps: deque[float] = deque()
        self._lock = asyncio.Lock()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _wait_needed(self, now: float) -> float:
        window = self.limit.window_seconds
        while self._stamps and now - self._stamps[0] >= window + self.limit.safety_margin_seconds:
            self._stamps.popleft()
        waits = [0.0]
        if len(self._stamps) >= self.limit.max_calls:
            waits.append(self._stamps[0] + window + self.limit.safety_margin_seconds - now)
        if self._stamps and self.limit.min_interval_seconds:
            waits.append(self._stamps[-1] + self.limit.min_interval_seconds - now)
        return max(waits)

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._now()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._stamps.append(now)
                    return
                log.debug("throttling %s for %.3f s", self._name, wait)
                await self._clock.sleep(wait + 1e-4)


# --- The SDK, loaded once, with its side effects undone ----------------------------------------
def _restore_sigint(previous: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGINT)
    if getattr(current, "__name__", "") == "quit_handler" and "moomoo" in getattr(current, "__module__", ""):
        is_moomoo = getattr(previous, "__name__", "") == "quit_handler"
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None or is_moomoo else previous)


@functools.cache
def _sdk() -> SimpleNamespace:
    """Import moomoo (SIGINT handler restored, console logging at ERROR) and build our subclasses."""
    previous = signal.getsignal(signal.SIGINT)
    import moomoo
    from moomoo.common.ft_logger import logger as sdk_logger

    _restore_sigint(previous)
    sdk_logger.console_level = logging.ERROR
    logging.getLogger("FTFileLog").propagate = False   # the SDK keeps its own log files under $HOME
    # Its push-callback threads are non-daemon by default: one left by a context OpenD refused
    # would keep the agent's process alive after it is done.
    moomoo.SysConfig.set_all_thread_daemon(True)

    class _ReconnectAware:
        """Reconnect after ``reconnect_seconds`` (the SDK waits 6 s) and report reconnects."""

        def _catalyst_init(self, reconnect_seconds: float, on_reconnected: Callable[[], None]) -> None:
            self._catalyst_reconnect_seconds = reconnect_seconds
            self._catalyst_on_reconnected = on_reconnected
            self._catalyst_connected_once = False

        def _wait_reconnect(self, wait_reconnect_interval=None):
            # 0 is the immediate first connect; every other wait (after a drop, after a failed
            # attempt) is ours, not the SDK's fixed 6 s.
            if wait_reconnect_interval != 0:
                wait_reconnect_interval = self._catalyst_reconnect_seconds
            super()._wait_reconnect(wait_reconnect_interval)

        def on_api_socket_reconnected(self):
            result = super().on_api_socket_reconnected()
            if self._catalyst_connected_once:
                self._catalyst_on_reconnected()
            self._catalyst_connected_once = True
            return result

    class QuoteContext(_ReconnectAware, moomoo.OpenQuoteContext):
        def __init__(self, host: str, port: int, reconnect_seconds: float, on_reconnected: Callable[[], None]):
            self._catalyst_init(reconnect_seconds, on_reconnected)
            super().__init__(host=host, port=port, is_async_connect=True)
            self.reconnect_interval = reconnect_seconds

    class TradeContext(_ReconnectAware, moomoo.OpenSecTradeContext):
        """``OpenSecTradeContext`` has no ``is_async_connect``; its constructor would block until
        OpenD answers. The first connect is handed to the SDK's reconnect timer instead, which is
        exactly what ``is_async_connect=True`` does for quote contexts."""

        def __init__(self, market: str, host: str, port: int, security_firm: str, reconnect_seconds: float,
                     on_reconnected: Callable[[], None]):
            self._catalyst_init(reconnect_seconds, on_reconnected)
            self._catalyst_connect_async = True
            super().__init__(filter_trdmarket=market, host=host, port=port, security_firm=security_firm)
            self.reconnect_interval = reconnect_seconds

        def _init_connect_sync(self):
            if self._catalyst_connect_async:
                self._catalyst_connect_async = False
                self._wait_reconnect(0)
                return moomoo.RET_OK
            return super()._init_connect_sync()

    class QuoteHandler(moomoo.StockQuoteHandlerBase):
        def __init__(self, sink: Callable[[pd.DataFrame], None]):
            super().__init__()
            self._sink = sink

        def on_recv_rsp(self, rsp_pb):
            ret, data = super().on_recv_rsp(rsp_pb)
            if ret == moomoo.RET_OK:
                self._sink(data)
            return ret, data

    class OrderHandler(moomoo.TradeOrderHandlerBase):
        def __init__(self, sink: Callable[[pd.DataFrame], None]):
            super().__init__()
            self._sink = sink

        def on_recv_rsp(self, rsp_pb):
            ret, data = super().on_recv_rsp(rsp_pb)
            if ret == moomoo.RET_OK:
                self._sink(data)
            return ret, data

    return SimpleNamespace(mod=moomoo, QuoteContext=QuoteContext, TradeContext=TradeContext,
                           QuoteHandler=QuoteHandler, OrderHandler=OrderHandler)


# --- Failures: what is worth retrying ------------------------------------------------------------
class _Transient(enum.Enum):
    DISCONNECT = "disconnect"
    RATE_LIMIT = "rate_limit"


_RATE_HINTS = ("frequen", "too many", "too fast", "rate limit", "频率", "频繁")
_DISCONNECT_HINTS = ("connect timeout", "connection", "not connected", "context status bad", "disconnect",
                     "timeout", "sendfail", "network", "not ready")
_FUNDS_HINTS = ("insufficient", "not enough", "buying power", "资金不足", "购买力")
_UNKNOWN_HINTS = ("unknown stock", "unknown code", "unknown security", "not exist", "invalid code", "未知")


def classify_failure(message: str) -> _Transient | None:
    """Whether an OpenD failure message is transient (and of which kind) or final."""
    text = str(message).lower()
    if any(h in text for h in _RATE_HINTS):
        return _Transient.RATE_LIMIT
    if any(h in text for h in _DISCONNECT_HINTS):
        return _Transient.DISCONNECT
    return None


class _SdkFailure(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = classify_failure(message)


# --- Value conversions ---------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    """A float from an SDK cell, or None for the SDK's 'N/A' and NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _decimal(value: Any) -> Decimal | None:
    number = _number(value)
    return None if number is None else to_decimal(number)


def _quantity(value: Any) -> int:
    number = _number(value) or 0.0
    rounded = round(number)
    if abs(number - rounded) > 1e-6:
        raise BrokerError(f"Moomoo reported a fractional share quantity {number}; this agent trades whole shares")
    return int(rounded)


class MoomooBroker:
    """The ``Broker`` contract on a Moomoo OpenD gateway.

    ``live=True`` is required for the REAL environment (real money); the default is SIMULATE.
    ``quote_push=False`` makes the monitor poll snapshots instead of waiting for quote pushes (a run
    on a simulated clock: pushes arrive in real time, which simulated time cannot follow).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        clock: Clock,
        trd_env: TradingEnvironment | str = TradingEnvironment.SIMULATE,
        live: bool = False,
        trade_password: SecretStr | None = None,
        connect_timeout_seconds: float = 10.0,
        market: Market | str = Market.HK,
        security_firm: str | None = None,
        account_id: int | None = None,
        supports_stop_orders: bool | None = None,
        order_rate: RateLimit = ORDER_RATE,
        snapshot_rate: RateLimit = SNAPSHOT_RATE,
        history_rate: RateLimit = HISTORY_RATE,
        history_page_size: int = 1000,
        retry_attempts: int = 3,
        retry_base_seconds: float = 1.0,
        reconnect_seconds: float = 3.0,
        hk_phase2_date: date | None = None,
        quote_push: bool = True,
    ) -> None:
        self.trd_env = TradingEnvironment(str(getattr(trd_env, "value", trd_env)).upper())
        if self.trd_env is TradingEnvironment.REAL and not live:
            raise ValueError("Moomoo REAL trading (real money) needs live=True; use SIMULATE for paper trading")
        if connect_timeout_seconds <= 0:
            raise ValueError(f"connect_timeout_seconds must be positive, got {connect_timeout_seconds}")
        self.host, self.port = host, int(port)
        self.market = Market(str(getattr(market, "value", market)).upper())
        self.tz = EXCHANGE_TZ[self.market]
        self._clock = clock
        self._password = trade_password
        self._connect_timeout = float(connect_timeout_seconds)
        self._security_firm = security_firm
        self._account_id = account_id
        self._history_page_size = history_page_size
        self._retry_attempts = retry_attempts
        self._retry_base_seconds = retry_base_seconds
        self._reconnect_seconds = reconnect_seconds
        self._hk_phase2_date = hk_phase2_date
        stop_ok = self.trd_env is TradingEnvironment.REAL if supports_stop_orders is None else supports_stop_orders
        self._capabilities = Capabilities(
            supports_stop_orders=stop_ok, supports_bracket=False, supports_quote_push=quote_push,
            supports_order_push=True, is_paper=self.trd_env is TradingEnvironment.SIMULATE, name="moomoo",
        )
        self._order_limiter = SlidingWindowLimiter(order_rate, clock, "order placement")
        self._modify_limiter = SlidingWindowLimiter(order_rate, clock, "order modification")
        self._snapshot_limiter = SlidingWindowLimiter(snapshot_rate, clock, "market snapshots")
        self._history_limiter = SlidingWindowLimiter(history_rate, clock, "historical K-lines")
        self._quote_ctx: Any = None
        self._trade_ctx: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lot_sizes: dict[Symbol, int] = {}
        self._purposes: dict[str, OrderPurpose] = {}
        self._placement_locks: dict[str, asyncio.Lock] = {}
        self._quote_listeners: dict[int, tuple[frozenset[str], Callable[[Quote], None]]] = {}
        self._order_listeners: dict[int, Callable[[Order], None]] = {}
        self._listener_ids = itertools.count(1)
        self._subscribed: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self.reconnects = 0

    @classmethod
    def from_settings(cls, profile: Any, secrets: Any, clock: Clock, *, live: bool = False, **options: Any):
        """Build from the profile (market, tick table) and ``Secrets`` (MOOMOO_HOST, MOOMOO_PORT,
        MOOMOO_TRADE_PWD). ``live`` is the caller's decision (profile ``live: true`` AND ``--live``)."""
        options.setdefault("hk_phase2_date", profile.ticks.hk_phase2_date)
        return cls(
            secrets.moomoo_host or "127.0.0.1", secrets.moomoo_port or DEFAULT_PORT, clock=clock,
            trd_env=TradingEnvironment.REAL if live else TradingEnvironment.SIMULATE, live=live,
            trade_password=secrets.moomoo_trade_pwd, market=profile.market, **options,
        )

    def __repr__(self) -> str:
        return f"MoomooBroker({self.host}:{self.port}, {self.trd_env.value}, {self.market.value})"

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        if self._trade_ctx is not None:
            return
        self._loop = asyncio.get_running_loop()
        sdk = await self._in_thread(_sdk)
        try:
            self._quote_ctx = await self._in_thread(
                sdk.QuoteContext, self.host, self.port, self._reconnect_seconds, self._quote_reconnected)
            self._quote_ctx.set_sync_query_connect_timeout(self._connect_timeout)
            self._quote_ctx.set_handler(sdk.QuoteHandler(self._on_quote_frame))
            await self._check_gateway()
            self._trade_ctx = await self._in_thread(
                sdk.TradeContext, self.market.value, self.host, self.port,
                self._security_firm or sdk.mod.SecurityFirm.NONE, self._reconnect_seconds, self._trade_reconnected)
            self._trade_ctx.set_sync_query_connect_timeout(self._connect_timeout)
            self._trade_ctx.set_handler(sdk.OrderHandler(self._on_order_frame))
            self._account_id = await self._choose_account()
            if self.trd_env is TradingEnvironment.REAL:
                await self._unlock()
        except BaseException:
            await self.close()
            raise
        log.info("connected to Moomoo OpenD at %s: %s account %s (%s)", self.address, self.trd_env.value,
                 self._account_id, self.market.value)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        contexts = [ctx for ctx in (self._quote_ctx, self._trade_ctx) if ctx is not None]
        self._quote_ctx = self._trade_ctx = None
        self._subscribed.clear()
        for ctx in contexts:
            await self._in_thread(ctx.close)

    async def _check_gateway(self) -> None:
        state = await self._call_at_connect("connection check", self._quote_ctx.get_global_state)
        if not _truthy(state.get("qot_logined")):
            raise Disconnected(f"Moomoo OpenD at {self.address} is running but not logged in to quotes; "
                               "log in to OpenD (account and password in its configuration)")

    async def _call_at_connect(self, what: str, fn: Callable, *args: Any) -> Any:
        """One attempt: a connect wait has already used the whole timeout, so it is not retried."""
        try:
            return await self._call_once(fn, *args)
        except _SdkFailure as failure:
            if failure.kind is _Transient.DISCONNECT:
                raise Disconnected(f"cannot reach Moomoo OpenD at {self.address} within "
                                   f"{self._connect_timeout:g} s; is OpenD running?") from None
            raise self._as_broker_error(what, failure) from None

    async def _choose_account(self) -> int:
        accounts = await self._call_at_connect("list trading accounts", self._trade_ctx.get_acc_list)
        candidates = accounts[accounts["trd_env"] == self.trd_env.value]
        if self._account_id is not None:
            candidates = candidates[candidates["acc_id"] == self._account_id]
        elif self.trd_env is TradingEnvironment.SIMULATE:
            stock = candidates[candidates["sim_acc_type"].astype(str).str.startswith("STOCK")]
            candidates = stock if len(stock) else candidates
        if candidates.empty:
            wanted = f"account {self._account_id}" if self._account_id is not None else "an account"
            raise BrokerError(f"Moomoo OpenD at {self.address} lists no {self.trd_env.value} {self.market.value} "
                              f"securities {wanted}; check the OpenD login and the market permissions")
        return int(candidates["acc_id"].iloc[0])

    async def _unlock(self) -> None:
        if self._password is None or not self._password.get_secret_value():
            raise BrokerError("Moomoo REAL trading needs the trade password to unlock trading; set MOOMOO_TRADE_PWD")
        secret = self._password.get_secret_value()
        ret, data = await self._in_thread(self._trade_ctx.unlock_trade, password=secret)
        if ret != self._moomoo.RET_OK:
            # Never retried: repeated wrong passwords lock the account.
            raise BrokerError(f"Moomoo refused to unlock REAL trading: {self._scrub(data)}; check MOOMOO_TRADE_PWD")

    # ------------------------------------------------------------------------------ plumbing
    @property
    def _moomoo(self) -> Any:
        """The moomoo module (loaded by ``connect``)."""
        return _sdk().mod

    def _trade_args(self) -> dict[str, Any]:
        return {"trd_env": self.trd_env.value, "acc_id": self._account_id}

    def _require_connected(self) -> None:
        if self._trade_ctx is None or self._quote_ctx is None:
            raise Disconnected(f"Moomoo broker for {self.address} is not connected; call connect() first")

    async def _in_thread(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        with external_io():
            return await asyncio.to_thread(fn, *args, **kwargs)

    async def _call(self, what: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Run an SDK call returning ``(ret, data)``; retry transient failures with backoff."""
        for attempt in range(self._retry_attempts + 1):
            try:
                return await self._call_once(fn, *args, **kwargs)
            except _SdkFailure as failure:
                if failure.kind is None or attempt == self._retry_attempts:
                    raise self._as_broker_error(what, failure) from None
                await self._backoff(what, attempt, failure)
        raise AssertionError("unreachable")

    async def _call_once(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        result = await self._in_thread(fn, *args, **kwargs)
        ret, data = result[0], result[1]
        if ret != self._moomoo.RET_OK:
            raise _SdkFailure(self._scrub(data))
        return data if len(result) == 2 else result[1:]

    async def _backoff(self, what: str, attempt: int, failure: _SdkFailure) -> None:
        delay = self._retry_base_seconds * (2 ** attempt)
        log.warning("Moomoo %s failed (%s); retry %d/%d in %.1f s", what, failure.message, attempt + 1,
                    self._retry_attempts, delay)
        await self._clock.sleep(delay)

    def _as_broker_error(self, what: str, failure: _SdkFailure) -> BrokerError:
        if failure.kind is _Transient.RATE_LIMIT:
            return RateLimited(f"Moomoo {what}: OpenD says the request rate is too high ({failure.message}); "
                               "wait and try again")
        if failure.kind is _Transient.DISCONNECT:
            return Disconnected(f"Moomoo {what}: no answer from OpenD at {self.address} ({failure.message}); "
                                "is OpenD running and logged in?")
        text = failure.message.lower()
        if any(h in text for h in _UNKNOWN_HINTS):
            return UnknownSymbol(f"Moomoo {what}: {failure.message}")
        return BrokerError(f"Moomoo {what} failed: {failure.message}")

    def _scrub(self, message: Any) -> str:
        text = str(message)
        if self._password is not None and self._password.get_secret_value():
            text = text.replace(self._password.get_secret_value(), "**********")
        return text

    def _local_now(self) -> datetime:
        return self._clock.now().astimezone(self.tz)

    def _to_utc(self, text: Any) -> datetime | None:
        """An exchange-local SDK time string as an aware UTC datetime."""
        if not isinstance(text, str) or not text or text == "N/A":
            return None
        for fmt in _SDK_TIME_FORMATS:
            try:
                naive = datetime.strptime(text, fmt)
            except ValueError:
                continue
            return naive.replace(tzinfo=self.tz).astimezone(timezone.utc)
        log.warning("unparseable Moomoo time %r", text)
        return None

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Moomoo background task failed: %s", task.exception())

    def _post_to_loop(self, fn: Callable, *args: Any) -> None:
        """From an SDK thread onto the agent's event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:   # the loop closed meanwhile
            pass

    # ------------------------------------------------------------------------------ market data
    async def snapshots(self, symbols: Sequence[Symbol]) -> dict[Symbol, Snapshot]:
        self._require_connected()
        wanted = [self._own_symbol(s) for s in symbols]
        codes = list(dict.fromkeys(str(s) for s in wanted))
        result: dict[Symbol, Snapshot] = {}
        for start in range(0, len(codes), SNAPSHOT_BATCH):
            batch = codes[start:start + SNAPSHOT_BATCH]
            await self._snapshot_limiter.acquire()
            frame = await self._call(f"market snapshot of {', '.join(batch[:5])}{'...' if len(batch) > 5 else ''}",
                                     self._quote_ctx.get_market_snapshot, batch)
            for row in frame.to_dict("records"):
                snapshot = self._snapshot_from_row(row)
                self._lot_sizes[snapshot.quote.symbol] = snapshot.lot_size
                result[snapshot.quote.symbol] = snapshot
        missing = [str(s) for s in wanted if s not in result]
        if missing:
            raise UnknownSymbol(f"Moomoo returned no snapshot for {', '.join(missing)}; check the codes")
        return result

    def _snapshot_from_row(self, row: dict) -> Snapshot:
        symbol = parse_symbol(row["code"])
        last = _decimal(row.get("last_price")) or Decimal(0)
        prev_close = _decimal(row.get("prev_close_price"))
        reference = last if last > 0 else (prev_close or Decimal(0))
        lot_size = int(_number(row.get("lot_size")) or 0)
        if lot_size <= 0:
            raise BrokerError(f"Moomoo snapshot of {symbol} has no board lot (lot_size={row.get('lot_size')!r})")
        quote = Quote(
            symbol=symbol, time=self._to_utc(row.get("update_time")) or self._clock.now(), price=reference,
            bid=_decimal(row.get("bid_price")) or reference, ask=_decimal(row.get("ask_price")) or reference,
            volume=int(_number(row.get("volume")) or 0), open=_decimal(row.get("open_price")),
            high=_decimal(row.get("high_price")), low=_decimal(row.get("low_price")), prev_close=prev_close,
        )
        tick = tick_size(symbol.market, reference, self._local_now().date(), self._hk_phase2_date) if reference > 0 \
            else tick_size(symbol.market, Decimal("1"), self._local_now().date(), self._hk_phase2_date)
        return Snapshot(quote=quote, lot_size=lot_size, tick=tick, name=str(row.get("name") or symbol.short))

    async def bars(self, symbol: Symbol, timeframe: Timeframe, start: datetime, end: datetime) -> pd.DataFrame:
        self._require_connected()
        symbol = self._own_symbol(symbol)
        timeframe = Timeframe(timeframe)
        now = self._clock.now()
        end = min(end, now)
        if start >= end:
            return _empty_bars()
        begin_text, end_text = self._history_window(timeframe, start, end)
        frames, page_key = [], None
        while True:
            await self._history_limiter.acquire()
            frame, page_key = await self._call(
                f"history K-lines of {symbol}", self._quote_ctx.request_history_kline, str(symbol),
                start=begin_text, end=end_text, ktype=_KTYPES[timeframe], max_count=self._history_page_size,
                page_req_key=page_key)
            frames.append(frame)
            if page_key is None:
                break
        return self._bars_frame(pd.concat(frames, ignore_index=True), timeframe, start, end, now)

    def _history_window(self, timeframe: Timeframe, start: datetime, end: datetime) -> tuple[str, str]:
        local_start, local_end = start.astimezone(self.tz), end.astimezone(self.tz)
        if timeframe is Timeframe.D1:
            return local_start.strftime("%Y-%m-%d"), local_end.strftime("%Y-%m-%d")
        # Futu's time key is the bar's end: fetch one bar past ``end`` and filter on open time.
        local_end += timedelta(minutes=timeframe.minutes)
        return local_start.strftime("%Y-%m-%d %H:%M:%S"), local_end.strftime("%Y-%m-%d %H:%M:%S")

    def _bars_frame(self, raw: pd.DataFrame, timeframe: Timeframe, start: datetime, end: datetime,
                    now: datetime) -> pd.DataFrame:
        if raw.empty:
            return _empty_bars()
        keys = pd.to_datetime(raw["time_key"], format="mixed")
        if timeframe is Timeframe.D1:
            opens = keys
            closes = keys.dt.normalize() + pd.Timedelta(hours=DAY_BAR_FINAL[self.market].hour,
                                                         minutes=DAY_BAR_FINAL[self.market].minute)
        else:
            closes = keys
            opens = _bar_opens(keys, timeframe.minutes)
        frame = raw.assign(open_time=opens.dt.tz_localize(self.tz).dt.tz_convert("UTC"),
                           close_time=closes.dt.tz_localize(self.tz).dt.tz_convert("UTC"))
        keep = (frame["open_time"] >= start) & (frame["open_time"] < end) & (frame["close_time"] <= now)
        frame = frame[keep].drop_duplicates("open_time").sort_values("open_time")
        bars = frame.set_index("open_time")[BAR_COLUMNS].astype(float)
        bars.index.name = "time"
        return bars

    def subscribe_quotes(self, symbols: Sequence[Symbol], on_quote: Callable[[Quote], None]) -> Subscription:
        self._require_connected()
        codes = frozenset(str(self._own_symbol(s)) for s in symbols)
        listener_id = next(self._listener_ids)
        self._quote_listeners[listener_id] = (codes, on_quote)
        self._spawn(self._ensure_subscribed(codes))
        return CallbackSubscription(_on_close=lambda: self._quote_listeners.pop(listener_id, None))

    def _wanted_codes(self) -> set[str]:
        return set().union(*(codes for codes, _ in self._quote_listeners.values()))

    async def _ensure_subscribed(self, codes: Iterable[str]) -> None:
        missing = sorted(set(codes) - self._subscribed)
        if not missing or self._quote_ctx is None:
            return
        sdk = self._moomoo
        await self._call(f"quote subscription for {', '.join(missing)}", self._quote_ctx.subscribe, missing,
                         [sdk.SubType.QUOTE], subscribe_push=True)
        self._subscribed.update(missing)

    def _quote_reconnected(self) -> None:
        """SDK thread: the quote connection came back; the subscriptions are ours to restore."""
        self._post_to_loop(self._restore_subscriptions)

    def _restore_subscriptions(self) -> None:
        self.reconnects += 1
        self._subscribed.clear()
        wanted = self._wanted_codes()
        log.warning("Moomoo quote connection to %s re-established; restoring %d subscriptions", self.address,
                    len(wanted))
        if wanted:
            self._spawn(self._ensure_subscribed(wanted))

    def _on_quote_frame(self, frame: pd.DataFrame) -> None:
        """SDK thread: a quote push."""
        quotes = []
        for row in frame.to_dict("records"):
            try:
                quotes.append(self._quote_from_push(row))
            except (BrokerError, ValueError) as exc:
                log.warning("ignoring a Moomoo quote push that cannot be read: %s", exc)
        if quotes:
            self._post_to_loop(self._deliver_quotes, quotes)

    def _quote_from_push(self, row: dict) -> Quote:
        price = _decimal(row.get("last_price"))
        if price is None:
            raise ValueError(f"no last price in push for {row.get('code')}")
        stamp = self._to_utc(f"{row.get('data_date')} {row.get('data_time')}") or self._clock.now()
        # Moomoo's basic quote push carries no bid/ask: both are the last price here.
        return Quote(symbol=parse_symbol(row["code"]), time=stamp, price=price, bid=price, ask=price,
                     volume=int(_number(row.get("volume")) or 0), open=_decimal(row.get("open_price")),
                     high=_decimal(row.get("high_price")), low=_decimal(row.get("low_price")),
                     prev_close=_decimal(row.get("prev_close_price")))

    def _deliver_quotes(self, quotes: list[Quote]) -> None:
        for quote in quotes:
            code = str(quote.symbol)
            for codes, callback in list(self._quote_listeners.values()):
                if code in codes:
                    _safely(callback, quote)

    # ------------------------------------------------------------------------------ orders
    async def place_order(self, request: OrderRequest) -> Order:
        self._require_connected()
        self._validate_request(request)
        lot = await self._board_lot(request.symbol)
        reason = check_lot_multiple(request.quantity, lot)
        if reason:
            raise OrderRejected(f"{request.symbol} order {request.client_order_id} not sent to Moomoo: {reason}")
        lock = self._placement_locks.setdefault(request.client_order_id, asyncio.Lock())
        async with lock:
            order = await self._find_today(request.client_order_id)
            if order is not None:
                log.info("order %s already at Moomoo as %s; not placing it again", request.client_order_id,
                         order.broker_order_id)
            else:
                order = await self._submit(request)
        self._purposes[order.broker_order_id] = request.purpose
        return order.with_(purpose=request.purpose)

    def _validate_request(self, request: OrderRequest) -> None:
        coid = request.client_order_id
        where = f"{request.symbol} order {coid!r}"
        if request.symbol.market is not self.market:
            raise OrderRejected(f"{where}: this Moomoo broker trades {self.market.value} only")
        if not coid or len(coid.encode("utf-8")) > REMARK_MAX_BYTES:
            raise OrderRejected(f"{where}: client order id must be 1-{REMARK_MAX_BYTES} bytes (Moomoo remark)")
        if not isinstance(request.quantity, int) or request.quantity <= 0:
            raise OrderRejected(f"{where}: quantity must be a positive whole number, got {request.quantity!r}")
        if request.take_profit_price is not None or request.stop_loss_price is not None:
            raise OrderRejected(f"{where}: Moomoo has no bracket orders; place the protective order separately")
        if request.order_type is OrderType.MARKET and (request.limit_price or request.stop_price):
            raise OrderRejected(f"{where}: a market order takes no limit or stop price")
        if request.order_type is OrderType.LIMIT:
            self._check_price(where, "limit price", request.limit_price, request.side)
        if request.order_type is OrderType.STOP:
            self._check_stop(where, request)

    def _check_stop(self, where: str, request: OrderRequest) -> None:
        if not self._capabilities.supports_stop_orders:
            raise OrderRejected(
                f"{where}: stop orders are not supported on this Moomoo {self.trd_env.value} account (Futu: paper "
                "trading supports only limit and market orders); no broker-side backstop was placed")
        self._check_price(where, "stop price", request.stop_price, request.side)
        if request.limit_price is not None:
            self._check_price(where, "limit price", request.limit_price, request.side)

    def _check_price(self, where: str, label: str, price: Decimal | None, side: OrderSide) -> None:
        if price is None or price <= 0:
            raise OrderRejected(f"{where}: a positive {label} is required, got {price!r}")
        day = self._local_now().date()
        if not is_on_tick(self.market, price, day, self._hk_phase2_date):
            how = "down" if side is OrderSide.BUY else "up"
            nearest = round_to_tick(self.market, price, day, hk_phase2_date=self._hk_phase2_date)
            raise OrderRejected(f"{where}: {label} {price} is off the tick grid (nearest valid {nearest}; "
                                f"round {how} for a {side.value})")

    async def _board_lot(self, symbol: Symbol) -> int:
        if symbol not in self._lot_sizes:
            await self.snapshots([symbol])
        return self._lot_sizes[symbol]

    async def _submit(self, request: OrderRequest) -> Order:
        kwargs = self._placement_args(request)
        what = f"place order {request.client_order_id} ({request.side.value} {request.quantity} {request.symbol})"
        for attempt in range(self._retry_attempts + 1):
            await self._order_limiter.acquire()
            try:
                placed = await self._call_once(self._trade_ctx.place_order, **kwargs)
            except _SdkFailure as failure:
                if failure.kind is None:
                    raise self._rejection(request, failure.message) from None
                if attempt == self._retry_attempts:
                    raise self._as_broker_error(what, failure) from None
                await self._backoff(what, attempt, failure)
                existing = await self._find_today(request.client_order_id)   # a lost reply may have placed it
                if existing is not None:
                    return existing
                continue
            return await self._placed_order(placed)
        raise AssertionError("unreachable")

    def _placement_args(self, request: OrderRequest) -> dict[str, Any]:
        sdk = self._moomoo
        args: dict[str, Any] = {"qty": request.quantity, "code": str(request.symbol), "remark": request.client_order_id,
                                "trd_side": sdk.TrdSide.BUY if request.side is OrderSide.BUY else sdk.TrdSide.SELL,
                                **self._trade_args()}
        if request.order_type is OrderType.MARKET:
            args.update(price=0.0, order_type=sdk.OrderType.MARKET)
        elif request.order_type is OrderType.LIMIT:
            args.update(price=float(request.limit_price), order_type=sdk.OrderType.NORMAL)
        elif request.limit_price is not None:
            args.update(price=float(request.limit_price), order_type=sdk.OrderType.STOP_LIMIT,
                        aux_price=float(request.stop_price))
        else:
            args.update(price=float(request.stop_price), order_type=sdk.OrderType.STOP,
                        aux_price=float(request.stop_price))
        return args

    def _rejection(self, request: OrderRequest, message: str) -> OrderRejected:
        text = f"Moomoo rejected order {request.client_order_id} ({request.side.value} {request.quantity} " \
               f"{request.symbol}): {message}"
        if any(h in message.lower() for h in _FUNDS_HINTS):
            return InsufficientFunds(text)
        return OrderRejected(text)

    async def _placed_order(self, frame: pd.DataFrame) -> Order:
        row = frame.iloc[0].to_dict()
        if _number(row.get("qty")) is None:   # the SDK could not re-read the order it placed
            return await self.get_order(str(row["order_id"]))
        return self._order_from_row(row)

    async def cancel_order(self, broker_order_id: str) -> Order:
        self._require_connected()
        await self._modify_limiter.acquire()
        sdk = self._moomoo
        try:
            await self._call(f"cancel order {broker_order_id}", self._trade_ctx.modify_order,
                             sdk.ModifyOrderOp.CANCEL, str(broker_order_id), 0, 0, **self._trade_args())
        except (Disconnected, RateLimited):
            raise
        except BrokerError as refusal:
            order = await self.get_order(broker_order_id)
            if order.status.is_final:
                return order
            raise BrokerError(f"Moomoo did not cancel order {broker_order_id} (status {order.status.value}): "
                              f"{refusal}") from None
        return await self.get_order(broker_order_id)

    async def get_order(self, broker_order_id: str) -> Order:
        self._require_connected()
        frame = await self._call(f"read order {broker_order_id}", self._trade_ctx.order_list_query,
                                 order_id=str(broker_order_id), **self._trade_args())
        rows = [r for r in frame.to_dict("records") if str(r["order_id"]) == str(broker_order_id)]
        if not rows:
            rows = [r for r in (await self._history_orders()) if str(r["order_id"]) == str(broker_order_id)]
        if not rows:
            raise BrokerError(f"Moomoo has no order {broker_order_id} in the {self.trd_env.value} account "
                              f"{self._account_id} (today or the last 90 days)")
        return self._order_from_row(rows[0])

    async def find_order(self, client_order_id: str) -> Order | None:
        self._require_connected()
        found = await self._find_today(client_order_id)
        if found is not None:
            return found
        rows = [r for r in await self._history_orders() if r.get("remark") == client_order_id]
        return self._order_from_row(rows[-1]) if rows else None

    async def _find_today(self, client_order_id: str) -> Order | None:
        frame = await self._call(f"look up order {client_order_id}", self._trade_ctx.order_list_query,
                                 **self._trade_args())
        rows = [r for r in frame.to_dict("records") if r.get("remark") == client_order_id]
        return self._order_from_row(rows[-1]) if rows else None

    async def _history_orders(self, since: date | None = None) -> list[dict]:
        today = self._local_now().date()
        start = since or today - timedelta(days=90)
        frame = await self._call("read order history", self._trade_ctx.history_order_list_query,
                                 start=start.strftime("%Y-%m-%d"), end=today.strftime("%Y-%m-%d"),
                                 **self._trade_args())
        return frame.to_dict("records")

    async def list_orders(self, open_only: bool = True, symbol: Symbol | None = None) -> list[Order]:
        self._require_connected()
        filters: dict[str, Any] = {"code": str(self._own_symbol(symbol)) if symbol is not None else ""}
        if open_only:
            filters["status_filter_list"] = list(OPEN_SDK_STATUSES)
        frame = await self._call("list orders", self._trade_ctx.order_list_query, **filters, **self._trade_args())
        orders = [self._order_from_row(r) for r in frame.to_dict("records")]
        if open_only:
            orders = [o for o in orders if not o.status.is_final]
        return orders

    def _order_from_row(self, row: dict) -> Order:
        filled = _quantity(row.get("dealt_qty"))
        sdk_type = str(row.get("order_type", "")).upper()
        price = _decimal(row.get("price"))
        aux = _decimal(row.get("aux_price"))
        status = map_order_status(row.get("order_status", ""), filled)
        broker_id = str(row["order_id"])
        reason = str(row.get("last_err_msg") or "") or None
        return Order(
            broker_order_id=broker_id,
            client_order_id=str(row.get("remark") or ""),
            symbol=parse_symbol(row["code"]),
            side=map_order_side(row.get("trd_side", "")),
            order_type=_order_type(sdk_type),
            quantity=_quantity(row.get("qty")),
            status=status,
            filled_quantity=filled,
            avg_fill_price=_decimal(row.get("dealt_avg_price")) if filled > 0 else None,
            limit_price=price if sdk_type not in ("MARKET", "STOP") and price else None,
            stop_price=aux if sdk_type.startswith("STOP") or sdk_type.startswith("TRAILING") else None,
            created_at=self._to_utc(row.get("create_time")),
            updated_at=self._to_utc(row.get("updated_time")),
            reject_reason=reason if status is OrderStatus.REJECTED else None,
            purpose=self._purposes.get(broker_id, OrderPurpose.ENTRY),
        )

    def subscribe_orders(self, on_order: Callable[[Order], None]) -> Subscription:
        self._require_connected()
        listener_id = next(self._listener_ids)
        self._order_listeners[listener_id] = on_order
        return CallbackSubscription(_on_close=lambda: self._order_listeners.pop(listener_id, None))

    def _on_order_frame(self, frame: pd.DataFrame) -> None:
        """SDK thread: an order push (Trd_UpdateOrder)."""
        orders = []
        for row in frame.to_dict("records"):
            if str(row.get("trd_env", "")).upper() != self.trd_env.value:
                continue   # never mix paper and real pushes
            try:
                orders.append(self._order_from_row(row))
            except (BrokerError, ValueError, KeyError) as exc:
                log.warning("ignoring a Moomoo order push that cannot be read: %s", exc)
        if orders:
            self._post_to_loop(self._deliver_orders, orders)

    def _deliver_orders(self, orders: list[Order]) -> None:
        for order in orders:
            for callback in list(self._order_listeners.values()):
                _safely(callback, order)

    def _trade_reconnected(self) -> None:
        """SDK thread: the trade connection came back (the SDK re-unlocks and re-subscribes pushes)."""
        log.warning("Moomoo trade connection to %s re-established; order pushes missed meanwhile are not "
                    "replayed, so poll open orders", self.address)

    # ------------------------------------------------------------------------------ account
    async def positions(self) -> list[BrokerPosition]:
        self._require_connected()
        frame = await self._call("read positions", self._trade_ctx.position_list_query, **self._trade_args())
        result = []
        for row in frame.to_dict("records"):
            quantity = _number(row.get("qty")) or 0.0
            if quantity == 0:
                continue
            cost = _decimal(row.get("average_cost"))
            if cost is None or cost <= 0:
                cost = _decimal(row.get("cost_price")) or Decimal(0)
            result.append(BrokerPosition(
                symbol=parse_symbol(row["code"]), side=map_position_side(row.get("position_side", ""), quantity),
                quantity=abs(_quantity(quantity)), avg_cost=cost, market_price=_decimal(row.get("nominal_price"))))
        return result

    async def account(self) -> Account:
        self._require_connected()
        frame = await self._call("read account funds", self._trade_ctx.accinfo_query,
                                 currency=self.market.currency, **self._trade_args())
        row = frame.iloc[0].to_dict()
        cash, equity = _decimal(row.get("cash")), _decimal(row.get("total_assets"))
        if cash is None or equity is None:
            raise BrokerError(f"Moomoo account {self._account_id} funds have no cash/total_assets: {row}")
        return Account(cash=cash, equity=equity, currency=self.market.currency, buying_power=_decimal(row.get("power")))

    async def fills(self, since: datetime, symbol: Symbol | None = None) -> list[Fill]:
        self._require_connected()
        code = str(self._own_symbol(symbol)) if symbol is not None else ""
        if self.trd_env is TradingEnvironment.SIMULATE:
            fills = await self._fills_from_orders(since, code)
        else:
            fills = await self._fills_from_deals(since, code)
        return sorted((f for f in fills if f.time >= since), key=lambda f: (f.time, f.fill_id))

    async def _fills_from_deals(self, since: datetime, code: str) -> list[Fill]:
        rows = await self._call("read today's deals", self._trade_ctx.deal_list_query, code=code, **self._trade_args())
        by_id = {str(r["deal_id"]): r for r in rows.to_dict("records")}
        today = self._local_now().date()
        if since.astimezone(self.tz).date() < today:
            history = await self._call("read deal history", self._trade_ctx.history_deal_list_query, code=code,
                                       start=since.astimezone(self.tz).strftime("%Y-%m-%d"),
                                       end=today.strftime("%Y-%m-%d"), **self._trade_args())
            by_id.update({str(r["deal_id"]): r for r in history.to_dict("records")})
        return [self._fill_from_deal(r) for r in by_id.values() if str(r.get("status", "OK")).upper() in ("OK", "N/A")]

    def _fill_from_deal(self, row: dict) -> Fill:
        return Fill(broker_order_id=str(row["order_id"]), symbol=parse_symbol(row["code"]),
                    side=map_order_side(row["trd_side"]), quantity=_quantity(row["qty"]),
                    price=_decimal(row["price"]) or Decimal(0),
                    time=self._to_utc(row.get("create_time")) or self._clock.now(), fill_id=str(row["deal_id"]))

    async def _fills_from_orders(self, since: datetime, code: str) -> list[Fill]:
        """Paper accounts have no deal list: one aggregated fill per order with a filled quantity."""
        rows = (await self._call("read today's orders", self._trade_ctx.order_list_query, code=code,
                                 **self._trade_args())).to_dict("records")
        if since.astimezone(self.tz).date() < self._local_now().date():
            rows += [r for r in await self._history_orders(since.astimezone(self.tz).date())
                     if not code or r.get("code") == code]
        by_order = {str(r["order_id"]): self._order_from_row(r) for r in rows}
        return [Fill(broker_order_id=o.broker_order_id, symbol=o.symbol, side=o.side, quantity=o.filled_quantity,
                     price=o.avg_fill_price, time=o.updated_at or o.created_at or self._clock.now(),
                     fill_id=f"{o.broker_order_id}:{o.filled_quantity}")
                for o in by_order.values() if o.filled_quantity > 0 and o.avg_fill_price is not None]

    def _own_symbol(self, symbol: Symbol | str) -> Symbol:
        parsed = parse_symbol(symbol)
        if parsed.market is not self.market:
            raise UnknownSymbol(f"{parsed} is not a {self.market.value} symbol; this Moomoo broker serves "
                                f"{self.market.value} only")
        return parsed


# --- Small helpers -----------------------------------------------------------------------------
def _order_type(sdk_type: str) -> OrderType:
    if sdk_type == "MARKET":
        return OrderType.MARKET
    if sdk_type.startswith("STOP") or sdk_type.startswith("TRAILING"):
        return OrderType.STOP
    return OrderType.LIMIT


def _bar_opens(keys: pd.Series, minutes: int) -> pd.Series:
    """Open times of end-stamped intraday bars: ``minutes`` earlier, but never before the previous
    bar of the same day (a session's last bar can be short, e.g. the HK 11:30-12:00 hour bar)."""
    opens = keys - pd.Timedelta(minutes=minutes)
    previous = keys.sort_values().shift(1).reindex(keys.index)
    same_day = previous.dt.normalize() == keys.dt.normalize()
    return opens.where(~(same_day & (previous > opens)), previous)


def _empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame(columns=BAR_COLUMNS, dtype=float, index=pd.DatetimeIndex([], tz="UTC", name="time"))
    return frame


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


def _safely(callback: Callable, value: Any) -> None:
    try:
        callback(value)
    except Exception:   # a listener's bug must not stop the others or the SDK thread
        log.exception("a Moomoo push listener failed")
