"""Alpaca adapter: US equities through the real alpaca-py SDK (REST + two websockets).

Its parts: ``alpaca_convert`` (vocabulary tables, tick-grid prices, SDK objects in our types) and
``alpaca_streams`` (the two websockets on threads of their own). Decisions, so nobody has to
rediscover them:

* Paper by default. The live endpoint is used only when constructed with ``live=True``; a base URL
  that contradicts the mode (the live host in paper mode or the reverse) is refused at
  construction.
* Every blocking SDK call runs in a worker thread (``asyncio.to_thread``) inside
  ``clock.external_io()``, so a simulated clock never moves while Alpaca is working for us.
* HTTP: each request has a timeout (``request_timeout_seconds``; the SDK sets none). The SDK's own
  429 retry (3 x ``time.sleep(3)`` in the worker) is switched off; the adapter retries 429 and
  504 itself (``ops.retry``: ``Clock.sleep`` backoff, ``Retry-After`` when given), then raises
  ``RateLimited``.
* Errors become ``BrokerError`` subclasses whose messages say what failed and what to do. They
  never contain the API keys (bodies are scrubbed) and are raised ``from None``: the SDK's
  exceptions carry the HTTP request, whose headers hold the secret key.
* Prices go out on the tick grid (see ``alpaca_convert``). The original lost 95% of its orders to
  sub-penny floats.
* ``place_order`` is idempotent on ``client_order_id``: it looks the id up first, and if Alpaca
  still answers "client_order_id must be unique" (a race, or a retried request that had arrived)
  it returns the order that exists. An order is never sent twice.
* Entries with ``take_profit_price`` and ``stop_loss_price`` go out as ONE bracket order
  (``order_class=bracket``: take-profit limit leg + stop-loss stop leg, held by Alpaca until the
  parent fills, one cancels the other). With only one of the two it is an OTO order.
* Statuses: see ``alpaca_convert.STATUS``. Working states with a fill become PARTIALLY_FILLED;
  ``canceled`` keeps ``filled_quantity`` (a partial fill that was cancelled).
* Deal history (``fills``) comes from the account activities of type FILL: one row per execution.
* Streams: see ``alpaca_streams``. ``streaming=False`` replaces both with polling on the clock.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import urlsplit

import pandas as pd
import requests
from tenacity import AsyncRetrying
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.live import StockDataStream
from alpaca.data.requests import StockBarsRequest, StockSnapshotRequest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.requests import GetOrderByIdRequest, GetOrdersRequest
from alpaca.trading.stream import TradingStream

from brokers.base import (
    Account, BrokerError, BrokerPosition, CallbackSubscription, Capabilities, Disconnected, FeedNotPermitted, Fill,
    InsufficientFunds, Order, OrderPurpose, OrderRejected, OrderRequest, OrderStatus, OrderType, Quote, RateLimited,
    Snapshot, Subscription, Timeframe, UnknownSymbol,
)
from brokers.alpaca_convert import (
    ORDER_SIDES,
    ORDER_TYPES,
    TIMEFRAMES,
    bars_frame,
    empty_bars,
    fill_from,
    optional_decimal,
    order_request,
    order_status,
    order_uuid,
    position_from,
    snapshot_quote,
    us_symbol,
    us_ticker,
    whole_shares,
    wire_word,
)
from brokers.alpaca_streams import Listener, OrderFeed, QuoteFeed
from brokers.http import TimeoutSession
from core.clock import Clock, external_io
from config.settings import ConfigError, Secrets
from core.instruments import Market, Symbol, tick_size
from ops.retry import backoff_seconds, retrying

log = logging.getLogger(__name__)

T = TypeVar("T")

PAPER_HOST = "paper-api.alpaca.markets"
LIVE_HOST = "api.alpaca.markets"
_RETRY_STATUSES = (429, 504)
_MAX_BACKOFF_SECONDS = 30.0
_ACTIVITY_PAGE_SIZE = 100
_STREAM_JOIN_SECONDS = 8.0


class AlpacaNotFound(BrokerError):
    """Alpaca has no such order, position or asset (HTTP 404)."""


class _DuplicateClientOrderId(OrderRejected):
    pass


# --- Small pure helpers -----------------------------------------------------------------------
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


def _retry_after(exc: BaseException) -> float | None:
    """The seconds Alpaca's ``Retry-After`` header asks for, if it sent one."""
    response = getattr(exc, "response", None)
    header = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(header) if header is not None else None
    except ValueError:
        return None


