"""Alpaca adapter: US equities through the real alpaca-py SDK (REST + two websockets).

Decisions, so nobody has to rediscover them:

* Paper by default. The live endpoint is used only when constructed with ``live=True``; a base URL
  that contradicts the mode (the live host in paper mode or the reverse) is refused at
  construction.
* Every blocking SDK call runs in a worker thread (``asyncio.to_thread``) inside
  ``clock.external_io()``, so a simulated clock never moves while Alpaca is working for us.
* HTTP: each request has a timeout (``request_timeout_seconds``; the SDK sets none). The SDK's own
  429 retry (3 x ``time.sleep(3)`` in the worker) is switched off; the adapter retries 429 and
  504 itself with ``Clock.sleep`` backoff (``Retry-After`` when given), then raises ``RateLimited``.
* Errors become ``BrokerError`` subclasses whose messages say what failed and what to do. They
  never contain the API keys (bodies are scrubbed) and are raised ``from None``: the SDK's
  exceptions carry the HTTP request, whose headers hold the secret key.
* Prices go out on the tick grid (``instruments.round_to_tick``, Decimal): a buy limit rounds
  down, a sell limit (and a take-profit of a long) rounds up, stops round to the nearest tick.
  The original lost 95% of its orders to sub-penny floats.
* ``place_order`` is idempotent on ``client_order_id``: it looks the id up first, and if Alpaca
  still answers "client_order_id must be unique" (a race, or a retried request that had arrived)
  it returns the order that exists. An order is never sent twice.
* Entries with ``take_profit_price`` and ``stop_loss_price`` go out as ONE bracket order
  (``order_class=bracket``: take-profit limit leg + stop-loss stop leg, held by Alpaca until the
  parent fills, one cancels the other). With only one of the two it is an OTO order.
* Statuses: see ``_STATUS``. Working states with a fill become PARTIALLY_FILLED; ``canceled``
  keeps ``filled_quantity`` (a partial fill that was cancelled).
* Position sides come from Alpaca's ``long``/``short`` through an explicit table (the original
  flipped 68 positions by mapping long to SELL); quantities are whole shares.
* Deal history (``fills``) comes from the account activities of type FILL: one row per execution.
* Streams: quotes over ``StockDataStream`` (trades + quotes + daily bars), order updates over
  ``TradingStream``. Each stream runs its SDK coroutine on a private event loop in a daemon
  thread (the SDK's ``run()`` would call ``asyncio.run``); callbacks are handed to the agent's
  loop with ``call_soon_threadsafe``. One connection per stream kind is shared by every
  subscription. ``streaming=False`` replaces both with polling on the clock.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import pandas as pd
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.requests import StockBarsRequest, StockSnapshotRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderClass, QueryOrderStatus, TimeInForce
from alpaca.trading.enums import OrderSide as AlpacaSide
from alpaca.trading.requests import (
    GetOrderByIdRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
)
from alpaca.trading.stream import TradingStream

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
    OrderRejected,
    OrderRequest,
    OrderStatus,
    OrderType,
    Quote,
    RateLimited,
    Snapshot,
    Subscription,
    Timeframe,
    UnknownSymbol,
)
from brokers.http import TimeoutSession
from core.clock import Clock, external_io
from config.settings import ConfigError, Secrets
from core.instruments import Market, OrderSide, PositionSide, PriceError, Rounding, Symbol, round_to_tick, tick_size

log = logging.getLogger(__name__)

T = TypeVar("T")

PAPER_HOST = "paper-api.alpaca.markets"
LIVE_HOST = "api.alpaca.markets"
_RETRY_STATUSES = (429, 504)
_MAX_BACKOFF_SECONDS = 30.0
_ACTIVITY_PAGE_SIZE = 100
_STREAM_JOIN_SECONDS = 8.0

# --- Vocabulary tables: every Alpaca word this adapter understands, mapped explicitly ----------
_STATUS: dict[str, OrderStatus] = {
    "new": OrderStatus.SUBMITTED,
    "accepted": OrderStatus.SUBMITTED,
    "pending_new": OrderStatus.SUBMITTED,
    "accepted_for_bidding": OrderStatus.SUBMITTED,
    "held": OrderStatus.SUBMITTED,            # bracket legs waiting for their parent
    "pending_review": OrderStatus.SUBMITTED,
    "stopped": OrderStatus.SUBMITTED,
    "suspended": OrderStatus.SUBMITTED,
    "calculated": OrderStatus.SUBMITTED,      # FILLED when the fill is complete, see _order_status
    "done_for_day": OrderStatus.SUBMITTED,
    "pending_cancel": OrderStatus.SUBMITTED,  # still working until Alpaca confirms the cancel
    "pending_replace": OrderStatus.SUBMITTED,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED,
    "replaced": OrderStatus.CANCELLED,        # superseded by another order; this one is finished
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}
_ORDER_SIDES = {"buy": OrderSide.BUY, "sell": OrderSide.SELL}
_FILL_SIDES = {"buy": OrderSide.BUY, "sell": OrderSide.SELL, "sell_short": OrderSide.SELL}
_POSITION_SIDES = {"long": PositionSide.LONG, "short": PositionSide.SHORT}
_ORDER_TYPES = {"market": OrderType.MARKET, "limit": OrderType.LIMIT, "stop": OrderType.STOP,
                "stop_limit": OrderType.STOP, "trailing_stop": OrderType.STOP}
_TO_ALPACA_SIDE = {OrderSide.BUY: AlpacaSide.BUY, OrderSide.SELL: AlpacaSide.SELL}
_TIMEFRAMES = {
    Timeframe.M1: TimeFrame(1, TimeFrameUnit.Minute),
    Timeframe.M5: TimeFrame(5, TimeFrameUnit.Minute),
    Timeframe.M15: TimeFrame(15, TimeFrameUnit.Minute),
    Timeframe.H1: TimeFrame(1, TimeFrameUnit.Hour),
    Timeframe.D1: TimeFrame(1, TimeFrameUnit.Day),
}


class AlpacaNotFound(BrokerError):
    """Alpaca has no such order, position or asset (HTTP 404)."""


class _DuplicateClientOrderId(OrderRejected):
    pass


# --- Small pure helpers -----------------------------------------------------------------------
def _word(value: Any) -> str:
    """An SDK enum or plain string as its lower-case wire word."""
    return str(getattr(value, "value", value)).lower()


def _ticker(symbol: Symbol) -> str:
    if symbol.market is not Market.US:
        raise UnknownSymbol(f"Alpaca trades US equities only; {symbol} is not one (use the Moomoo broker for HK)")
    return symbol.code


def _symbol(ticker: str) -> Symbol:
    return Symbol(Market.US, ticker.upper())


def _decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def _shares(value: Any) -> int:
    """Whole shares; a fractional quantity (bought elsewhere) is truncated and logged."""
    amount = Decimal(str(value or 0))
    whole = int(amount)
    if amount != whole:
        log.warning("Alpaca reported a fractional quantity %s; this agent trades whole shares and counts %d",
                    amount, whole)
    return whole


def _tick_price(value: float | Decimal, on: datetime) -> Decimal:
    return round_to_tick(Market.US, value, on.date())


def _host_port(url: str | None) -> str:
    parts = urlsplit(url or "")
    if not parts.hostname:
        return "the Alpaca endpoint"
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    return f"{parts.hostname}:{port}"


def _api_message(exc: APIError) -> str:
    try:
        return str(exc.message)
    except (ValueError, KeyError, TypeError):        # not the JSON error body (a proxy page, say)
        return str(exc)[:200]


def _backoff_seconds(attempt: int, base: float, exc: APIError) -> float:
    response = getattr(exc, "response", None)
    header = response.headers.get("Retry-After") if response is not None else None
    try:
        if header is not None:
            return min(float(header), _MAX_BACKOFF_SECONDS)
    except ValueError:
        pass
    return min(base * 2 ** attempt, _MAX_BACKOFF_SECONDS)


def _empty_bars() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in BAR_COLUMNS}, index=pd.DatetimeIndex([], tz="UTC"))


def _bars_frame(bars: Sequence[Any]) -> pd.DataFrame:
    if not bars:
        return _empty_bars()
    index = pd.DatetimeIndex(pd.to_datetime([b.timestamp for b in bars], utc=True))
    frame = pd.DataFrame({c: [float(getattr(b, c)) for b in bars] for c in BAR_COLUMNS}, index=index)
    return frame[~frame.index.duplicated(keep="last")].sort_index()


def _limit_rounding(side: OrderSide) -> Rounding:
    """Never pay more than asked on a buy, never sell for less on a sell."""
    return Rounding.DOWN if side is OrderSide.BUY else Rounding.UP


# --- Streams ------------------------------------------------------------------------------------
@dataclass
class _Listener:
    callback: Callable[[Any], None]
    subscription: CallbackSubscription
    tickers: frozenset[str] = frozenset()

    def deliver(self, item: Any) -> None:
        if self.subscription.closed:
            return
        try:
            self.callback(item)
        except Exception:  # a failing callback must not stop the feed for everyone else
            log.exception("an Alpaca subscriber callback failed; the feed goes on")


class _StreamThread:
    """Runs one alpaca-py stream coroutine on a private event loop in a daemon thread.

    The SDK's ``run()`` is ``asyncio.run(_run_forever())``; running that coroutine as a task on
    our own loop lets ``stop()`` cancel it at once (the SDK's own stop waits up to 5 s for its
    receive timeout) and close the socket cleanly afterwards.
    """

    def __init__(self, stream: Any, name: str) -> None:
        self.stream = stream
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._started = threading.Event()

    def start(self) -> None:
        self._thread.start()
        self._started.wait(2.0)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        self._task = loop.create_task(self.stream._run_forever())
        self._started.set()
        try:
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("Alpaca %s stopped with an error", self.name)
        finally:
            self._close_loop(loop)

    def _close_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self.stream.close())
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        except Exception:
            log.debug("closing the Alpaca %s socket failed", self.name, exc_info=True)
        finally:
            loop.close()

    def stop(self) -> None:
        """Stop the stream; does not wait (``join`` does)."""
        loop, task = self.loop, self._task
        if loop is None or task is None:
            return
        try:
            loop.call_soon_threadsafe(task.cancel)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()


class _Feed:
    """Listeners on the agent's loop, fed from one SDK stream running in its own thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.listeners: list[_Listener] = []
        self.runner: _StreamThread | None = None

    def hand_over(self, item: Any, wanted: Callable[[_Listener], bool]) -> None:
        """Called on the stream thread: deliver ``item`` on the agent's loop."""
        try:
            self.loop.call_soon_threadsafe(self._dispatch, item, wanted)
        except RuntimeError:  # the agent's loop is closed: nobody is listening any more
            pass

    def _dispatch(self, item: Any, wanted: Callable[[_Listener], bool]) -> None:
        for listener in list(self.listeners):
            if wanted(listener):
                listener.deliver(item)

    def remove(self, listener: _Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def stop(self) -> _StreamThread | None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.stop()
        return runner


@dataclass
class _LiveQuote:
    """What the data stream has told us about one ticker so far."""

    price: float | None = None
    bid: float | None = None
    ask: float | None = None
    volume: int = 0
    open: float | None = None
    high: float | None = None
    low: float | None = None
    time: datetime | None = None

    def to_quote(self, symbol: Symbol) -> Quote | None:
        price = self.price
        if price is None and self.bid and self.ask:
            price = (self.bid + self.ask) / 2
        if price is None or self.time is None:
            return None
        on = self.time
        last = _tick_price(price, on)
        optional = {k: _tick_price(v, on) for k, v in (("open", self.open), ("high", self.high), ("low", self.low))
                    if v}
        return Quote(symbol=symbol, time=self.time, price=last,
                     bid=_tick_price(self.bid, on) if self.bid else last,
                     ask=_tick_price(self.ask, on) if self.ask else last, volume=self.volume, **optional)


class _QuoteFeed(_Feed):
    """Trades, quotes and daily bars from ``StockDataStream`` turned into ``Quote``s.

    ``Quote.volume`` is the latest daily bar's volume (Alpaca pushes it every minute) plus the
    trades seen since; open/high/low come from the daily bar once one has arrived.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, make_stream: Callable[[], StockDataStream]) -> None:
        super().__init__(loop)
        self._make_stream = make_stream
        self._state: dict[str, _LiveQuote] = {}
        self._subscribed: set[str] = set()
        # Adding symbols to a running SDK stream blocks until its loop has sent the request:
        # that wait happens on this worker, never on the agent's loop.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alpaca-subscribe")

    def add(self, listener: _Listener) -> None:
        self.listeners.append(listener)
        new = sorted(listener.tickers - self._subscribed)
        self._subscribed |= set(new)
        if self.runner is None:
            stream = self._make_stream()
            self._register(stream, new)
            self.runner = _StreamThread(stream, "alpaca-quote-stream")
            self.runner.start()
        elif new:
            self._worker.submit(self._register, self.runner.stream, new)

    def remove(self, listener: _Listener) -> None:
        super().remove(listener)
        still_wanted = set().union(*(l.tickers for l in self.listeners)) if self.listeners else set()
        unwanted = sorted(self._subscribed - still_wanted)
        if unwanted and self.runner is not None:
            self._subscribed -= set(unwanted)
            self._worker.submit(self._unregister, self.runner.stream, unwanted)

    def _register(self, stream: StockDataStream, tickers: list[str]) -> None:
        if tickers:
            stream.subscribe_trades(self._on_trade, *tickers)
            stream.subscribe_quotes(self._on_quote, *tickers)
            stream.subscribe_daily_bars(self._on_daily_bar, *tickers)

    @staticmethod
    def _unregister(stream: StockDataStream, tickers: list[str]) -> None:
        try:
            stream.unsubscribe_trades(*tickers)
            stream.unsubscribe_quotes(*tickers)
            stream.unsubscribe_daily_bars(*tickers)
        except Exception:
            log.warning("could not unsubscribe %s from the Alpaca data stream", ", ".join(tickers))

    # The three handlers run on the stream's thread.
    async def _on_trade(self, trade: Any) -> None:
        state = self._state.setdefault(trade.symbol, _LiveQuote())
        state.price = float(trade.price)
        state.volume += int(trade.size or 0)
        state.time = trade.timestamp
        self._publish(trade.symbol, state)

    async def _on_quote(self, quote: Any) -> None:
        state = self._state.setdefault(quote.symbol, _LiveQuote())
        state.bid, state.ask = float(quote.bid_price or 0) or None, float(quote.ask_price or 0) or None
        state.time = max(state.time, quote.timestamp) if state.time else quote.timestamp
        self._publish(quote.symbol, state)

    async def _on_daily_bar(self, bar: Any) -> None:
        state = self._state.setdefault(bar.symbol, _LiveQuote())
        state.open, state.high, state.low = float(bar.open), float(bar.high), float(bar.low)
        state.volume = int(bar.volume)

    def _publish(self, ticker: str, state: _LiveQuote) -> None:
        quote = state.to_quote(_symbol(ticker))
        if quote is not None:
            self.hand_over(quote, lambda listener: ticker in listener.tickers)

    def stop(self) -> _StreamThread | None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        return super().stop()


class _OrderFeed(_Feed):
    """Order updates from ``TradingStream`` turned into ``Order``s."""

    def __init__(self, loop: asyncio.AbstractEventLoop, make_stream: Callable[[], TradingStream],
                 to_order: Callable[[Any], Order]) -> None:
        super().__init__(loop)
        self._make_stream = make_stream
        self._to_order = to_order

    def add(self, listener: _Listener) -> None:
        self.listeners.append(listener)
        if self.runner is None:
            stream = self._make_stream()
            stream.subscribe_trade_updates(self._on_update)
            self.runner = _StreamThread(stream, "alpaca-order-stream")
            self.runner.start()

    async def _on_update(self, update: Any) -> None:  # runs on the stream's thread
        try:
            order = self._to_order(update.order)
        except Exception:
            log.exception("could not read an Alpaca order update (%s)", getattr(update, "event", "?"))
            return
        self.hand_over(order, lambda listener: True)


# --- The broker ---------------------------------------------------------------------------------
@dataclass
class _PollTask:
    task: asyncio.Task
    listener: _Listener


class AlpacaBroker:
    """The ``Broker`` contract for US equities on Alpaca. See the module docstring for the rules."""

    def __init__(
        self,
        secrets: Secrets,
        clock: Clock,
        *,
        live: bool = False,
        feed: str = "iex",
        trading_stream_url: str | None = None,
        data_stream_url: str | None = None,
        streaming: bool = True,
        poll_seconds: float = 2.0,
        request_timeout_seconds: float = 15.0,
        rate_limit_retries: int = 3,
        rate_limit_backoff_seconds: float = 1.0,
    ) -> None:
        if not (secrets.alpaca_api_key and secrets.alpaca_api_key.get_secret_value()
                and secrets.alpaca_secret_key and secrets.alpaca_secret_key.get_secret_value()):
            raise ConfigError("ALPACA_API_KEY and ALPACA_SECRET_KEY must be set to trade US equities on Alpaca "
                              "(paper keys from the Alpaca paper dashboard unless --live)")
        self._key = secrets.alpaca_api_key.get_secret_value()
        self._secret = secrets.alpaca_secret_key.get_secret_value()
        self._live = live
        self._clock = clock
        self._feed = DataFeed(feed.lower())
        self._streaming = streaming
        self._poll_seconds = poll_seconds
        self._retries = max(0, rate_limit_retries)
        self._backoff_base = rate_limit_backoff_seconds
        self._trading_url = secrets.alpaca_base_url or f"https://{LIVE_HOST if live else PAPER_HOST}"
        _check_endpoint_matches_mode(self._trading_url, live)
        self._trading = TradingClient(self._key, self._secret, paper=not live, url_override=secrets.alpaca_base_url)
        self._data = StockHistoricalDataClient(self._key, self._secret, url_override=secrets.alpaca_data_url)
        for client in (self._trading, self._data):
            client._session = TimeoutSession(request_timeout_seconds)   # the SDK sets no timeout
            client._retry = 0                                           # 429 handled here, with Clock.sleep
        self._trading_stream_url = trading_stream_url or _derived_stream_url(secrets.alpaca_base_url, "/stream")
        self._data_stream_url = data_stream_url or _derived_stream_url(secrets.alpaca_data_url, f"/v2/{self._feed.value}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quote_feed: _QuoteFeed | None = None
        self._order_feed: _OrderFeed | None = None
        self._polls: list[_PollTask] = []
        self._purposes: dict[str, OrderPurpose] = {}     # client order id -> purpose, for orders placed here
        self._leg_parents: dict[str, str] = {}           # leg broker id -> parent broker id
        self._names: dict[str, str] = {}

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(supports_stop_orders=True, supports_bracket=True,
                            supports_quote_push=self._streaming, supports_order_push=self._streaming,
                            is_paper=not self._live, name="alpaca")

    async def connect(self) -> None:
        """Check that Alpaca answers and accepts the keys; remember the agent's event loop."""
        self._loop = asyncio.get_running_loop()
        account = await self._call("reading the account", self._trading.get_account)
        if getattr(account, "trading_blocked", False) or getattr(account, "account_blocked", False):
            log.warning("the Alpaca account is blocked for trading (status %s)", _word(account.status))
        log.info("connected to Alpaca (%s, %s)", "LIVE" if self._live else "paper", _host_port(self._trading_url))

    async def close(self) -> None:
        for poll in self._polls:
            poll.listener.subscription.closed = True
            poll.task.cancel()
        self._polls.clear()
        runners = [feed.stop() for feed in (self._quote_feed, self._order_feed) if feed is not None]
        self._quote_feed = self._order_feed = None
        for runner in filter(None, runners):
            with external_io():
                stopped = await asyncio.to_thread(runner.join, _STREAM_JOIN_SECONDS)
            if not stopped:
                log.warning("the Alpaca %s did not stop within %.0f s; left to exit with the process",
                            runner.name, _STREAM_JOIN_SECONDS)
        for client in (self._trading, self._data):
            client._session.close()

    # -- one place where the SDK is called -----------------------------------------------------
    async def _call(self, what: str, fn: Callable[..., T], *args: Any, placing: bool = False) -> T:
        for attempt in itertools.count():
            try:
                with external_io():
                    return await asyncio.to_thread(fn, *args)
            except APIError as exc:
                if exc.status_code in _RETRY_STATUSES and attempt < self._retries:
                    delay = _backoff_seconds(attempt, self._backoff_base, exc)
                    log.warning("Alpaca answered %s while %s; retrying in %.1f s (%d of %d)",
                                exc.status_code, what, delay, attempt + 1, self._retries)
                    await self._clock.sleep(delay)
                    continue
                raise self._api_error(exc, what, placing) from None
            except requests.RequestException as exc:
                raise self._unreachable(exc, what, placing) from None
        raise AssertionError("unreachable")

    def _redact(self, text: str) -> str:
        for secret in (self._secret, self._key):
            text = text.replace(secret, "[redacted]")
        return text

    def _api_error(self, exc: APIError, what: str, placing: bool) -> BrokerError:
        status = exc.status_code
        message = self._redact(_api_message(exc))
        lowered = message.lower()
        if status == 429:
            delay = _backoff_seconds(self._retries, self._backoff_base, exc)
            return RateLimited(f"Alpaca is rate limiting ({status}) while {what}: {message}; "
                               f"slow down and retry in {delay:.0f} s", retry_after_seconds=delay)
        if status == 401:
            return BrokerError(f"Alpaca refused the API keys (401) while {what}; check ALPACA_API_KEY and "
                               f"ALPACA_SECRET_KEY ({'live' if self._live else 'paper'} keys for this mode)")
        if status == 403 and "buying power" in lowered:
            return InsufficientFunds(f"Alpaca refused {what}: {message}; lower the quantity or free buying power")
        if status == 404:
            return AlpacaNotFound(f"Alpaca found nothing while {what}: {message}")
        if status == 422 and "client_order_id" in lowered and "unique" in lowered:
            return _DuplicateClientOrderId(f"Alpaca already has an order with this client order id ({what})")
        if placing and status in (403, 422):
            return OrderRejected(f"Alpaca rejected {what} ({status}): {message}")
        if status == 422:
            return OrderRejected(f"Alpaca refused {what} ({status}): {message}")
        if status == 403:
            return BrokerError(f"Alpaca forbids {what} (403): {message}; check the account's permissions "
                               f"and data subscription (feed '{self._feed.value}')")
        if status is not None and status >= 500:
            hint = "; the order may or may not exist: look it up by client order id" if placing else ""
            return BrokerError(f"Alpaca server error {status} while {what}: {message}; try again shortly{hint}")
        return BrokerError(f"Alpaca error {status} while {what}: {message}")

    def _unreachable(self, exc: requests.RequestException, what: str, placing: bool) -> Disconnected:
        request = getattr(exc, "request", None)
        where = _host_port(getattr(request, "url", None) or self._trading_url)
        text = str(exc).lower()
        if isinstance(exc, requests.Timeout):
            reason = "no answer in time"
        elif "refused" in text:
            reason = "connection refused"
        elif "name or service" in text or "resolve" in text or "nodename" in text:
            reason = "host name not found"
        else:
            reason = type(exc).__name__
        hint = " The order may or may not have been placed: look it up by client order id." if placing else ""
        return Disconnected(f"cannot reach Alpaca at {where} while {what} ({reason}); check the network and "
                            f"ALPACA_BASE_URL / ALPACA_DATA_URL.{hint}")

    # -- market data --------------------------------------------------------------------------
    async def snapshots(self, symbols: Sequence[Symbol]) -> dict[Symbol, Snapshot]:
        if not symbols:
            return {}
        tickers = {_ticker(s): s for s in symbols}
        request = StockSnapshotRequest(symbol_or_symbols=list(tickers), feed=self._feed)
        raw = await self._call(f"reading snapshots of {', '.join(tickers)}", self._data.get_stock_snapshot, request)
        unknown = [str(s) for t, s in tickers.items()
                   if t not in raw or (raw[t].latest_trade is None and raw[t].latest_quote is None)]
        if unknown:
            raise UnknownSymbol(f"Alpaca has no market data for {', '.join(unknown)}; check the ticker "
                                f"(US listings only, feed '{self._feed.value}')")
        names = await self._asset_names(list(tickers))
        return {s: self._snapshot(s, raw[t], names[t]) for t, s in tickers.items()}

    def _snapshot(self, symbol: Symbol, snap: Any, name: str) -> Snapshot:
        quote = _snapshot_quote(symbol, snap)
        return Snapshot(quote=quote, lot_size=1, tick=tick_size(Market.US, quote.price, quote.time.date()),
                        name=name)

    async def _asset_names(self, tickers: list[str]) -> dict[str, str]:
        missing = [t for t in tickers if t not in self._names]
        names = await asyncio.gather(*(self._asset_name(t) for t in missing))
        self._names.update(zip(missing, names))
        return {t: self._names[t] for t in tickers}

    async def _asset_name(self, ticker: str) -> str:
        try:
            asset = await self._call(f"reading asset {ticker}", self._trading.get_asset, ticker)
        except BrokerError as exc:
            log.info("no asset name for %s (%s); showing the ticker", ticker, exc)
            return ticker
        return asset.name or ticker

    async def bars(self, symbol: Symbol, timeframe: Timeframe, start: datetime, end: datetime) -> pd.DataFrame:
        """Closed bars with open time in [start, end) and closed by the clock's now; UTC index."""
        now = self._clock.now()
        span = pd.Timedelta(minutes=timeframe.minutes)
        until = min(end, now)
        if until <= start:
            return _empty_bars()
        ticker = _ticker(symbol)
        request = StockBarsRequest(symbol_or_symbols=ticker, timeframe=_TIMEFRAMES[timeframe], start=start,
                                   end=until, feed=self._feed)
        barset = await self._call(f"reading {timeframe.value} bars of {symbol}", self._data.get_stock_bars, request)
        frame = _bars_frame(barset.data.get(ticker, []))
        closed = (frame.index >= start) & (frame.index < end) & (frame.index + span <= now)
        return frame[closed]

    # -- orders -------------------------------------------------------------------------------
    async def place_order(self, request: OrderRequest) -> Order:
        sdk_request = self._order_request(request)      # validates and rounds before anything is sent
        existing = await self.find_order(request.client_order_id)
        if existing is not None:
            log.info("order %s already exists at Alpaca (%s); not placing it again",
                     request.client_order_id, existing.status.value)
            return existing
        what = f"{request.order_type.value} {request.side.value} {request.quantity} {request.symbol}"
        self._purposes[request.client_order_id] = request.purpose
        try:
            raw = await self._call(what, self._trading.submit_order, sdk_request, placing=True)
        except _DuplicateClientOrderId:
            existing = await self.find_order(request.client_order_id)
            if existing is None:
                raise OrderRejected(f"Alpaca says client order id {request.client_order_id} is taken but cannot "
                                    f"find it; use a new client order id") from None
            return existing
        return self._to_order(raw)

    def _order_request(self, request: OrderRequest) -> Any:
        ticker = _ticker(request.symbol)
        if not isinstance(request.quantity, int) or request.quantity <= 0:
            raise OrderRejected(f"quantity must be a positive whole number of shares, got {request.quantity!r}")
        on = self._clock.now().date()
        common: dict[str, Any] = dict(symbol=ticker, qty=request.quantity, side=_TO_ALPACA_SIDE[request.side],
                                      time_in_force=TimeInForce.DAY, client_order_id=request.client_order_id)
        common.update(self._legs(request, on))
        try:
            if request.order_type is OrderType.MARKET:
                _refuse_prices(request, "limit_price", "stop_price")
                return MarketOrderRequest(**common)
            if request.order_type is OrderType.LIMIT:
                _refuse_prices(request, "stop_price")
                price = round_to_tick(Market.US, _required(request, "limit_price"), on, _limit_rounding(request.side))
                return LimitOrderRequest(limit_price=price, **common)
            if request.order_type is OrderType.STOP:
                _refuse_prices(request, "limit_price")
                return StopOrderRequest(stop_price=round_to_tick(Market.US, _required(request, "stop_price"), on),
                                        **common)
        except PriceError as exc:
            raise OrderRejected(f"{request.client_order_id}: {exc}") from None
        raise OrderRejected(f"order type {request.order_type!r} is not supported by the Alpaca adapter")

    def _legs(self, request: OrderRequest, on: Any) -> dict[str, Any]:
        take, stop = request.take_profit_price, request.stop_loss_price
        if take is None and stop is None:
            return {}
        exit_side = OrderSide.SELL if request.side is OrderSide.BUY else OrderSide.BUY
        try:
            take = None if take is None else round_to_tick(Market.US, take, on, _limit_rounding(exit_side))
            stop = None if stop is None else round_to_tick(Market.US, stop, on)
        except PriceError as exc:
            raise OrderRejected(f"{request.client_order_id}: bracket leg: {exc}") from None
        if take is not None and stop is not None:
            wrong = stop >= take if request.side is OrderSide.BUY else stop <= take
            if wrong:
                raise OrderRejected(f"{request.client_order_id}: stop loss {stop} and take profit {take} are on the "
                                    f"wrong sides for a {request.side.value} entry")
            order_class = OrderClass.BRACKET
        else:
            order_class = OrderClass.OTO
        legs: dict[str, Any] = {"order_class": order_class}
        if take is not None:
            legs["take_profit"] = TakeProfitRequest(limit_price=take)
        if stop is not None:
            legs["stop_loss"] = StopLossRequest(stop_price=stop)
        return legs

    async def cancel_order(self, broker_order_id: str) -> Order:
        order_id = _order_uuid(broker_order_id)
        try:
            await self._call(f"cancelling order {broker_order_id}", self._trading.cancel_order_by_id, order_id)
        except OrderRejected:   # 422: already filled, cancelled or expired
            order = await self.get_order(broker_order_id)
            if order.status.is_final:
                return order
            raise
        return await self.get_order(broker_order_id)

    async def get_order(self, broker_order_id: str) -> Order:
        raw = await self._call(f"reading order {broker_order_id}", self._trading.get_order_by_id,
                               _order_uuid(broker_order_id), GetOrderByIdRequest(nested=True))
        return self._to_order(raw)

    async def find_order(self, client_order_id: str) -> Order | None:
        try:
            raw = await self._call(f"looking up client order id {client_order_id}",
                                   self._trading.get_order_by_client_id, client_order_id)
        except AlpacaNotFound:
            return None
        if _word(raw.order_class) != "simple" and not raw.legs:
            return await self.get_order(str(raw.id))      # make sure the legs come with it
        return self._to_order(raw)

    async def list_orders(self, open_only: bool = True, symbol: Symbol | None = None) -> list[Order]:
        query = GetOrdersRequest(status=QueryOrderStatus.OPEN if open_only else QueryOrderStatus.ALL, nested=True,
                                 limit=500, symbols=[_ticker(symbol)] if symbol else None)
        raws = await self._call("listing orders", self._trading.get_orders, query)
        return [self._to_order(raw) for raw in raws]

    def _to_order(self, raw: Any, parent_id: str | None = None) -> Order:
        broker_id = str(raw.id)
        parent_id = parent_id or self._leg_parents.get(broker_id)
        for leg in raw.legs or ():
            self._leg_parents[str(leg.id)] = broker_id
        quantity = _shares(raw.qty)
        filled = _shares(raw.filled_qty)
        order_type = _ORDER_TYPES[_word(raw.type or raw.order_type)]
        status = _order_status(_word(raw.status), filled, quantity)
        return Order(
            broker_order_id=broker_id, client_order_id=raw.client_order_id, symbol=_symbol(raw.symbol),
            side=_ORDER_SIDES[_word(raw.side)], order_type=order_type, quantity=quantity, status=status,
            filled_quantity=filled, avg_fill_price=_decimal(raw.filled_avg_price) if filled else None,
            limit_price=_decimal(raw.limit_price), stop_price=_decimal(raw.stop_price),
            created_at=raw.created_at, updated_at=raw.updated_at,
            reject_reason="rejected by Alpaca" if status is OrderStatus.REJECTED else None,
            purpose=self._purpose(raw, order_type, parent_id), parent_order_id=parent_id,
            legs=tuple(self._to_order(leg, broker_id) for leg in raw.legs or ()),
        )

    def _purpose(self, raw: Any, order_type: OrderType, parent_id: str | None) -> OrderPurpose:
        if parent_id is not None:
            return OrderPurpose.BACKSTOP_TARGET if order_type is OrderType.LIMIT else OrderPurpose.BACKSTOP_STOP
        return self._purposes.get(raw.client_order_id, OrderPurpose.ENTRY)

    # -- account ------------------------------------------------------------------------------
    async def positions(self) -> list[BrokerPosition]:
        raws = await self._call("reading positions", self._trading.get_all_positions)
        return [_position(raw) for raw in raws]

    async def account(self) -> Account:
        raw = await self._call("reading the account", self._trading.get_account)
        return Account(cash=Decimal(str(raw.cash)), equity=Decimal(str(raw.equity)), currency=raw.currency or "USD",
                       buying_power=_decimal(raw.buying_power))

    async def fills(self, since: datetime, symbol: Symbol | None = None) -> list[Fill]:
        """Executions since ``since`` from the account activities (type FILL), oldest first."""
        if since.tzinfo is None:
            raise ValueError("fills(since=...) needs a timezone-aware time")
        wanted = _ticker(symbol) if symbol else None
        now = self._clock.now()
        out = [f for f in map(_fill, await self._fill_activities(since))
               if (wanted is None or f.symbol.code == wanted) and f.time <= now]
        return sorted(out, key=lambda f: (f.time, f.fill_id))

    async def _fill_activities(self, since: datetime) -> list[dict]:
        params: dict[str, Any] = {"after": since.isoformat(), "direction": "asc", "page_size": _ACTIVITY_PAGE_SIZE}
        rows: list[dict] = []
        while True:
            page = await self._call("reading fills", self._trading.get, "/account/activities/FILL", dict(params))
            rows.extend(page or [])
            if not page or len(page) < _ACTIVITY_PAGE_SIZE or params.get("page_token") == page[-1]["id"]:
                return rows
            params["page_token"] = page[-1]["id"]

    # -- subscriptions ------------------------------------------------------------------------
    def subscribe_quotes(self, symbols: Sequence[Symbol], on_quote: Callable[[Quote], None]) -> Subscription:
        loop = self._agent_loop()
        subscription = CallbackSubscription()
        listener = _Listener(on_quote, subscription, frozenset(_ticker(s) for s in symbols))
        if not listener.tickers:
            return subscription
        if not self._streaming:
            return self._start_poll(loop, listener, self._poll_quotes(list(symbols), listener))
        if self._quote_feed is None:
            self._quote_feed = _QuoteFeed(loop, self._new_data_stream)
        feed = self._quote_feed
        feed.add(listener)
        subscription._on_close = lambda: feed.remove(listener)
        return subscription

    def subscribe_orders(self, on_order: Callable[[Order], None]) -> Subscription:
        loop = self._agent_loop()
        subscription = CallbackSubscription()
        listener = _Listener(on_order, subscription)
        if not self._streaming:
            return self._start_poll(loop, listener, self._poll_orders(listener, self._clock.now()))
        if self._order_feed is None:
            self._order_feed = _OrderFeed(loop, self._new_trading_stream, self._to_order)
        feed = self._order_feed
        feed.add(listener)
        subscription._on_close = lambda: feed.remove(listener)
        return subscription

    def _agent_loop(self) -> asyncio.AbstractEventLoop:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                raise BrokerError("subscribe from the agent's event loop, or call connect() first") from None
            return self._loop

    def _new_data_stream(self) -> StockDataStream:
        return StockDataStream(self._key, self._secret, feed=self._feed, url_override=self._data_stream_url)

    def _new_trading_stream(self) -> TradingStream:
        return TradingStream(self._key, self._secret, paper=not self._live, url_override=self._trading_stream_url)

    def _start_poll(self, loop: asyncio.AbstractEventLoop, listener: _Listener, poll: Any) -> Subscription:
        task = loop.create_task(poll)
        entry = _PollTask(task, listener)
        self._polls.append(entry)

        def stop() -> None:
            task.cancel()
            if entry in self._polls:
                self._polls.remove(entry)

        listener.subscription._on_close = stop
        return listener.subscription

    async def _poll_quotes(self, symbols: list[Symbol], listener: _Listener) -> None:
        last: dict[Symbol, Quote] = {}
        while not listener.subscription.closed:
            try:
                snapshots = await self.snapshots(symbols)
            except Exception as exc:  # a failed poll is retried; it never ends the subscription
                log.warning("quote poll failed, trying again in %.0f s: %s", self._poll_seconds, exc)
            else:
                for symbol, snapshot in snapshots.items():
                    if last.get(symbol) != snapshot.quote:
                        last[symbol] = snapshot.quote
                        listener.deliver(snapshot.quote)
            await self._clock.sleep(self._poll_seconds)

    async def _poll_orders(self, listener: _Listener, subscribed_at: datetime) -> None:
        seen: dict[str, tuple[OrderStatus, int]] = {}
        first = True
        while not listener.subscription.closed:
            try:
                orders = await self._orders_since(subscribed_at - timedelta(days=1))
            except Exception as exc:  # a failed poll is retried; it never ends the subscription
                log.warning("order poll failed, trying again in %.0f s: %s", self._poll_seconds, exc)
            else:
                for order in orders:
                    state = (order.status, order.filled_quantity)
                    if seen.get(order.broker_order_id) == state:
                        continue
                    seen[order.broker_order_id] = state
                    unchanged_since_subscribing = first and order.updated_at and order.updated_at <= subscribed_at
                    if not unchanged_since_subscribing:
                        listener.deliver(order)
                first = False
            await self._clock.sleep(self._poll_seconds)

    async def _orders_since(self, after: datetime) -> list[Order]:
        query = GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True, limit=500, after=after)
        raws = await self._call("polling orders", self._trading.get_orders, query)
        flat: list[Order] = []
        for order in (self._to_order(raw) for raw in raws):
            flat.append(order)
            flat.extend(order.legs)
        return flat


