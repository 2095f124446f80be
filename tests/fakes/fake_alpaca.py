"""A fake Alpaca (trading + market data REST, trading and data websockets) for the REAL alpaca-py.

    TradingClient(key, secret, paper=True, url_override=fake.base_url)
    StockHistoricalDataClient(key, secret, url_override=fake.base_url)
    TradingStream(key, secret, url_override=fake.trading_stream_url)        # JSON frames
    StockDataStream(key, secret, url_override=fake.data_stream_url)         # msgpack frames

The SDK builds URLs as ``base_url + "/v2" + path``, so one HTTP server serves trading and data.
Started from ``shared/reference/sdk-fakes/fake_alpaca.py`` and grown for the adapter's tests.

How it behaves (chosen deliberately, change per test):
* ``fill_market_orders=True``: a marketable order fills at once at the fake price; with False every
  order stays ``new`` until the next ``set_price`` (or an explicit ``fill``).
* ``partial_fill_ratio``: when set (0 < r < 1) an automatic fill executes only ``int(qty * r)``
  shares and leaves the order ``partially_filled``; ``fill(order_id, qty, price)`` executes any
  part by hand.
* Bracket/OTO legs are ``held`` until the parent is completely filled, then ``new``; a leg that
  fills cancels its sibling (OCO). Cancelling a parent cancels its working legs.
* Duplicate ``client_order_id`` -> 422 "client_order_id must be unique" (as the real API).
* Buys above 2x cash -> 403 "insufficient buying power".
* ``sip_permitted=False`` (set the attribute): an account whose plan has no SIP (the free Basic
  plan). Bars on ``feed=sip`` ending within the last 15 minutes answer 403 "subscription does not
  permit querying recent SIP data", as Alpaca does (docs, Market Data FAQ); older SIP is served.
* ``inject_error(method, path, status, message)`` makes the next matching request(s) fail.
* ``outage = True``: the venue is down: every request's connection is closed with no answer
  (``requests`` still records it). ``lose_next_answer(method, path)``: the next matching request
  is carried out (an order placed) and its answer lost (the connection closed before it).
* News API (``/v1beta1/news``, alpaca-py's ``NewsClient``): articles given by ``add_news``,
  filtered by symbols and start/end (inclusive), newest first, at most ``limit``.
* Every request is recorded (``requests``; ``count``/``bodies`` for assertions).
* Account activities ``FILL`` record every execution (fills and partial fills).
* Websocket pushes: trade_updates (new, fill, partial_fill, canceled); data frames t/q/b/d
  for subscribed symbols on every price move.
* Market-data mode (``serve_market(series, now=sim_clock.peek)``): the tradable symbols become the
  given ``BarSeries`` (US tickers), and snapshots, latest quotes/trades, 1-minute and daily bars,
  order times and fills follow the bars at ``now()`` (``tests/fakes/bar_market.py``): last price,
  a one-cent bid/ask, the day's open/high/low/volume so far, the previous close. Market orders buy
  at the ask and sell at the bid; working orders (bracket legs, limits, stops) are worked whenever
  a request shows that the price moved, so a leg fills at the fake when the market gets there.
  Time passing alone sends nothing over the websockets: clients poll.

Timestamps come from ``self.now`` (the host clock unless ``serve_market`` gave another).
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import msgpack
import websockets
from websockets.asyncio.server import serve as ws_serve

from tests.fakes.bar_market import BarTape, MarketState, bid_ask

OPEN_STATUSES = {"new", "accepted", "held", "partially_filled", "pending_new"}
WORKING_STATUSES = {"new", "accepted", "partially_filled", "pending_new"}   # may execute now
FINAL_STATUSES = {"filled", "canceled", "expired", "rejected"}
SIP_REFUSAL = "subscription does not permit querying recent SIP data"
SIP_DELAY = timedelta(minutes=15)       # a plan without SIP may read SIP bars older than this
DEFAULT_PRICES = {"AAPL": 190.0, "MSFT": 410.0, "SPY": 500.0, "PENNY": 0.5}
ASSET_NAMES = {"AAPL": "Apple Inc. Common Stock", "MSFT": "Microsoft Corporation Common Stock",
               "SPY": "SPDR S&P 500 ETF Trust", "PENNY": "Penny Stock Corp"}
TIMEFRAMES = {"1Min": timedelta(minutes=1), "1T": timedelta(minutes=1), "5Min": timedelta(minutes=5),
              "15Min": timedelta(minutes=15), "1Hour": timedelta(hours=1), "1H": timedelta(hours=1),
              "1Day": timedelta(days=1), "1D": timedelta(days=1)}


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def now() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def asset_id(sym: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"alpaca-fake-{sym}"))


def num(x: float) -> str:
    """A quantity or price as the API writes it (strings; whole numbers without decimals)."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict
    body: object


@dataclass
class InjectedError:
    method: str
    path: str
    status: int
    message: str
    code: int
    times: int


