"""Moomoo / Futu OpenD: HK (and US) securities through ``moomoo-api``, behind the ``Broker`` contract.

The adapter's parts, one job each: ``moomoo_sdk`` (the SDK loaded once; contexts that reconnect),
``moomoo_limits`` (client-side rate limits), ``moomoo_wire`` (SDK codes and frames in our types),
``moomoo_orders`` (order checks and placement arguments), ``moomoo_failures`` (what OpenD's
failures mean). Decisions, with their sources:

* Paper (``TrdEnv.SIMULATE``) accounts take only limit (``NORMAL``) and market orders (Futu OpenAPI
  trade definitions, OrderType: "Paper trade only supports limit orders (NORMAL) and market orders
  (MARKET)"; FAQ "How to use paper trading": "Order Types: limit order and market order"). So
  ``supports_stop_orders`` is False on SIMULATE and a stop order is refused here with that reason,
  before anything is sent. REAL securities accounts list STOP / STOP_LIMIT without a market
  restriction (trigger price in ``aux_price``), so REAL defaults to True.
* Paper trading has no deal data ("Paper trading does not support deals related operations": the
  real OpenD answers "Paper trading does not support deal data."). On SIMULATE, ``fills`` is built
  from the orders' filled quantity and average price, one aggregated fill per order.
* Rate limits (Futu): see ``moomoo_limits``. Client-side sliding windows wait on the injected
  clock, never ``time.sleep``; so do the retries of transient failures (``ops.retry``).
* Futu stamps a minute K-line with its END time; ``bars`` returns bars by open time in UTC, as the
  contract asks (``moomoo_wire.bars_frame``).
* ``accinfo_query`` has no "today's P&L" fields; ``account`` reports cash, total assets and power
  only (daily P&L comes from our own fills and marks).
* Every blocking SDK call runs in a worker thread inside ``external_io()``, so a simulated clock
  never moves while OpenD is working for us. The SDK's own connect wait is bounded by
  ``set_sync_query_connect_timeout``, so an absent OpenD fails fast instead of hanging.

The trade password is used only for ``unlock_trade`` on REAL accounts; it never enters a log line
or an error message (messages from OpenD are scrubbed of it as well).
"""
from __future__ import annotations

import asyncio
import enum
import logging
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

import pandas as pd
from pydantic import SecretStr
from tenacity import AsyncRetrying

from brokers.base import (
    Account,
    BrokerError,
    BrokerPosition,
    Capabilities,
    Disconnected,
    Fill,
    HistoryQuota,
    Order,
    OrderPurpose,
    OrderRejected,
    OrderRequest,
    Quote,
    RateLimited,
    Snapshot,
    Subscription,
    Timeframe,
    UnknownSymbol,
)
from brokers.moomoo_failures import SdkFailure, Transient, broker_error, rejection
from brokers.moomoo_limits import HISTORY_RATE, ORDER_RATE, SNAPSHOT_RATE, RateLimit, SlidingWindowLimiter
from brokers.moomoo_orders import placement_args, validate_request
from brokers.moomoo_push import LoopHandOff, PushListeners
from brokers.moomoo_sdk import load_sdk
from brokers.moomoo_wire import (
    EXCHANGE_TZ,
    KTYPES,
    OPEN_SDK_STATUSES,
    as_decimal,
    as_number,
    bars_frame,
    empty_bars,
    fill_from_deal,
    fill_from_order,
    history_window,
    order_from_row,
    position_from_row,
    quota_from,
    quote_from_push,
    snapshot_from_row,
    truthy,
)
from core.clock import Clock, external_io
from core.instruments import Market, Symbol, check_lot_multiple, parse_symbol
from ops.retry import retrying

log = logging.getLogger("catalyst.brokers.moomoo")

DEFAULT_PORT = 11111
SNAPSHOT_BATCH = 400                 # codes per get_market_snapshot call (Futu limit)