# --- Mapping helpers that need no broker state ------------------------------------------------
def _check_endpoint_matches_mode(base_url: str, live: bool) -> None:
    host = urlsplit(base_url).hostname or ""
    if not live and host == LIVE_HOST:
        raise ConfigError(f"ALPACA_BASE_URL points at the LIVE endpoint ({host}) but the agent runs in paper mode; "
                          f"use https://{PAPER_HOST} or trade live with --live and a live profile")
    if live and host == PAPER_HOST:
        raise ConfigError(f"live trading was requested but ALPACA_BASE_URL is the paper endpoint ({host}); "
                          f"unset it or use https://{LIVE_HOST}")


def _derived_stream_url(rest_url: str | None, path: str) -> str | None:
    """A websocket URL on the same host as an overridden REST URL (a proxy or a test server).

    None (the SDK's own endpoints) when the REST URL is Alpaca's own or not overridden: Alpaca
    serves market-data streams from a different host than market-data REST.
    """
    if not rest_url:
        return None
    parts = urlsplit(rest_url)
    if (parts.hostname or "").endswith("alpaca.markets"):
        return None
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{path}"


def _required(request: OrderRequest, name: str) -> Decimal:
    value = getattr(request, name)
    if value is None:
        raise OrderRejected(f"{request.client_order_id}: a {request.order_type.value} order needs {name}")
    return value