class FakeAlpaca:
    def __init__(self, api_key: str = "test-key", secret_key: str = "test-secret", cash: float = 100_000.0,
                 fill_market_orders: bool = True, partial_fill_ratio: float | None = None,
                 bars_page_size: int = 10_000, prices: dict[str, float] | None = None):
        self.api_key, self.secret_key = api_key, secret_key
        self.cash = cash
        self.fill_market_orders = fill_market_orders
        self.partial_fill_ratio = partial_fill_ratio
        self.bars_page_size = bars_page_size   # server-side page cap (real API: 10k); lower it to test paging
        self.sip_permitted = True              # False: a plan without SIP (free): recent SIP refused, as Alpaca does
        self.prices = dict(prices or DEFAULT_PRICES)
        self.day_volume = {s: 1_000_000 for s in self.prices}
        self.day_open = dict(self.prices)
        self.day_high = dict(self.prices)
        self.day_low = dict(self.prices)
        self.prev_close = {s: round(p * 0.99, 2) for s, p in self.prices.items()}
        self.orders: dict[str, dict] = {}
        self.positions: dict[str, dict] = {}      # sym -> {"qty": float (negative = short), "avg": float}
        self.lowest_position: dict[str, float] = {}  # sym -> the lowest quantity ever held (< 0: was short)
        self.activities: list[dict] = []
        self.requests: list[RecordedRequest] = []
        self.errors: list[InjectedError] = []
        self.outage = False                        # True: the venue is down, no request gets an answer
        self.answers_lost: list[tuple[str, str]] = []  # (method, path prefix): carried out, answer dropped
        self.lock = threading.RLock()
        self.account_id = str(uuid.uuid4())
        self.now = now                             # the venue's clock (serve_market replaces it)
        self.names = dict(ASSET_NAMES)
        self.news: list[dict] = []                 # the news API's articles (add_news), any order
        self._tapes: dict[str, BarTape] = {}        # market-data mode: ticker -> bars
        self._states: dict[str, MarketState] = {}
        self._synced_at: datetime | None = None
        self._ws_trade_clients: set = set()
        self._ws_data_clients: dict = {}           # ws -> {"trades": set, "quotes": set, "bars": set, "dailyBars": set}
        self._ws_loop: asyncio.AbstractEventLoop | None = None
        self._ws_stop: asyncio.Event | None = None
        self._ws_thread: threading.Thread | None = None
        self.http: ThreadingHTTPServer | None = None
        self.rest_port: int | None = None
        self.ws_port: int | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def trading_stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/stream"

    @property
    def data_stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/v2/iex"

    # ------------------------------------------------------------------ test controls
    def inject_error(self, method: str, path: str, status: int, message: str, code: int | None = None,
                     times: int = 1) -> None:
        """The next ``times`` requests whose method matches and whose path starts with ``path`` fail."""
        with self.lock:
            self.errors.append(InjectedError(method.upper(), path, status, message,
                                             code if code is not None else status * 100000, times))

    def lose_next_answer(self, method: str, path: str) -> None:
        """The next request whose method matches and whose path starts with ``path`` is carried out
        and its answer lost (the connection is closed before it)."""
        with self.lock:
            self.answers_lost.append((method.upper(), path))

    def _answer_lost(self, method: str, path: str) -> bool:
        with self.lock:
            for i, (m, prefix) in enumerate(self.answers_lost):
                if m == method and path.startswith(prefix):
                    del self.answers_lost[i]
                    return True
            return False

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method.upper() and r.path == path)

    def bodies(self, method: str, path: str) -> list:
        return [r.body for r in self.requests if r.method == method.upper() and r.path == path]

    def order_by_client_id(self, client_order_id: str) -> dict | None:
        with self.lock:
            return next((self.public(o) for o in self.orders.values() if o["client_order_id"] == client_order_id),
                        None)

    def set_position(self, sym: str, qty: float, avg: float) -> None:
        """Put a position straight into the account (negative qty = short)."""
        with self.lock:
            self.positions[sym] = {"qty": float(qty), "avg": float(avg)}

    def set_price(self, sym: str, px: float) -> None:
        """Move the price: working orders that became marketable execute; streams get t/q/b/d."""
        events: list = []
        with self.lock:
            self._move_price(sym, px)
            for o in list(self.orders.values()):
                if o["symbol"] == sym and o["status"] in WORKING_STATUSES and self._marketable(o, px):
                    self._execute(o, self._auto_fill_qty(o), self._exec_px(o, px), events)
        self._emit(events)
        self._emit_market_data(sym)

    def fill(self, order_id: str, qty: float | None = None, price: float | None = None) -> dict:
        """Execute ``qty`` (default: all that remains) of a working order at ``price`` (default: the fake price)."""
        events: list = []
        with self.lock:
            o = self.orders[order_id]
            if o["status"] not in OPEN_STATUSES:
                raise ValueError(f"order {order_id} is {o['status']}; it cannot fill")
            remaining = float(o["qty"]) - float(o["filled_qty"])
            self._execute(o, remaining if qty is None else float(qty),
                          self.prices[o["symbol"]] if price is None else float(price), events)
            result = self.public(o)
        self._emit(events)
        return result

    def wait_for_stream_clients(self, trade: int = 0, data: int = 0, timeout: float = 5.0) -> bool:
        """Block until that many trade-update listeners and data subscribers are connected."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            subscribed = sum(1 for subs in list(self._ws_data_clients.values()) if any(subs.values()))
            if len(self._ws_trade_clients) >= trade and subscribed >= data:
                return True
            time.sleep(0.02)
        return False

    # ------------------------------------------------------------------ market-data mode
    def serve_market(self, series: dict, now) -> None:
        """Trade exactly ``series`` (``{Symbol: BarSeries}``, US) with prices from their bars at ``now()``
        (timezone-aware, e.g. ``SimClock.peek``)."""
        with self.lock:
            self.now = now
            self._tapes = {symbol.code: BarTape(s, "America/New_York") for symbol, s in series.items()}
            self.names.update({symbol.code: s.name for symbol, s in series.items()})
            self.prices, self._states, self._synced_at = {}, {}, None
            self._sync_market()

    def _sync_market(self) -> None:
        """Bring every symbol to its bars at now; working orders that became marketable execute."""
        if not self._tapes:
            return
        t = self.now()
        if t == self._synced_at:
            return
        self._synced_at = t
        events: list = []
        for sym, tape in self._tapes.items():
            state = tape.state(t)
            if state is None:
                continue
            moved = sym not in self._states or self._states[sym].price != state.price
            self._states[sym] = state
            self.prices[sym] = state.price
            self.day_open[sym], self.day_high[sym], self.day_low[sym] = state.open, state.high, state.low
            self.day_volume[sym] = state.volume
            self.prev_close[sym] = state.prev_close or state.price
            if moved:
                for o in list(self.orders.values()):
                    if o["symbol"] == sym and o["status"] in WORKING_STATUSES and self._marketable(o, state.price):
                        self._execute(o, self._auto_fill_qty(o), self._exec_px(o, state.price), events)
        self._emit(events)

    def _exec_px(self, o: dict, last: float) -> float:
        """What an order trades at now: the ask for a buy, the bid for a sell in market mode (the
        last price otherwise)."""
        state = self._states.get(o["symbol"])
        if state is None:
            return last
        bid, ask = bid_ask(last, "US", state.day)
        return ask if o["side"] == "buy" else bid

    # ------------------------------------------------------------------ order model
    def _new_order(self, sym, qty, side, typ, tif, order_class="simple", limit=None, stop=None, client_id=None,
                   status="accepted", parent=None) -> dict:
        t = iso(self.now())
        o = {
            "id": str(uuid.uuid4()), "client_order_id": client_id or str(uuid.uuid4()),
            "created_at": t, "updated_at": t, "submitted_at": t,
            "filled_at": None, "expired_at": None, "expires_at": None, "canceled_at": None, "failed_at": None,
            "replaced_at": None, "replaced_by": None, "replaces": None,
            "asset_id": asset_id(sym), "symbol": sym, "asset_class": "us_equity", "notional": None,
            "qty": num(qty), "filled_qty": "0", "filled_avg_price": None,
            "order_class": order_class, "order_type": typ, "type": typ, "side": side,
            "position_intent": "buy_to_open" if side == "buy" else "sell_to_close",
            "time_in_force": tif, "limit_price": None if limit is None else num(limit),
            "stop_price": None if stop is None else num(stop), "status": status, "extended_hours": False,
            "legs": None, "trail_percent": None, "trail_price": None, "hwm": None,
            "_parent": parent, "_legs": [],
        }
        self.orders[o["id"]] = o
        return o

    @staticmethod
    def public(o: dict, nested: bool = True) -> dict:
        d = {k: v for k, v in o.items() if not k.startswith("_")}
        d["legs"] = [FakeAlpaca.public(leg) for leg in o["_legs"]] if nested and o["_legs"] else None
        return d

    def _marketable(self, o: dict, px: float) -> bool:
        typ, side = o["type"], o["side"]
        if typ == "market":
            return True
        if typ == "limit":
            lp = float(o["limit_price"])
            px = self._exec_px(o, px)
            return px <= lp if side == "buy" else px >= lp
        if typ in ("stop", "stop_limit"):
            sp = float(o["stop_price"])
            return px >= sp if side == "buy" else px <= sp
        return False

    def _auto_fill_qty(self, o: dict) -> float:
        remaining = float(o["qty"]) - float(o["filled_qty"])
        if self.partial_fill_ratio and float(o["filled_qty"]) == 0:
            return max(1.0, float(int(float(o["qty"]) * self.partial_fill_ratio)))
        return remaining

    def _execute(self, o: dict, qty: float, px: float, events: list) -> None:
        """One execution of ``qty`` shares at ``px``: order, position, cash, activity, events."""
        filled_before = float(o["filled_qty"])
        qty = min(qty, float(o["qty"]) - filled_before)
        if qty <= 0:
            return
        self._book_position(o["symbol"], o["side"], qty, px)
        filled = filled_before + qty
        avg_before = float(o["filled_avg_price"] or 0)
        t = iso(self.now())
        complete = filled >= float(o["qty"])
        o.update(status="filled" if complete else "partially_filled", filled_qty=num(filled),
                 filled_avg_price=num(round((avg_before * filled_before + px * qty) / filled, 6)), updated_at=t,
                 filled_at=t if complete else None)
        self._record_activity(o, qty, px, t)
        events.append(("fill" if complete else "partial_fill", self.public(o), px, qty))
        if complete:
            self._on_complete(o, t, events)

    def _on_complete(self, o: dict, t: str, events: list) -> None:
        for leg in o["_legs"]:                     # bracket parent filled -> its legs start working
            leg.update(status="new", updated_at=t)
            events.append(("new", self.public(leg), None, None))
        parent = self.orders.get(o["_parent"]) if o["_parent"] else None
        if parent:                                 # OCO: a filled leg cancels its sibling
            for sibling in parent["_legs"]:
                if sibling is not o and sibling["status"] in OPEN_STATUSES:
                    sibling.update(status="canceled", canceled_at=t, updated_at=t)
                    events.append(("canceled", self.public(sibling), None, None))

    def _book_position(self, sym: str, side: str, qty: float, px: float) -> None:
        signed = qty if side == "buy" else -qty
        p = self.positions.setdefault(sym, {"qty": 0.0, "avg": 0.0})
        old = p["qty"]
        new = old + signed
        if old == 0 or (old > 0) == (signed > 0):          # opening or adding
            p["avg"] = (abs(old) * p["avg"] + qty * px) / abs(new)
        elif (old > 0) != (new > 0) and new != 0:         # crossed through flat
            p["avg"] = px
        p["qty"] = new
        self.lowest_position[sym] = min(self.lowest_position.get(sym, 0.0), new)
        if new == 0:
            del self.positions[sym]
        self.cash -= signed * px

    def _record_activity(self, o: dict, qty: float, px: float, t: str) -> None:
        stamp = self.now().strftime("%Y%m%d%H%M%S%f")[:17]
        self.activities.append({
            "id": f"{stamp}::{uuid.uuid4()}", "activity_type": "FILL", "transaction_time": t,
            "type": "fill" if o["status"] == "filled" else "partial_fill", "price": num(px), "qty": num(qty),
            "side": o["side"], "symbol": o["symbol"], "leaves_qty": num(float(o["qty"]) - float(o["filled_qty"])),
            "order_id": o["id"], "cum_qty": o["filled_qty"], "order_status": o["status"],
        })

    def _cancel(self, o: dict, events: list) -> None:
        t = iso(self.now())
        o.update(status="canceled", canceled_at=t, updated_at=t)
        events.append(("canceled", self.public(o), None, None))
        for leg in o["_legs"]:
            if leg["status"] in OPEN_STATUSES:
                leg.update(status="canceled", canceled_at=t, updated_at=t)
                events.append(("canceled", self.public(leg), None, None))

    def _move_price(self, sym: str, px: float) -> None:
        self.prices[sym] = px
        self.day_high[sym] = max(self.day_high.get(sym, px), px)
        self.day_low[sym] = min(self.day_low.get(sym, px), px)
        self.day_volume[sym] = self.day_volume.get(sym, 0) + 100

    # ------------------------------------------------------------------ REST
    def handle(self, method: str, path: str, query: dict, body) -> tuple[int, object]:
        """Returns (status, json-able or None)."""
        with self.lock:
            # alpaca-py sends Python bools in query strings as "True"/"False": compare case-insensitively
            q = {k: (v[0].lower() if v[0] in ("True", "False") else v[0]) for k, v in query.items()}
            self.requests.append(RecordedRequest(method, path, q, body))
            if path.startswith("/_fake/"):
                return self._control(path, body)
            self._sync_market()
            injected = self._take_injected(method, path)
            if injected:
                return injected.status, {"code": injected.code, "message": injected.message}
            for route in (self._trading_routes, self._data_routes):
                result = route(method, path, q, body)
                if result is not None:
                    return result
            return 404, {"code": 40410000, "message": f"fake alpaca: no route {method} {path}"}

    def _control(self, path: str, body) -> tuple[int, object]:
        if path == "/_fake/price":
            self.set_price(body["symbol"], float(body["price"]))
            return 200, {"ok": True}
        return 404, {"code": 40410000, "message": f"no control {path}"}

    def _take_injected(self, method: str, path: str) -> InjectedError | None:
        for err in self.errors:
            if err.method == method and path.startswith(err.path) and err.times > 0:
                err.times -= 1
                return err
        return None

    def _trading_routes(self, method, path, q, body):
        if path == "/v2/account" and method == "GET":
            return 200, self._account()
        if path == "/v2/clock":
            n = self.now()
            return 200, {"timestamp": iso(n), "is_open": True, "next_open": iso(n + timedelta(days=1)),
                         "next_close": iso(n + timedelta(hours=3))}
        if path == "/v2/positions" and method == "GET":
            return 200, [self._position(s) for s in self.positions]
        if path.startswith("/v2/positions/"):
            return self._position_route(method, path.rsplit("/", 1)[1])
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            found = self.order_by_client_id(q.get("client_order_id", ""))
            return (200, found) if found else (404, {"code": 40410000, "message": "order not found"})
        if path == "/v2/orders" and method == "POST":
            return self._submit(body)
        if path == "/v2/orders" and method == "GET":
            return 200, self._list_orders(q)
        if path == "/v2/orders" and method == "DELETE":
            return self._cancel_all()
        if path.startswith("/v2/orders/"):
            return self._order_route(method, path.rsplit("/", 1)[1])
        if path.startswith("/v2/account/activities"):
            return 200, self._activities(path, q)
        if path.startswith("/v2/assets/"):
            return self._asset(path.rsplit("/", 1)[1])
        return None

    def add_news(self, headline: str, symbols: list[str], created_at: datetime, summary: str = "",
                 url: str | None = None, source: str = "benzinga") -> dict:
        """An article of the news API (``/v1beta1/news``, what ``NewsClient.get_news`` calls)."""
        with self.lock:
            article = {"id": 24_000_000 + len(self.news), "headline": headline, "author": "Fake Author",
                       "created_at": iso(created_at), "updated_at": iso(created_at), "summary": summary,
                       "content": "", "url": url or f"https://news.invalid/alpaca/{len(self.news)}", "images": [],
                       "symbols": list(symbols), "source": source}
            self.news.append(article)
            return article

    def _news(self, q: dict) -> tuple[int, object]:
        wanted = set(q["symbols"].split(",")) if q.get("symbols") else None
        start = parse_time(q["start"]) if q.get("start") else None
        end = parse_time(q["end"]) if q.get("end") else None
        hits = [a for a in self.news
                if (wanted is None or wanted & set(a["symbols"]))
                and (start is None or parse_time(a["created_at"]) >= start)
                and (end is None or parse_time(a["created_at"]) <= end)]
        hits.sort(key=lambda a: a["created_at"], reverse=q.get("sort", "desc") == "desc")
        limit = int(q.get("limit") or 10)
        return 200, {"news": hits[:limit], "next_page_token": None}

    def _data_routes(self, method, path, q, body):
        if path == "/v1beta1/news" and method == "GET":
            return self._news(q)
        if path == "/v2/stocks/bars":
            return self._bars(q)
        if path == "/v2/stocks/snapshots":
            return 200, {s: self._snapshot(s) for s in q["symbols"].split(",") if s in self.prices}
        if path in ("/v2/stocks/quotes/latest", "/v2/stocks/trades/latest", "/v2/stocks/bars/latest"):
            syms = [s for s in q["symbols"].split(",") if s in self.prices]
            kind = path.split("/")[3]
            make = {"quotes": self._quote_dict, "trades": self._trade_dict,
                    "bars": self._minute_bar_now}[kind]
            return 200, {kind: {s: make(s) for s in syms}}
        return None

    def _account(self) -> dict:
        mv = sum(p["qty"] * self.prices[s] for s, p in self.positions.items())
        long_mv = sum(p["qty"] * self.prices[s] for s, p in self.positions.items() if p["qty"] > 0)
        equity = self.cash + mv
        return {
            "id": self.account_id, "account_number": "PA3FAKE0001", "status": "ACTIVE",
            "crypto_status": "ACTIVE", "currency": "USD", "buying_power": f"{self.cash * 2:.2f}",
            "regt_buying_power": f"{self.cash * 2:.2f}", "daytrading_buying_power": f"{self.cash * 4:.2f}",
            "non_marginable_buying_power": f"{self.cash:.2f}", "cash": f"{self.cash:.2f}",
            "accrued_fees": "0", "pending_transfer_in": "0", "portfolio_value": f"{equity:.2f}",
            "pattern_day_trader": False, "trading_blocked": False, "transfers_blocked": False,
            "account_blocked": False, "created_at": "2024-01-02T15:00:00Z", "trade_suspended_by_user": False,
            "multiplier": "2", "shorting_enabled": True, "equity": f"{equity:.2f}",
            "last_equity": f"{equity:.2f}", "long_market_value": f"{long_mv:.2f}",
            "short_market_value": f"{mv - long_mv:.2f}", "initial_margin": "0", "maintenance_margin": "0",
            "last_maintenance_margin": "0", "sma": "0", "daytrade_count": 0,
            "options_buying_power": f"{self.cash:.2f}", "options_approved_level": 0, "options_trading_level": 0,
        }

    def _position(self, s: str) -> dict:
        p, px = self.positions[s], self.prices[s]
        qty = p["qty"]
        return {
            "asset_id": asset_id(s), "symbol": s, "exchange": "NASDAQ", "asset_class": "us_equity",
            "asset_marginable": True, "qty": num(qty), "qty_available": num(qty),
            "avg_entry_price": f"{p['avg']:.4f}", "side": "long" if qty > 0 else "short",
            "market_value": f"{qty * px:.2f}", "cost_basis": f"{qty * p['avg']:.2f}",
            "unrealized_pl": f"{qty * (px - p['avg']):.2f}",
            "unrealized_plpc": f"{(px / p['avg'] - 1) if p['avg'] else 0:.6f}",
            "unrealized_intraday_pl": "0", "unrealized_intraday_plpc": "0", "current_price": num(px),
            "lastday_price": num(self.prev_close.get(s, px)), "change_today": "0",
        }

    def _position_route(self, method, sym):
        if sym not in self.positions:
            return 404, {"code": 40410000, "message": "position does not exist"}
        if method == "GET":
            return 200, self._position(sym)
        if method == "DELETE":
            qty = self.positions[sym]["qty"]
            o = self._new_order(sym, abs(qty), "sell" if qty > 0 else "buy", "market", "day")
            events: list = []
            self._execute(o, abs(qty), self.prices[sym], events)
            self._emit(events)
            return 200, self.public(o)
        return None

    def _submit(self, b: dict) -> tuple[int, object]:
        sym, side, typ, tif = b["symbol"], b["side"], b["type"], b["time_in_force"]
        if sym not in self.prices:
            return 422, {"code": 42210000, "message": f"asset \"{sym}\" not found"}
        if b.get("client_order_id") and self.order_by_client_id(b["client_order_id"]):
            return 422, {"code": 40010001, "message": "client_order_id must be unique"}
        if b.get("qty") is None:
            return 422, {"code": 40010001, "message": "qty is required"}
        qty = float(b["qty"])
        px = self.prices[sym]
        if side == "buy" and qty * px > self.cash * 2:
            return 403, {"code": 40310000, "message": "insufficient buying power"}
        oc = b.get("order_class") or "simple"
        if oc == "bracket" and not (b.get("take_profit") and b.get("stop_loss")):
            return 422, {"code": 42210000, "message": "bracket orders require take_profit and stop_loss"}
        parent = self._new_order(sym, qty, side, typ, tif, oc, b.get("limit_price"), b.get("stop_price"),
                                 b.get("client_order_id"))
        exit_side = "sell" if side == "buy" else "buy"
        if b.get("take_profit"):
            parent["_legs"].append(self._new_order(sym, qty, exit_side, "limit", tif, oc,
                                                   b["take_profit"]["limit_price"], status="held",
                                                   parent=parent["id"]))
        if b.get("stop_loss"):
            sl = b["stop_loss"]
            parent["_legs"].append(self._new_order(sym, qty, exit_side, "stop_limit" if sl.get("limit_price") else "stop",
                                                   tif, oc, sl.get("limit_price"), sl["stop_price"], status="held",
                                                   parent=parent["id"]))
        parent["status"] = "new"
        events = [("new", self.public(parent), None, None)]
        if self.fill_market_orders and self._marketable(parent, px):
            self._execute(parent, self._auto_fill_qty(parent), self._exec_px(parent, px), events)
        self._emit(events)
        return 200, self.public(parent)

    def _list_orders(self, q: dict) -> list:
        status = q.get("status", "open")
        nested = q.get("nested") == "true"
        syms = set(q["symbols"].split(",")) if q.get("symbols") else None
        after = parse_time(q["after"]) if q.get("after") else None
        out = [o for o in self.orders.values() if not (nested and o["_parent"])]

        def is_open(o):  # with nested=true a parent counts as open while any leg still works
            return o["status"] in OPEN_STATUSES or (nested and any(l["status"] in OPEN_STATUSES for l in o["_legs"]))
        out = [o for o in out if status == "all" or is_open(o) == (status == "open")]
        if syms:
            out = [o for o in out if o["symbol"] in syms]
        if after:
            out = [o for o in out if parse_time(o["submitted_at"]) > after]
        out.sort(key=lambda o: o["created_at"], reverse=q.get("direction", "desc") == "desc")
        return [self.public(o, nested) for o in out[: int(q.get("limit", 50))]]

    def _order_route(self, method, order_id):
        o = self.orders.get(order_id)
        if not o:
            return 404, {"code": 40410000, "message": "order not found"}
        if method == "GET":
            return 200, self.public(o)
        if method == "DELETE":
            if o["status"] in FINAL_STATUSES:
                return 422, {"code": 42210000, "message": f"order is already in \"{o['status']}\" state"}
            events: list = []
            self._cancel(o, events)
            self._emit(events)
            return 204, None
        return None

    def _cancel_all(self):
        res, events = [], []
        for o in list(self.orders.values()):
            if o["status"] in OPEN_STATUSES and not o["_parent"]:
                self._cancel(o, events)
                res.append({"id": o["id"], "status": 200, "body": None})
        self._emit(events)
        return 207, res

    def _activities(self, path: str, q: dict) -> list:
        kind = path.rsplit("/", 1)[1] if path.count("/") > 3 else q.get("activity_types", "FILL")
        items = [a for a in self.activities if a["activity_type"] in kind.split(",")]
        if q.get("after"):
            items = [a for a in items if parse_time(a["transaction_time"]) > parse_time(q["after"])]
        if q.get("until"):
            items = [a for a in items if parse_time(a["transaction_time"]) < parse_time(q["until"])]
        items.sort(key=lambda a: a["id"], reverse=q.get("direction", "desc") == "desc")
        if q.get("page_token"):
            ids = [a["id"] for a in items]
            items = items[ids.index(q["page_token"]) + 1:] if q["page_token"] in ids else []
        return items[: int(q.get("page_size", 100))]

    def _asset(self, sym):
        if sym not in self.prices:
            return 404, {"code": 40410000, "message": "asset not found"}
        return 200, {"id": asset_id(sym), "class": "us_equity", "exchange": "NASDAQ", "symbol": sym,
                     "name": self.names.get(sym, sym), "status": "active", "tradable": True, "marginable": True,
                     "shortable": True, "easy_to_borrow": True, "fractionable": True}

    # ------------------------------------------------------------------ market data
    def _quote_dict(self, s: str) -> dict:
        px = self.prices[s]
        state = self._states.get(s)
        if state is not None:
            bp, ap = bid_ask(px, "US", state.day)
        else:
            tick = 0.01 if px >= 1 else 0.0001
            bp, ap = round(px - tick, 4), round(px + tick, 4)
        return {"t": iso(self._print_time(s)), "ax": "V", "ap": ap, "as": 3, "bx": "V", "bp": bp, "bs": 5,
                "c": ["R"], "z": "C"}

    def _print_time(self, s: str) -> datetime:
        """When the current price printed: its bar step in market mode, else now."""
        state = self._states.get(s)
        return state.time if state is not None else self.now()

    def _trade_dict(self, s: str) -> dict:
        return {"t": iso(self._print_time(s)), "x": "V", "p": self.prices[s], "s": 100, "i": 52983525029461,
                "c": ["@"], "z": "C"}

    def _day_start(self, s: str) -> datetime:
        tape = self._tapes.get(s)
        if tape is not None:
            return tape.midnight(self.now().astimezone(tape.tz).date())
        return self.now().replace(hour=4, minute=0, second=0, microsecond=0)

    def _daily_dict(self, s: str) -> dict:
        return {"t": iso(self._day_start(s)), "o": self.day_open[s], "h": self.day_high[s], "l": self.day_low[s],
                "c": self.prices[s], "v": self.day_volume[s], "n": 1000, "vw": self.prices[s]}

    def _minute_bar_now(self, s: str) -> dict:
        tape = self._tapes.get(s)
        if tape is not None:
            bars = tape.minute_bars(self.now() - timedelta(minutes=1), self.now(), self.now())
            if bars:
                return self._tape_bar_dict(bars[-1])
        return self._bar_dict(s, self.now().replace(second=0, microsecond=0), timedelta(minutes=1))

    @staticmethod
    def _tape_bar_dict(b) -> dict:
        return {"t": iso(b.open_time), "o": b.open, "h": b.high, "l": b.low, "c": b.close, "v": b.volume, "n": 1,
                "vw": round((b.open + b.close) / 2, 4)}

    def _snapshot(self, s: str) -> dict:
        day = self._day_start(s)
        prev = {"t": iso(day - timedelta(days=1)), "o": self.prev_close[s], "h": self.prev_close[s],
                "l": self.prev_close[s], "c": self.prev_close[s], "v": 900_000, "n": 900, "vw": self.prev_close[s]}
        return {"latestTrade": self._trade_dict(s), "latestQuote": self._quote_dict(s),
                "minuteBar": self._minute_bar_now(s), "dailyBar": self._daily_dict(s), "prevDailyBar": prev}

    def _bar_dict(self, sym: str, t: datetime, span: timedelta) -> dict:
        k = int(t.timestamp() // 60)
        base = self.prices[sym]
        o = base * (1 + ((k * 7919) % 41 - 20) / 10000)
        c = base * (1 + ((k * 104729) % 41 - 20) / 10000)
        v = (1000 + (k % 97) * 10) * max(1, int(span / timedelta(minutes=1)))
        return {"t": iso(t), "o": round(o, 4), "h": round(max(o, c) * 1.001, 4), "l": round(min(o, c) * 0.999, 4),
                "c": round(c, 4), "v": v, "n": 10 + k % 13, "vw": round((o + c) / 2, 4)}

    def _bar_times(self, start: datetime, end: datetime, span: timedelta):
        if span >= timedelta(days=1):          # one bar per weekday, stamped 04:00Z like Alpaca's daily bars
            t = start.replace(hour=4, minute=0, second=0, microsecond=0)
            if t < start:
                t += span
            while t <= end:
                if t.weekday() < 5:
                    yield t
                t += span
            return
        epoch_minutes = int(start.timestamp() // 60)
        step = int(span.total_seconds() // 60)
        t = datetime.fromtimestamp(-(-epoch_minutes // step) * step * 60, timezone.utc)
        while t <= end:
            yield t
            t += span

    def _bars(self, q: dict):
        span = TIMEFRAMES.get(q.get("timeframe", ""))
        if span is None:
            return 422, {"code": 42210000, "message": f"fake alpaca does not serve timeframe={q.get('timeframe')}"}
        syms = [s for s in q["symbols"].split(",") if s in self.prices]
        start = parse_time(q["start"]) if q.get("start") else self.now() - timedelta(hours=1)
        end = parse_time(q["end"]) if q.get("end") else self.now() - timedelta(minutes=15)
        limit = min(int(q.get("limit") or 10000), self.bars_page_size)
        offset = int(q["page_token"]) if q.get("page_token") else 0
        if q.get("feed") == "sip" and not self.sip_permitted and end > self.now() - SIP_DELAY:
            return 403, {"message": SIP_REFUSAL}
        if self._tapes:
            return self._tape_bars(syms, span, start, end, limit, offset)
        seq = []                                # (symbol, time) across symbols, paginated like the real API
        for s in syms:
            for t in self._bar_times(start, end, span):
                seq.append((s, t))
                if len(seq) > 200_000:
                    break
        out: dict = {}
        for s, t in seq[offset: offset + limit]:
            out.setdefault(s, []).append(self._bar_dict(s, t, span))
        nxt = str(offset + limit) if offset + limit < len(seq) else None
        return 200, {"bars": out, "next_page_token": nxt}

    def _tape_bars(self, syms: list, span: timedelta, start: datetime, end: datetime, limit: int, offset: int):
        """Market mode: the bars themselves (1Min, 1Day), up to now; the forming one partly formed."""
        at = self.now()
        seq = []
        for s in syms:
            tape = self._tapes.get(s)
            if tape is None:
                continue
            if span == timedelta(minutes=1):
                bars = tape.minute_bars(start, end, at)
            elif span == timedelta(days=1):
                bars = [b for b in tape.daily_bars(start.astimezone(tape.tz).date(), end.astimezone(tape.tz).date(), at)
                        if start <= b.open_time <= end]
            else:
                return 422, {"code": 42210000, "message": "fake alpaca market mode serves 1Min and 1Day bars only"}
            seq.extend((s, b) for b in bars)
        out: dict = {}
        for s, b in seq[offset: offset + limit]:
            out.setdefault(s, []).append(self._tape_bar_dict(b))
        nxt = str(offset + limit) if offset + limit < len(seq) else None
        return 200, {"bars": out, "next_page_token": nxt}

    # ------------------------------------------------------------------ websockets
    def _emit(self, events: list) -> None:
        if not events or self._ws_loop is None:
            return
        msgs = []
        for ev, o, px, qty in events:
            d = {"event": ev, "timestamp": iso(self.now()), "order": o}   # o: public snapshot taken at event time
            if ev in ("fill", "partial_fill"):
                d.update(price=num(px), qty=num(qty), execution_id=str(uuid.uuid4()),
                         position_qty=num(self.positions.get(o["symbol"], {}).get("qty", 0)))
            msgs.append(json.dumps({"stream": "trade_updates", "data": d}).encode())   # real API: binary frames
        for ws in list(self._ws_trade_clients):
            asyncio.run_coroutine_threadsafe(self._send_all(ws, msgs), self._ws_loop)

    def _emit_market_data(self, sym: str) -> None:
        if self._ws_loop is None:
            return
        stamp = msgpack.Timestamp.from_datetime(self.now())
        minute = self.now().replace(second=0, microsecond=0)
        with self.lock:
            trade = {"T": "t", "S": sym, **self._trade_dict(sym), "t": stamp}
            quote = {"T": "q", "S": sym, **self._quote_dict(sym), "t": stamp}
            bar = {"T": "b", "S": sym, **self._bar_dict(sym, minute, timedelta(minutes=1)),
                   "t": msgpack.Timestamp.from_datetime(minute)}
            daily_raw = self._daily_dict(sym)
            daily = {"T": "d", "S": sym, **daily_raw, "t": msgpack.Timestamp.from_datetime(parse_time(daily_raw["t"]))}
        by_channel = {"trades": trade, "quotes": quote, "bars": bar, "dailyBars": daily}
        for ws, subs in list(self._ws_data_clients.items()):
            frame = [msg for channel, msg in by_channel.items() if sym in subs[channel] or "*" in subs[channel]]
            if frame:
                asyncio.run_coroutine_threadsafe(self._send_all(ws, [msgpack.packb(frame)]), self._ws_loop)

    @staticmethod
    async def _send_all(ws, frames) -> None:
        try:
            for frame in frames:
                await ws.send(frame)
        except websockets.ConnectionClosed:
            pass

    async def _ws_handler(self, ws) -> None:
        try:
            if ws.request.path.startswith("/stream"):
                await self._trading_ws(ws)
            else:                                # StockDataStream: msgpack, path /v2/iex or /v2/sip
                await self._data_ws(ws)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._ws_trade_clients.discard(ws)
            self._ws_data_clients.pop(ws, None)

    async def _trading_ws(self, ws) -> None:
        msg = json.loads(await ws.recv())
        data = msg.get("data") or {}
        ok = (msg.get("action") in ("authenticate", "auth") and data.get("key_id") == self.api_key
              and data.get("secret_key") == self.secret_key)
        await ws.send(json.dumps({"stream": "authorization", "data": {
            "action": "authenticate", "status": "authorized" if ok else "unauthorized"}}).encode())
        if not ok:
            return
        async for raw in ws:
            m = json.loads(raw)
            if m.get("action") == "listen":
                self._ws_trade_clients.add(ws)
                await ws.send(json.dumps({"stream": "listening", "data": m["data"]}).encode())

    async def _data_ws(self, ws) -> None:
        await ws.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
        auth = msgpack.unpackb(await ws.recv())
        if auth.get("key") != self.api_key or auth.get("secret") != self.secret_key:
            await ws.send(msgpack.packb([{"T": "error", "code": 402, "msg": "auth failed"}]))
            return
        await ws.send(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
        subs = {"trades": set(), "quotes": set(), "bars": set(), "dailyBars": set()}
        self._ws_data_clients[ws] = subs
        async for raw in ws:                     # subscribe messages may arrive fragmented: the lib reassembles
            m = msgpack.unpackb(raw)
            action = m.get("action")
            for channel in subs:
                if action == "subscribe":
                    subs[channel] |= set(m.get(channel, []))
                elif action == "unsubscribe":
                    subs[channel] -= set(m.get(channel, []))
            await ws.send(msgpack.packb([{"T": "subscription", **{c: sorted(v) for c, v in subs.items()}}]))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeAlpaca":
        self._start_http()
        self._start_ws()
        return self

    def _start_http(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out as two writes: with Nagle's algorithm on, the client's
            # delayed ACK holds every answer ~40 ms (a whole-session test made hundreds of requests).
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _do(self, method):
                u = urlparse(self.path)
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                authorized = (self.headers.get("APCA-API-KEY-ID") == fake.api_key
                              and self.headers.get("APCA-API-SECRET-KEY") == fake.secret_key)
                if fake.outage and not u.path.startswith("/_fake"):
                    fake.requests.append(RecordedRequest(method, u.path, {}, body))
                    self.close_connection = True          # down: no answer at all
                    return
                if not u.path.startswith("/_fake") and not authorized:
                    status, payload = 401, {"code": 40110000, "message": "request is not authorized"}
                else:
                    status, payload = fake.handle(method, u.path, parse_qs(u.query), body)
                if fake._answer_lost(method, u.path):
                    self.close_connection = True          # done, but the answer never reaches the client
                    return
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._do("GET")

            def do_POST(self):
                self._do("POST")

            def do_DELETE(self):
                self._do("DELETE")

            def do_PATCH(self):
                self._do("PATCH")

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        self.rest_port = self.http.server_address[1]
        threading.Thread(target=self.http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                         name="fake-alpaca-rest").start()

    def _start_ws(self) -> None:
        ready = threading.Event()

        async def main():
            self._ws_loop = asyncio.get_running_loop()
            self._ws_stop = asyncio.Event()
            async with ws_serve(self._ws_handler, "127.0.0.1", 0) as server:
                self.ws_port = list(server.sockets)[0].getsockname()[1]
                ready.set()
                await self._ws_stop.wait()

        self._ws_thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True, name="fake-alpaca-ws")
        self._ws_thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake alpaca websocket server did not start within 5 s")

    def stop(self) -> None:
        if self.http:
            self.http.shutdown()
            self.http.server_close()
        if self._ws_loop and self._ws_stop:
            self._ws_loop.call_soon_threadsafe(self._ws_stop.set)
            self._ws_thread.join(5)
        self._ws_loop = None