# --- The broker ---------------------------------------------------------------------------------
@dataclass
class _PollTask:
    task: asyncio.Task
    listener: Listener


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
        self._history_feed = self._feed     # what ``bars`` reads: a download may choose another
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
        self._quote_feed: QuoteFeed | None = None
        self._order_feed: OrderFeed | None = None
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
            log.warning("the Alpaca account is blocked for trading (status %s)", wire_word(account.status))
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
        try:
            async for attempt in self._retrying(what):
                with attempt, external_io():
                    result = await asyncio.to_thread(fn, *args)
        except APIError as exc:
            raise self._api_error(exc, what, placing) from None
        except requests.RequestException as exc:
            raise self._unreachable(exc, what, placing) from None
        return result

    def _retrying(self, what: str) -> AsyncRetrying:
        """429 and 504 retried after ``Retry-After`` or 1, 2, 4... x the base, at most 30 s."""
        def tell(exc: BaseException, attempt: int, delay: float) -> None:
            log.warning("Alpaca answered %s while %s; retrying in %.1f s (%d of %d)",
                        getattr(exc, "status_code", "?"), what, delay, attempt, self._retries)

        return retrying(self._clock, attempts=self._retries + 1, first_delay=self._backoff_base,
                        max_delay=_MAX_BACKOFF_SECONDS, retry_on=(APIError,),
                        retry_if=lambda exc: exc.status_code in _RETRY_STATUSES, retry_after=_retry_after,
                        before_sleep=tell)

    def _rate_limit_wait(self, exc: APIError) -> float:
        """What a caller should wait once the retries are used up: Retry-After, or the next back-off."""
        asked = _retry_after(exc)
        if asked is not None:
            return min(asked, _MAX_BACKOFF_SECONDS)
        return backoff_seconds(self._retries + 1, self._backoff_base, _MAX_BACKOFF_SECONDS)

    def _redact(self, text: str) -> str:
        for secret in (self._secret, self._key):
            text = text.replace(secret, "[redacted]")
        return text

    def _api_error(self, exc: APIError, what: str, placing: bool) -> BrokerError:
        status = exc.status_code
        message = self._redact(_api_message(exc))
        lowered = message.lower()
        if status == 429:
            delay = self._rate_limit_wait(exc)
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
        if status == 403 and "sip" in lowered and "not permit" in lowered:
            return FeedNotPermitted(f"Alpaca refused {what} on the SIP feed (403): {message}")
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
        tickers = {us_ticker(s): s for s in symbols}
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
        quote = snapshot_quote(symbol, snap)
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
            return empty_bars()
        ticker = us_ticker(symbol)
        request = StockBarsRequest(symbol_or_symbols=ticker, timeframe=TIMEFRAMES[timeframe], start=start,
                                   end=until, feed=self._history_feed)
        barset = await self._call(f"reading {timeframe.value} bars of {symbol}", self._data.get_stock_bars, request)
        frame = bars_frame(barset.data.get(ticker, []))
        closed = (frame.index >= start) & (frame.index < end) & (frame.index + span <= now)
        return frame[closed]

    @property
    def history_feed(self) -> str:
        return self._history_feed.value

    def use_history_feed(self, feed: str) -> None:
        self._history_feed = DataFeed(feed.lower())

    async def history_quota(self) -> None:
        return None         # Alpaca limits requests per minute, not which symbols' history is read

    # -- orders -------------------------------------------------------------------------------
    async def place_order(self, request: OrderRequest) -> Order:
        sdk_request = order_request(request, self._clock.now().date())      # validates and rounds before anything is sent
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

    async def cancel_order(self, broker_order_id: str) -> Order:
        order_id = order_uuid(broker_order_id)
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
                               order_uuid(broker_order_id), GetOrderByIdRequest(nested=True))
        return self._to_order(raw)

    async def find_order(self, client_order_id: str) -> Order | None:
        try:
            raw = await self._call(f"looking up client order id {client_order_id}",
                                   self._trading.get_order_by_client_id, client_order_id)
        except AlpacaNotFound:
            return None
        if wire_word(raw.order_class) != "simple" and not raw.legs:
            return await self.get_order(str(raw.id))      # make sure the legs come with it
        return self._to_order(raw)

    async def list_orders(self, open_only: bool = True, symbol: Symbol | None = None) -> list[Order]:
        query = GetOrdersRequest(status=QueryOrderStatus.OPEN if open_only else QueryOrderStatus.ALL, nested=True,
                                 limit=500, symbols=[us_ticker(symbol)] if symbol else None)
        raws = await self._call("listing orders", self._trading.get_orders, query)
        return [self._to_order(raw) for raw in raws]

    def _to_order(self, raw: Any, parent_id: str | None = None) -> Order:
        broker_id = str(raw.id)
        parent_id = parent_id or self._leg_parents.get(broker_id)
        for leg in raw.legs or ():
            self._leg_parents[str(leg.id)] = broker_id
        quantity = whole_shares(raw.qty)
        filled = whole_shares(raw.filled_qty)
        order_type = ORDER_TYPES[wire_word(raw.type or raw.order_type)]
        status = order_status(wire_word(raw.status), filled, quantity)
        return Order(
            broker_order_id=broker_id, client_order_id=raw.client_order_id, symbol=us_symbol(raw.symbol),
            side=ORDER_SIDES[wire_word(raw.side)], order_type=order_type, quantity=quantity, status=status,
            filled_quantity=filled, avg_fill_price=optional_decimal(raw.filled_avg_price) if filled else None,
            limit_price=optional_decimal(raw.limit_price), stop_price=optional_decimal(raw.stop_price),
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
        return [position_from(raw) for raw in raws]

    async def account(self) -> Account:
        raw = await self._call("reading the account", self._trading.get_account)
        return Account(cash=Decimal(str(raw.cash)), equity=Decimal(str(raw.equity)), currency=raw.currency or "USD",
                       buying_power=optional_decimal(raw.buying_power))

    async def fills(self, since: datetime, symbol: Symbol | None = None) -> list[Fill]:
        """Executions since ``since`` from the account activities (type FILL), oldest first."""
        if since.tzinfo is None:
            raise ValueError("fills(since=...) needs a timezone-aware time")
        wanted = us_ticker(symbol) if symbol else None
        now = self._clock.now()
        out = [f for f in map(fill_from, await self._fill_activities(since))
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
        listener = Listener(on_quote, subscription, frozenset(us_ticker(s) for s in symbols))
        if not listener.tickers:
            return subscription
        if not self._streaming:
            return self._start_poll(loop, listener, self._poll_quotes(list(symbols), listener))
        if self._quote_feed is None:
            self._quote_feed = QuoteFeed(loop, self._new_data_stream)
        feed = self._quote_feed
        feed.add(listener)
        subscription._on_close = lambda: feed.remove(listener)
        return subscription

    def subscribe_orders(self, on_order: Callable[[Order], None]) -> Subscription:
        loop = self._agent_loop()
        subscription = CallbackSubscription()
        listener = Listener(on_order, subscription)
        if not self._streaming:
            return self._start_poll(loop, listener, self._poll_orders(listener, self._clock.now()))
        if self._order_feed is None:
            self._order_feed = OrderFeed(loop, self._new_trading_stream, self._to_order)
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

    def _start_poll(self, loop: asyncio.AbstractEventLoop, listener: Listener, poll: Any) -> Subscription:
        task = loop.create_task(poll)
        entry = _PollTask(task, listener)
        self._polls.append(entry)

        def stop() -> None:
            task.cancel()
            if entry in self._polls:
                self._polls.remove(entry)

        listener.subscription._on_close = stop
        return listener.subscription

    async def _poll_quotes(self, symbols: list[Symbol], listener: Listener) -> None:
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

    async def _poll_orders(self, listener: Listener, subscribed_at: datetime) -> None:
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