def _refuse_prices(request: OrderRequest, *names: str) -> None:
    given = [n for n in names if getattr(request, n) is not None]
    if given:
        raise OrderRejected(f"{request.client_order_id}: a {request.order_type.value} order takes no "
                            f"{', '.join(given)}")


def _order_uuid(broker_order_id: str) -> UUID:
    try:
        return UUID(str(broker_order_id))
    except ValueError:
        raise BrokerError(f"'{broker_order_id}' is not an Alpaca order id (they are UUIDs)") from None


def _order_status(word: str, filled: int, quantity: int) -> OrderStatus:
    status = _STATUS.get(word)
    if status is None:
        log.warning("unknown Alpaca order status %r; treating the order as still working", word)
        status = OrderStatus.SUBMITTED
    if word == "calculated" and quantity and filled >= quantity:
        return OrderStatus.FILLED
    if status is OrderStatus.SUBMITTED and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def _position(raw: Any) -> BrokerPosition:
    side_word = _word(raw.side)
    if side_word not in _POSITION_SIDES:
        raise BrokerError(f"Alpaca reported position {raw.symbol} with side {side_word!r}; expected long or short")
    return BrokerPosition(symbol=_symbol(raw.symbol), side=_POSITION_SIDES[side_word], quantity=abs(_shares(raw.qty)),
                          avg_cost=Decimal(str(raw.avg_entry_price)), market_price=_decimal(raw.current_price))