class TradingEnvironment(str, enum.Enum):
    SIMULATE = "SIMULATE"
    REAL = "REAL"


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
        self._retry_attempts, self._retry_base_seconds = retry_attempts, retry_base_seconds
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
        self._hand_off = LoopHandOff()
        self._lot_sizes: dict[Symbol, int] = {}
        self._purposes: dict[str, OrderPurpose] = {}
        self._placement_locks: dict[str, asyncio.Lock] = {}
        self._quote_listeners: PushListeners[Quote] = PushListeners()
        self._order_listeners: PushListeners[Order] = PushListeners()
        self._subscribed: set[str] = set()
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
        self._hand_off.loop = asyncio.get_running_loop()
        sdk = await self._in_thread(load_sdk)
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
        self._hand_off.cancel_all()
        contexts = [ctx for ctx in (self._quote_ctx, self._trade_ctx) if ctx is not None]
        self._quote_ctx = self._trade_ctx = None
        self._subscribed.clear()
        for ctx in contexts:
            await self._in_thread(ctx.close)

    async def _check_gateway(self) -> None:
        state = await self._call_at_connect("connection check", self._quote_ctx.get_global_state)
        if not truthy(state.get("qot_logined")):
            raise Disconnected(f"Moomoo OpenD at {self.address} is running but not logged in to quotes; "
                               "log in to OpenD (account and password in its configuration)")

    async def _call_at_connect(self, what: str, fn: Callable, *args: Any) -> Any:
        """One attempt: a connect wait has already used the whole timeout, so it is not retried."""
        try:
            return await self._call_once(fn, *args)
        except SdkFailure as failure:
            if failure.kind is Transient.DISCONNECT:
                raise Disconnected(f"cannot reach Moomoo OpenD at {self.address} within "
                                   f"{self._connect_timeout:g} s; is OpenD running?") from None
            raise broker_error(what, failure, self.address) from None

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
        return load_sdk().mod

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
        try:
            async for attempt in self._retrying(what):
                with attempt:
                    result = await self._call_once(fn, *args, **kwargs)
        except SdkFailure as failure:
            raise broker_error(what, failure, self.address) from None
        return result

    def _retrying(self, what: str) -> AsyncRetrying:
        """Transient failures (rate limit, disconnect) retried after 1, 2, 4... x ``retry_base_seconds``."""
        def tell(failure: BaseException, attempt: int, delay: float) -> None:
            log.warning("Moomoo %s failed (%s); retry %d/%d in %.1f s", what, failure, attempt,
                        self._retry_attempts, delay)

        return retrying(self._clock, attempts=self._retry_attempts + 1, first_delay=self._retry_base_seconds,
                        retry_on=(SdkFailure,), retry_if=lambda failure: failure.transient, before_sleep=tell)

    async def _call_once(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        result = await self._in_thread(fn, *args, **kwargs)
        ret, data = result[0], result[1]
        if ret != self._moomoo.RET_OK:
            raise SdkFailure(self._scrub(data))
        return data if len(result) == 2 else result[1:]

    def _scrub(self, message: Any) -> str:
        text = str(message)
        if self._password is not None and self._password.get_secret_value():
            text = text.replace(self._password.get_secret_value(), "**********")
        return text

    def _local_now(self) -> datetime:
        return self._clock.now().astimezone(self.tz)

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
                snapshot = snapshot_from_row(row, self.tz, self._clock.now(), self._hk_phase2_date)
                self._lot_sizes[snapshot.quote.symbol] = snapshot.lot_size
                result[snapshot.quote.symbol] = snapshot
        missing = [str(s) for s in wanted if s not in result]
        if missing:
            raise UnknownSymbol(f"Moomoo returned no snapshot for {', '.join(missing)}; check the codes")
        return result

    async def bars(self, symbol: Symbol, timeframe: Timeframe, start: datetime, end: datetime) -> pd.DataFrame:
        self._require_connected()
        symbol = self._own_symbol(symbol)
        timeframe = Timeframe(timeframe)
        now = self._clock.now()
        end = min(end, now)
        if start >= end:
            return empty_bars()
        begin_text, end_text = history_window(timeframe, start, end, self.tz)
        frames, page_key = [], None
        while True:
            await self._history_limiter.acquire()
            frame, page_key = await self._call(
                f"history K-lines of {symbol}", self._quote_ctx.request_history_kline, str(symbol),
                start=begin_text, end=end_text, ktype=KTYPES[timeframe], max_count=self._history_page_size,
                page_req_key=page_key)
            frames.append(frame)
            if page_key is None:
                break
        return bars_frame(pd.concat(frames, ignore_index=True), timeframe, self.market, start, end, now)

    async def history_quota(self) -> HistoryQuota:
        """Futu counts each code whose history K-lines are fetched once per 30 days, up to the account's quota."""
        self._require_connected()
        return quota_from(*await self._call("history K-line quota", self._quote_ctx.get_history_kl_quota,
                                            get_detail=True))

    def subscribe_quotes(self, symbols: Sequence[Symbol], on_quote: Callable[[Quote], None]) -> Subscription:
        self._require_connected()
        codes = frozenset(str(self._own_symbol(s)) for s in symbols)
        subscription = self._quote_listeners.add(on_quote, codes)
        self._hand_off.spawn(self._ensure_subscribed(codes))
        return subscription

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
        self._hand_off.post(self._restore_subscriptions)

    def _restore_subscriptions(self) -> None:
        self.reconnects += 1
        self._subscribed.clear()
        wanted = self._quote_listeners.wanted_codes()
        log.warning("Moomoo quote connection to %s re-established; restoring %d subscriptions", self.address,
                    len(wanted))
        if wanted:
            self._hand_off.spawn(self._ensure_subscribed(wanted))

    def _on_quote_frame(self, frame: pd.DataFrame) -> None:
        """SDK thread: a quote push."""
        quotes = []
        for row in frame.to_dict("records"):
            try:
                quotes.append(quote_from_push(row, self.tz, self._clock.now()))
            except (BrokerError, ValueError) as exc:
                log.warning("ignoring a Moomoo quote push that cannot be read: %s", exc)
        if quotes:
            self._hand_off.post(self._quote_listeners.deliver, quotes)

    # ------------------------------------------------------------------------------ orders
    async def place_order(self, request: OrderRequest) -> Order:
        self._require_connected()
        validate_request(request, market=self.market, stop_orders=self._capabilities.supports_stop_orders,
                         environment=self.trd_env.value, day=self._local_now().date(),
                         hk_phase2_date=self._hk_phase2_date)
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

    async def _board_lot(self, symbol: Symbol) -> int:
        if symbol not in self._lot_sizes:
            await self.snapshots([symbol])
        return self._lot_sizes[symbol]

    async def _submit(self, request: OrderRequest) -> Order:
        kwargs = placement_args(request, self._moomoo, self._trade_args())
        what = f"place order {request.client_order_id} ({request.side.value} {request.quantity} {request.symbol})"
        try:
            async for attempt in self._retrying(what):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        existing = await self._find_today(request.client_order_id)   # a lost reply may have placed it
                        if existing is not None:
                            return existing
                    await self._order_limiter.acquire()
                    placed = await self._call_once(self._trade_ctx.place_order, **kwargs)
        except SdkFailure as failure:
            if not failure.transient:
                raise rejection(request, failure.message) from None
            raise broker_error(what, failure, self.address) from None
        return await self._placed_order(placed)

    async def _placed_order(self, frame: pd.DataFrame) -> Order:
        row = frame.iloc[0].to_dict()
        if as_number(row.get("qty")) is None:   # the SDK could not re-read the order it placed
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
        return order_from_row(row, self.tz, self._purposes)

    def subscribe_orders(self, on_order: Callable[[Order], None]) -> Subscription:
        self._require_connected()
        return self._order_listeners.add(on_order)

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
            self._hand_off.post(self._order_listeners.deliver, orders)

    def _trade_reconnected(self) -> None:
        """SDK thread: the trade connection came back (the SDK re-unlocks and re-subscribes pushes)."""
        log.warning("Moomoo trade connection to %s re-established; order pushes missed meanwhile are not "
                    "replayed, so poll open orders", self.address)

    # ------------------------------------------------------------------------------ account
    async def positions(self) -> list[BrokerPosition]:
        self._require_connected()
        frame = await self._call("read positions", self._trade_ctx.position_list_query, **self._trade_args())
        held = (position_from_row(row) for row in frame.to_dict("records"))
        return [position for position in held if position is not None]

    async def account(self) -> Account:
        self._require_connected()
        frame = await self._call("read account funds", self._trade_ctx.accinfo_query,
                                 currency=self.market.currency, **self._trade_args())
        row = frame.iloc[0].to_dict()
        cash, equity = as_decimal(row.get("cash")), as_decimal(row.get("total_assets"))
        if cash is None or equity is None:
            raise BrokerError(f"Moomoo account {self._account_id} funds have no cash/total_assets: {row}")
        return Account(cash=cash, equity=equity, currency=self.market.currency, buying_power=as_decimal(row.get("power")))

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
        now = self._clock.now()
        return [fill_from_deal(r, self.tz, now) for r in by_id.values() if str(r.get("status", "OK")).upper() in ("OK", "N/A")]

    async def _fills_from_orders(self, since: datetime, code: str) -> list[Fill]:
        """Paper accounts have no deal list: one aggregated fill per order with a filled quantity."""
        rows = (await self._call("read today's orders", self._trade_ctx.order_list_query, code=code,
                                 **self._trade_args())).to_dict("records")
        if since.astimezone(self.tz).date() < self._local_now().date():
            rows += [r for r in await self._history_orders(since.astimezone(self.tz).date())
                     if not code or r.get("code") == code]
        by_order = {str(r["order_id"]): self._order_from_row(r) for r in rows}
        now = self._clock.now()
        return [fill_from_order(o, now) for o in by_order.values()
                if o.filled_quantity > 0 and o.avg_fill_price is not None]

    def _own_symbol(self, symbol: Symbol | str) -> Symbol:
        parsed = parse_symbol(symbol)
        if parsed.market is not self.market:
            raise UnknownSymbol(f"{parsed} is not a {self.market.value} symbol; this Moomoo broker serves "
                                f"{self.market.value} only")
        return parsed