def _fill(row: dict) -> Fill:
    side_word = str(row.get("side", "")).lower()
    if side_word not in _FILL_SIDES:
        raise BrokerError(f"Alpaca fill {row.get('id')} has side {side_word!r}; expected buy, sell or sell_short")
    return Fill(broker_order_id=str(row["order_id"]), symbol=_symbol(row["symbol"]), side=_FILL_SIDES[side_word],
                quantity=_shares(row["qty"]), price=Decimal(str(row["price"])),
                time=pd.Timestamp(row["transaction_time"]).tz_convert("UTC").to_pydatetime(),
                fill_id=str(row["id"]))


def _snapshot_quote(symbol: Symbol, snap: Any) -> Quote:
    trade, quote, daily, previous = snap.latest_trade, snap.latest_quote, snap.daily_bar, snap.previous_daily_bar
    times = [x.timestamp for x in (trade, quote) if x is not None]
    when = max(times)
    bid = float(quote.bid_price) if quote and quote.bid_price else None
    ask = float(quote.ask_price) if quote and quote.ask_price else None
    price = float(trade.price) if trade else (bid + ask) / 2 if bid and ask else (bid or ask)
    last = _tick_price(price, when)
    # Before the session opens Alpaca's "daily bar" is the previous session's.
    today = daily if daily is not None and when - daily.timestamp < timedelta(hours=24) else None
    prev_close = (previous.close if previous else None) if today is not None else (daily.close if daily else None)
    return Quote(
        symbol=symbol, time=when, price=last,
        bid=_tick_price(bid, when) if bid else last, ask=_tick_price(ask, when) if ask else last,
        volume=int(today.volume) if today else 0,
        open=_tick_price(today.open, when) if today else None,
        high=_tick_price(today.high, when) if today else None,
        low=_tick_price(today.low, when) if today else None,
        prev_close=_tick_price(prev_close, when) if prev_close else None,
    )
