"""A fake Moomoo/Futu OpenD gateway (asyncio TCP) that the REAL moomoo-api SDK talks to in tests.

Grown from ``reference/sdk-fakes/fake_opend.py``. Wire format (moomoo/common/utils.py ``_joint_head``):
a 44-byte little-endian header ``b"FT", proto_id u32, fmt u8, ver u8, serial u32, body_len u32,
sha1(body) 20s, reserved 8s`` followed by a protobuf body. Responses echo the request's serial
number; pushes use 0. The SDK's own ``*_pb2`` modules are used, so the schema cannot drift.

What it models, beyond the reference fake:

* Times are exchange-local strings in ``tz`` (Hong Kong by default) taken from ``now_local()``,
  which tests can pin (``fake.now_local = lambda: datetime(...)``).
* K-lines: any minute ktype and daily, only inside trading sessions, stamped like Futu does
  (a minute bar's ``time_key`` is the END of the bar: the first HK bar is ``09:31:00``), with
  ``nextReqKey`` paging; the bar still forming at ``now_local()`` is served too, as OpenD does.
* Orders: market / limit / stop / stop-limit, board lots enforced, partial fills planned per
  order (``fill_plans[remark] = [300]``), manual fills (``fill(order_id, qty)``), price moves
  that trigger resting limit and stop orders (``push_quote``), cancels that keep the filled part
  (``CANCELLED_PART``). Every change is pushed as Trd_UpdateOrder (2208); REAL fills also as
  Trd_UpdateOrderFill (2218).
* Stop orders are accepted only where the account allows it: ``simulate_supports_stop`` (False,
  as Futu documents "paper trade only supports limit orders (NORMAL) and market orders (MARKET)")
  and ``real_supports_stop`` (True).
* Deal lists (2211 today, 2222 history) for REAL accounts; SIMULATE answers "Paper trading does
  not support deal data." as the real OpenD does (``simulate_supports_deals`` to change that).
* History order list (2221).
* A per-account record of placement times (``placement_times``) read from ``clock`` (injectable,
  so a simulated clock can be used) and ``max_placements_in_window()`` for throttle tests;
  optional enforcement (``enforce_order_rate``) answering a "too frequent" error.
* ``drop_connections()`` closes every client socket (the SDK reconnects by itself) and
  ``fail_next[proto_id] = "msg"`` injects a one-shot failure; a list gives one entry per request
  (``None`` lets that request through).

Test helpers that touch state from another thread go through the fake's own loop
(``fill``, ``push_quote_sync``, ``drop_connections_sync``, ``set_price``).
"""
from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import signal
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Callable
from zoneinfo import ZoneInfo

# moomoo writes logs under $HOME/.com.moomoo.OpenD/Log on import: tests point HOME somewhere harmless.
os.environ.setdefault("HOME", os.path.join(os.path.dirname(os.path.abspath(__file__)), ".home"))

_previous_sigint = signal.getsignal(signal.SIGINT)
import moomoo  # noqa: E402,F401  (puts moomoo/common/pb on sys.path; pb2 modules import each other top-level)

if threading.current_thread() is threading.main_thread():
    # moomoo installs a SIGINT handler that calls os._exit(0): Ctrl-C would end pytest with status 0.
    signal.signal(signal.SIGINT, _previous_sigint or signal.default_int_handler)

from moomoo.common.pb import (  # noqa: E402
    Common_pb2, GetGlobalState_pb2, InitConnect_pb2, KeepAlive_pb2, Qot_Common_pb2, Qot_GetBasicQot_pb2,
    Qot_GetKL_pb2, Qot_GetSecuritySnapshot_pb2, Qot_RequestHistoryKL_pb2, Qot_Sub_pb2, Qot_UpdateBasicQot_pb2,
    Trd_Common_pb2, Trd_GetAccList_pb2, Trd_GetFunds_pb2, Trd_GetHistoryOrderFillList_pb2,
    Trd_GetHistoryOrderList_pb2, Trd_GetOrderFillList_pb2, Trd_GetOrderList_pb2, Trd_GetPositionList_pb2,
    Trd_ModifyOrder_pb2, Trd_PlaceOrder_pb2, Trd_SubAccPush_pb2, Trd_UnlockTrade_pb2, Trd_UpdateOrder_pb2,
    Trd_UpdateOrderFill_pb2,
)

HEAD_FMT = "<2sIBBII20s8s"
HEAD_LEN = struct.calcsize(HEAD_FMT)  # 44
assert HEAD_LEN == 44

# protocol ids (moomoo.common.constant.ProtoId)
INIT_CONNECT, GET_GLOBAL_STATE, KEEP_ALIVE = 1001, 1002, 1004
TRD_GET_ACC_LIST, TRD_UNLOCK, TRD_SUB_ACC_PUSH = 2001, 2005, 2008
TRD_GET_FUNDS, TRD_GET_POSITIONS = 2101, 2102
TRD_GET_ORDERS, TRD_PLACE_ORDER, TRD_MODIFY_ORDER, TRD_UPDATE_ORDER = 2201, 2202, 2205, 2208
TRD_GET_DEALS, TRD_UPDATE_DEAL, TRD_GET_HISTORY_ORDERS, TRD_GET_HISTORY_DEALS = 2211, 2218, 2221, 2222
QOT_SUB, QOT_GET_BASIC_QOT, QOT_UPDATE_BASIC_QOT, QOT_GET_KL = 3001, 3004, 3005, 3006
QOT_REQ_HISTORY_KL, QOT_GET_SNAPSHOT = 3103, 3203

REQUEST_TYPES = {
    INIT_CONNECT: InitConnect_pb2.Request, GET_GLOBAL_STATE: GetGlobalState_pb2.Request,
    KEEP_ALIVE: KeepAlive_pb2.Request, TRD_GET_ACC_LIST: Trd_GetAccList_pb2.Request,
    TRD_UNLOCK: Trd_UnlockTrade_pb2.Request, TRD_SUB_ACC_PUSH: Trd_SubAccPush_pb2.Request,
    TRD_GET_FUNDS: Trd_GetFunds_pb2.Request, TRD_GET_POSITIONS: Trd_GetPositionList_pb2.Request,
    TRD_GET_ORDERS: Trd_GetOrderList_pb2.Request, TRD_PLACE_ORDER: Trd_PlaceOrder_pb2.Request,
    TRD_MODIFY_ORDER: Trd_ModifyOrder_pb2.Request, TRD_GET_DEALS: Trd_GetOrderFillList_pb2.Request,
    TRD_GET_HISTORY_ORDERS: Trd_GetHistoryOrderList_pb2.Request,
    TRD_GET_HISTORY_DEALS: Trd_GetHistoryOrderFillList_pb2.Request, QOT_SUB: Qot_Sub_pb2.Request,
    QOT_GET_BASIC_QOT: Qot_GetBasicQot_pb2.Request, QOT_GET_KL: Qot_GetKL_pb2.Request,
    QOT_REQ_HISTORY_KL: Qot_RequestHistoryKL_pb2.Request, QOT_GET_SNAPSHOT: Qot_GetSecuritySnapshot_pb2.Request,
}

TS = "%Y-%m-%d %H:%M:%S"
HK = Qot_Common_pb2.QotMarket_HK_Security          # 1 -> "HK." prefix
US = Qot_Common_pb2.QotMarket_US_Security          # 11 -> "US." prefix
MARKET_PREFIX = {"HK": HK, "US": US}
QOT_TO_TRD_SEC = {HK: Trd_Common_pb2.TrdSecMarket_HK, US: Trd_Common_pb2.TrdSecMarket_US}
TRD_SEC_TO_QOT = {v: k for k, v in QOT_TO_TRD_SEC.items()}
SUB_KL = {Qot_Common_pb2.KLType_1Min: Qot_Common_pb2.SubType_KL_1Min, Qot_Common_pb2.KLType_Day: Qot_Common_pb2.SubType_KL_Day,
          Qot_Common_pb2.KLType_5Min: Qot_Common_pb2.SubType_KL_5Min}
KL_MINUTES = {Qot_Common_pb2.KLType_1Min: 1, Qot_Common_pb2.KLType_3Min: 3, Qot_Common_pb2.KLType_5Min: 5,
              Qot_Common_pb2.KLType_15Min: 15, Qot_Common_pb2.KLType_30Min: 30, Qot_Common_pb2.KLType_60Min: 60}
OPEN_STATUSES = {Trd_Common_pb2.OrderStatus_Submitted, Trd_Common_pb2.OrderStatus_Filled_Part,
                 Trd_Common_pb2.OrderStatus_WaitingSubmit, Trd_Common_pb2.OrderStatus_Submitting}
STOP_TYPES = {Trd_Common_pb2.OrderType_Stop, Trd_Common_pb2.OrderType_StopLimit}
BUY_SIDES = {Trd_Common_pb2.TrdSide_Buy, Trd_Common_pb2.TrdSide_BuyBack}
SESSIONS = {  # exchange-local continuous sessions
    HK: ((dtime(9, 30), dtime(12, 0)), (dtime(13, 0), dtime(16, 0))),
    US: ((dtime(9, 30), dtime(16, 0)),),
}
SIMULATE_STOP_REFUSAL = "Paper trading only supports limit orders (NORMAL) and market orders (MARKET)"
SIMULATE_DEAL_REFUSAL = "Paper trading does not support deal data."
ORDER_RATE_REFUSAL = "Order frequency too high: at most {limit} orders per {window:g} seconds per account"


def pack(proto_id: int, serial_no: int, msg, fmt: int = 0) -> bytes:
    body = msg.SerializeToString()  # raises if a `required` field is missing -> catches fake bugs early
    return struct.pack(HEAD_FMT, b"FT", proto_id, fmt, 0, serial_no, len(body), hashlib.sha1(body).digest(), b"\0" * 8) + body


def _fmt_ms(t: datetime) -> str:
    return t.strftime(TS) + f".{t.microsecond // 1000:03d}"


# ----------------------------------------------------------------------------------------------- state
@dataclass
class Instrument:
    market: int
    code: str
    name: str
    lot_size: int
    price: float
    prev_close: float
    tick: float = 0.01
    volume: int = 1_000_000


@dataclass
class Order:
    order_id: int
    acc_id: int
    trd_env: int
    trd_market: int
    sec_market: int
    code: str
    name: str
    side: int
    order_type: int
    qty: float
    price: float
    status: int
    created: datetime
    updated: datetime
    fill_qty: float = 0.0
    fill_price: float = 0.0
    aux_price: float | None = None
    remark: str = ""
    err: str = ""

    @property
    def remaining(self) -> float:
        return self.qty - self.fill_qty

    @property
    def is_buy(self) -> bool:
        return self.side in BUY_SIDES


@dataclass
class Deal:
    deal_id: int
    order_id: int
    code: str
    name: str
    sec_market: int
    trd_market: int
    side: int
    qty: float
    price: float
    created: datetime


@dataclass
class Position:
    code: str
    name: str
    sec_market: int
    qty: float = 0.0
    cost: float = 0.0


@dataclass
class Account:
    acc_id: int
    trd_env: int
    markets: list
    firm: int = Trd_Common_pb2.SecurityFirm_FutuSecurities
    cash: float = 1_000_000.0
    positions: dict = field(default_factory=dict)   # code -> Position
    orders: dict = field(default_factory=dict)      # order_id -> Order
    deals: list = field(default_factory=list)       # [Deal]
    placement_times: list = field(default_factory=list)  # clock() of every place-order request

    @property
    def is_real(self) -> bool:
        return self.trd_env == Trd_Common_pb2.TrdEnv_Real


SIMULATE_ACC, REAL_ACC = 9001, 8001


class FakeOpenD:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, trade_password: str = "123456",
                 auto_fill_market_orders: bool = True, tz: str = "Asia/Hong_Kong",
                 clock: Callable[[], float] = time.monotonic):
        self.host, self.port = host, port
        self.trade_password_md5 = hashlib.md5(trade_password.encode()).hexdigest()
        self.auto_fill = auto_fill_market_orders
        self.tz = ZoneInfo(tz)
        self.clock = clock                      # seconds; what the order-rate record uses
        self.now_local: Callable[[], datetime] = lambda: datetime.now(self.tz).replace(tzinfo=None)
        self.instruments = {
            (HK, "00700"): Instrument(HK, "00700", "TENCENT", 100, 380.0, 375.0, tick=0.2),
            (HK, "09988"): Instrument(HK, "09988", "BABA-W", 100, 80.0, 79.5, tick=0.05),
            (HK, "02328"): Instrument(HK, "02328", "PICC P&C", 2000, 15.84, 15.7, tick=0.01),
            (HK, "09618"): Instrument(HK, "09618", "JD-SW", 50, 130.0, 128.0, tick=0.1),
            (US, "AAPL"): Instrument(US, "AAPL", "Apple", 1, 190.0, 189.0, tick=0.01),
        }
        self.accounts = {
            # SIMULATE HK securities account + a REAL one (unlock_trade() insists on a REAL acc being listed)
            SIMULATE_ACC: Account(SIMULATE_ACC, Trd_Common_pb2.TrdEnv_Simulate, [Trd_Common_pb2.TrdMarket_HK]),
            REAL_ACC: Account(REAL_ACC, Trd_Common_pb2.TrdEnv_Real, [Trd_Common_pb2.TrdMarket_HK]),
        }
        # Capability flags (what the real service does, per Futu's documentation).
        self.simulate_supports_stop = False
        self.real_supports_stop = True
        self.simulate_supports_deals = False
        self.enforce_order_rate = False
        self.order_rate_limit = 15
        self.order_rate_window = 30.0
        self.qot_logined = True
        # Test controls.
        self.fill_plans: dict[str, list[int]] = {}   # remark -> quantities filled at placement (rest stays open)
        self.fail_next: dict[int, str | list[str]] = {}  # proto_id -> error message(s), one per request
        self.unlocked = False
        self.calls: list[tuple[int, object]] = []   # (proto_id, request pb) log for assertions
        self.init_connects = 0
        self.conn_ids = itertools.count(7_000_000_000_000_000_001)
        self.order_ids = itertools.count(5_000_001)
        self.deal_ids = itertools.count(8_000_001)
        self._writers: dict[int, asyncio.StreamWriter] = {}  # conn_id -> writer
        self._all_writers: set[asyncio.StreamWriter] = set()
        self._subs: dict[int, set] = {}             # conn_id -> {(subtype, market, code)}
        self._acc_push: dict[int, set] = {}         # conn_id -> acc ids
        self._pending_push: list[tuple[int, int, object]] = []  # (proto_id, conn_id, response pb) sent after the reply
        self._server = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self):
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self):
        self._server.close()
        await self.drop_connections()
        await self._server.wait_closed()

    def start_in_thread(self) -> int:
        """Run the server in a daemon thread with its own loop (the SDK itself is sync/threaded)."""
        ready = threading.Event()

        def run():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-opend")
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("fake OpenD did not start within 5 s")
        return self.port

    def stop_thread(self):
        if self._loop and self._thread:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def call(self, fn: Callable, *args, timeout: float = 5.0):
        """Run ``fn(*args)`` (plain or coroutine function) on the fake's loop and return its result."""
        async def run():
            result = fn(*args)
            if asyncio.iscoroutine(result):
                result = await result
            await self._flush_pushes()
            return result
        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    # ------------------------------------------------------------------ test helpers (thread-safe)
    @property
    def connection_count(self) -> int:
        return len(self._writers)

    def calls_of(self, proto_id: int) -> list:
        return [req for pid, req in list(self.calls) if pid == proto_id]

    def order_by_remark(self, remark: str, acc_id: int = SIMULATE_ACC) -> Order | None:
        return next((o for o in list(self.accounts[acc_id].orders.values()) if o.remark == remark), None)

    def placements(self, acc_id: int = SIMULATE_ACC) -> int:
        return len(self.accounts[acc_id].placement_times)

    def max_placements_in_window(self, acc_id: int = SIMULATE_ACC, window: float | None = None) -> int:
        """The most place-order requests seen in any sliding window of ``window`` seconds."""
        window = self.order_rate_window if window is None else window
        stamps = sorted(self.accounts[acc_id].placement_times)
        best, lo = 0, 0
        for hi, t in enumerate(stamps):
            while t - stamps[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    def subscribed(self, code: str, market: int = HK, subtype: int = Qot_Common_pb2.SubType_Basic) -> bool:
        """True when some live connection is subscribed to ``code`` for ``subtype``."""
        return any((subtype, market, code) in subs for cid, subs in list(self._subs.items()) if cid in self._writers)

    def fill(self, order_id: int | str, qty: float | None = None, price: float | None = None,
             acc_id: int = SIMULATE_ACC) -> None:
        """Fill ``qty`` (default: the rest) of an open order and push the update."""
        self.call(self._fill_by_id, acc_id, int(order_id), qty, price)

    def set_price(self, market: int, code: str, price: float) -> None:
        """Move a price (resting orders that become marketable fill) without a quote push."""
        self.call(self._move_price, market, code, price)

    def push_quote_sync(self, market: int, code: str, price: float) -> None:
        self.call(self.push_quote, market, code, price)

    def drop_connections_sync(self) -> None:
        self.call(self.drop_connections)

    async def drop_connections(self) -> None:
        """Close every client socket, as an OpenD restart would. The SDK reconnects by itself."""
        for w in list(self._all_writers):
            w.close()
        for w in list(self._all_writers):
            try:
                await w.wait_closed()
            except (ConnectionError, OSError):
                pass

    # ------------------------------------------------------------------ connection loop
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        conn_id = None
        self._all_writers.add(writer)
        try:
            while True:
                head = await reader.readexactly(HEAD_LEN)
                magic, proto_id, fmt, _ver, serial, body_len, sha, _ = struct.unpack(HEAD_FMT, head)
                if magic != b"FT":
                    break
                body = await reader.readexactly(body_len)
                if hashlib.sha1(body).digest() != sha:
                    break
                rsp, new_conn = self._dispatch(proto_id, body, conn_id)
                if new_conn is not None:
                    conn_id = new_conn
                    self._writers[conn_id] = writer
                writer.write(pack(proto_id, serial, rsp))
                await writer.drain()
                await self._flush_pushes()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._all_writers.discard(writer)
            if conn_id is not None:
                self._writers.pop(conn_id, None)
                self._subs.pop(conn_id, None)
                self._acc_push.pop(conn_id, None)
            writer.close()

    def _dispatch(self, proto_id: int, body: bytes, conn_id):
        req_type = REQUEST_TYPES.get(proto_id)
        if req_type is None:
            return self._generic_error(f"fake OpenD: proto {proto_id} not implemented"), None
        req = req_type()
        req.ParseFromString(body)
        self.calls.append((proto_id, req))
        if proto_id == TRD_PLACE_ORDER:
            self._record_placement(req.c2s.header.accID)
        failure = self._take_failure(proto_id)
        if failure is not None:
            return self._generic_error(failure), None
        handler = getattr(self, f"h_{proto_id}")
        if proto_id == INIT_CONNECT:
            new_conn, rsp = handler(req)
            return rsp, new_conn
        return handler(req, conn_id), None

    def _take_failure(self, proto_id: int) -> str | None:
        pending = self.fail_next.get(proto_id)
        if pending is None:
            return None
        if isinstance(pending, list):   # one entry per request; None lets that request through
            msg = pending.pop(0)
            if not pending:
                del self.fail_next[proto_id]
            return msg
        del self.fail_next[proto_id]
        return pending

    def _generic_error(self, msg):
        # Every *.Response has retType=1, retMsg=2; the client decodes with its own Response type.
        r = InitConnect_pb2.Response()
        r.retType, r.retMsg = Common_pb2.RetType_Failed, msg
        return r

    @staticmethod
    def _ok(rsp_type):
        r = rsp_type()
        r.retType = Common_pb2.RetType_Succeed
        return r

    @staticmethod
    def _err(rsp_type, msg):
        r = rsp_type()
        r.retType, r.retMsg = Common_pb2.RetType_Failed, msg
        return r

    async def _flush_pushes(self):
        pending, self._pending_push = self._pending_push, []
        for proto_id, target, rsp in pending:
            writer = self._writers.get(target)
            if writer is None:
                continue
            try:
                writer.write(pack(proto_id, 0, rsp))
                await writer.drain()
            except (ConnectionError, OSError):
                pass

    # ------------------------------------------------------------------ system
    def h_1001(self, req):
        conn_id = next(self.conn_ids)
        self.init_connects += 1
        r = self._ok(InitConnect_pb2.Response)
        r.s2c.serverVer = 1011
        r.s2c.loginUserID = 12345678
        r.s2c.connID = conn_id
        r.s2c.connAESKey = "0123456789ABCDEF"   # required field even when encryption is off (unused then)
        r.s2c.keepAliveInterval = 10            # SDK sends KeepAlive every 0.8*interval seconds
        self._subs[conn_id] = set()
        return conn_id, r

    def h_1002(self, req, conn_id):
        r = self._ok(GetGlobalState_pb2.Response)
        s = r.s2c
        s.marketHK = Qot_Common_pb2.QotMarketState_Morning
        s.marketUS = Qot_Common_pb2.QotMarketState_Closed
        s.marketSH = s.marketSZ = Qot_Common_pb2.QotMarketState_Morning
        s.marketHKFuture = Qot_Common_pb2.QotMarketState_Morning
        s.qotLogined = s.trdLogined = self.qot_logined
        s.serverVer, s.serverBuildNo = 1011, 7108
        s.time = int(time.time())
        s.localTime = time.time()
        s.connID = conn_id
        return r

    def h_1004(self, req, conn_id):
        r = self._ok(KeepAlive_pb2.Response)
        r.s2c.time = int(time.time())
        return r

    # ------------------------------------------------------------------ quote
    def _inst(self, sec):
        return self.instruments.get((sec.market, sec.code))

    def h_3001(self, req, conn_id):
        subs = self._subs.setdefault(conn_id, set())
        if req.c2s.HasField("isUnsubAll") and req.c2s.isUnsubAll:
            subs.clear()
            return self._ok(Qot_Sub_pb2.Response)
        for sec in req.c2s.securityList:
            if self._inst(sec) is None:
                return self._err(Qot_Sub_pb2.Response, f"Unknown stock {sec.code}")
            for st in req.c2s.subTypeList:
                key = (st, sec.market, sec.code)
                subs.add(key) if req.c2s.isSubOrUnSub else subs.discard(key)
        r = self._ok(Qot_Sub_pb2.Response)
        r.s2c.SetInParent()
        return r

    def _fill_basic_qot(self, q, inst: Instrument):
        q.security.market, q.security.code = inst.market, inst.code
        q.name = inst.name
        q.isSuspended = False
        q.listTime = "2004-06-16"
        q.priceSpread = inst.tick
        q.updateTime = _fmt_ms(self.now_local())
        q.highPrice, q.openPrice, q.lowPrice = inst.price * 1.01, inst.prev_close, inst.price * 0.99
        q.curPrice, q.lastClosePrice = inst.price, inst.prev_close
        q.volume, q.turnover, q.turnoverRate, q.amplitude = inst.volume, inst.price * inst.volume, 0.1, 2.0

    def h_3004(self, req, conn_id):
        r = self._ok(Qot_GetBasicQot_pb2.Response)
        r.s2c.SetInParent()
        for sec in req.c2s.securityList:
            inst = self._inst(sec)
            if inst is None or (Qot_Common_pb2.SubType_Basic, sec.market, sec.code) not in self._subs.get(conn_id, ()):
                # real OpenD refuses get_stock_quote for codes not subscribed to SubType.QUOTE on this connection
                return self._err(Qot_GetBasicQot_pb2.Response, f"Please subscribe QUOTE first: {sec.code}")
            self._fill_basic_qot(r.s2c.basicQotList.add(), inst)
        return r

    def h_3203(self, req, conn_id):
        if len(req.c2s.securityList) > 400:
            return self._err(Qot_GetSecuritySnapshot_pb2.Response, "at most 400 securities per snapshot request")
        r = self._ok(Qot_GetSecuritySnapshot_pb2.Response)
        r.s2c.SetInParent()
        for sec in req.c2s.securityList:
            inst = self._inst(sec)
            if inst is None:
                return self._err(Qot_GetSecuritySnapshot_pb2.Response, f"Unknown stock {sec.code}")
            b = r.s2c.snapshotList.add().basic
            b.security.market, b.security.code, b.name = inst.market, inst.code, inst.name
            b.type = Qot_Common_pb2.SecurityType_Eqty
            b.isSuspend, b.listTime, b.lotSize, b.priceSpread = False, "2004-06-16", inst.lot_size, inst.tick
            b.updateTime = _fmt_ms(self.now_local())
            b.highPrice, b.openPrice, b.lowPrice = inst.price * 1.01, inst.prev_close, inst.price * 0.99
            b.lastClosePrice, b.curPrice = inst.prev_close, inst.price
            b.volume, b.turnover, b.turnoverRate = inst.volume, inst.price * inst.volume, 0.1
            b.askPrice, b.bidPrice = round(inst.price + inst.tick, 3), round(inst.price - inst.tick, 3)
            b.askVol, b.bidVol = 1000, 2000
        return r

    # --- K-lines ---------------------------------------------------------------------------------
    def bar_ends(self, market: int, begin: datetime, end: datetime, minutes: int) -> list[datetime]:
        """Futu-style time keys (bar END times) of intraday bars inside sessions, begin <= key <= end."""
        keys = []
        day = begin.date()
        while day <= end.date():
            if day.weekday() < 5:
                for open_t, close_t in SESSIONS[market]:
                    t = datetime.combine(day, open_t) + timedelta(minutes=minutes)
                    close = datetime.combine(day, close_t)
                    session_keys = []
                    while t <= close:
                        session_keys.append(t)
                        t += timedelta(minutes=minutes)
                    if not session_keys or session_keys[-1] < close:   # a short last bar, e.g. HK 11:30-12:00
                        session_keys.append(close)
                    keys.extend(k for k in session_keys if begin <= k <= end)
            day += timedelta(days=1)
        return keys

    @staticmethod
    def day_keys(begin: datetime, end: datetime) -> list[datetime]:
        keys, day = [], begin.date()
        while day <= end.date():
            t = datetime.combine(day, dtime(0, 0))
            if day.weekday() < 5 and begin <= t <= end:
                keys.append(t)
            day += timedelta(days=1)
        return keys

    @staticmethod
    def bar_at(inst: Instrument, key: datetime, minutes: int) -> tuple:
        """A deterministic bar for ``key`` (prices around the instrument's current price)."""
        k = int((key - datetime(2000, 1, 1)).total_seconds() // 60) // minutes
        o = inst.price * (1 + ((k * 7919) % 41 - 20) / 10000)
        c = inst.price * (1 + ((k * 104729) % 41 - 20) / 10000)
        return key, o, max(o, c) * 1.001, min(o, c) * 0.999, c, 1000 + (k % 97) * 10

    def _bars(self, inst: Instrument, kl_type: int, begin: datetime, end: datetime) -> list[tuple] | None:
        if kl_type == Qot_Common_pb2.KLType_Day:
            return [self.bar_at(inst, key, 1440) for key in self.day_keys(begin, end)]
        minutes = KL_MINUTES.get(kl_type)
        if minutes is None:
            return None
        return [self.bar_at(inst, key, minutes) for key in self.bar_ends(inst.market, begin, end, minutes)]

    @staticmethod
    def _fill_kl(kl, bar, prev_close):
        t, o, h, l, c, v = bar
        kl.time, kl.isBlank = t.strftime(TS), False
        kl.openPrice, kl.highPrice, kl.lowPrice, kl.closePrice = round(o, 3), round(h, 3), round(l, 3), round(c, 3)
        kl.volume, kl.turnover, kl.lastClosePrice = v, round(v * c, 2), prev_close
        kl.turnoverRate, kl.pe, kl.changeRate = 0.0, 20.0, 0.0

    def h_3006(self, req, conn_id):  # get_cur_kline: needs KL subscription of that ktype
        inst = self._inst(req.c2s.security)
        st = SUB_KL.get(req.c2s.klType)
        if inst is None or (st, inst.market, inst.code) not in self._subs.get(conn_id, ()):
            return self._err(Qot_GetKL_pb2.Response, "Please subscribe the K-line type first")
        now = self.now_local()
        bars = self._bars(inst, req.c2s.klType, now - timedelta(days=7), now) or []
        r = self._ok(Qot_GetKL_pb2.Response)
        r.s2c.security.market, r.s2c.security.code, r.s2c.name = inst.market, inst.code, inst.name
        for bar in bars[-req.c2s.reqNum:]:
            self._fill_kl(r.s2c.klList.add(), bar, inst.prev_close)
        return r

    def h_3103(self, req, conn_id):  # request_history_kline, with nextReqKey paging
        c = req.c2s
        inst = self._inst(c.security)
        if inst is None:
            return self._err(Qot_RequestHistoryKL_pb2.Response, f"Unknown stock {c.security.code}")
        begin, end = self._parse_time(c.beginTime), self._parse_time(c.endTime, end_of_day=True)
        # Like OpenD, include the bar still forming now (its time key is in the future).
        forming = timedelta(minutes=KL_MINUTES.get(c.klType, 0))
        bars = self._bars(inst, c.klType, begin, min(end, self.now_local() + forming))
        if bars is None:
            return self._err(Qot_RequestHistoryKL_pb2.Response, f"fake OpenD does not serve kl type {c.klType}")
        offset = int(c.nextReqKey.decode()) if c.HasField("nextReqKey") else 0
        limit = c.maxAckKLNum if c.HasField("maxAckKLNum") and c.maxAckKLNum > 0 else len(bars)
        page = bars[offset: offset + limit]
        r = self._ok(Qot_RequestHistoryKL_pb2.Response)
        r.s2c.security.market, r.s2c.security.code, r.s2c.name = inst.market, inst.code, inst.name
        for bar in page:
            self._fill_kl(r.s2c.klList.add(), bar, inst.prev_close)
        if offset + limit < len(bars):
            r.s2c.nextReqKey = str(offset + limit).encode()
        return r

    @staticmethod
    def _parse_time(text: str, end_of_day: bool = False) -> datetime:
        if len(text) <= 10:
            day = datetime.strptime(text, "%Y-%m-%d")
            return day.replace(hour=23, minute=59, second=59) if end_of_day else day
        return datetime.strptime(text[:19], TS)

    async def push_quote(self, market: int, code: str, price: float):
        """Change a price, push Qot_UpdateBasicQot (3005) to QUOTE subscribers, trigger resting orders."""
        inst = self._move_price(market, code, price)
        r = self._ok(Qot_UpdateBasicQot_pb2.Response)
        self._fill_basic_qot(r.s2c.basicQotList.add(), inst)
        for cid, subs in list(self._subs.items()):
            if (Qot_Common_pb2.SubType_Basic, market, code) in subs and cid in self._writers:
                self._pending_push.append((QOT_UPDATE_BASIC_QOT, cid, r))
        await self._flush_pushes()

    def _move_price(self, market: int, code: str, price: float) -> Instrument:
        inst = self.instruments[(market, code)]
        inst.price = price
        for acc in self.accounts.values():
            for o in list(acc.orders.values()):
                if o.status in OPEN_STATUSES and o.code == code and TRD_SEC_TO_QOT.get(o.sec_market) == market:
                    self._work_order(acc, o, inst)
        return inst

    # ------------------------------------------------------------------ trade: accounts
    def h_2001(self, req, conn_id):
        r = self._ok(Trd_GetAccList_pb2.Response)
        r.s2c.SetInParent()
        for acc in self.accounts.values():
            a = r.s2c.accList.add()
            a.trdEnv, a.accID = acc.trd_env, acc.acc_id
            a.trdMarketAuthList.extend(acc.markets)   # must contain the ctx's filter_trdmarket or acc is dropped
            a.accType = Trd_Common_pb2.TrdAccType_Cash
            a.securityFirm = acc.firm                  # REAL accs must match ctx security_firm (or ctx uses NONE)
            a.accStatus = Trd_Common_pb2.TrdAccStatus_Active
            a.cardNum = f"100{acc.acc_id}"
            if not acc.is_real:
                a.simAccType = Trd_Common_pb2.SimAccType_Stock
        return r

    def h_2005(self, req, conn_id):
        if req.c2s.unlock and req.c2s.pwdMD5 != self.trade_password_md5:
            return self._err(Trd_UnlockTrade_pb2.Response, "Password error")
        self.unlocked = req.c2s.unlock
        r = self._ok(Trd_UnlockTrade_pb2.Response)
        r.s2c.SetInParent()
        return r

    def h_2008(self, req, conn_id):
        self._acc_push[conn_id] = set(req.c2s.accIDList)
        r = self._ok(Trd_SubAccPush_pb2.Response)
        r.s2c.SetInParent()
        return r

    def _acc(self, header, rsp_type):
        acc = self.accounts.get(header.accID)
        if acc is None or acc.trd_env != header.trdEnv:
            return None, self._err(rsp_type, f"Nonexisting acc_id {header.accID} / env {header.trdEnv}")
        if acc.is_real and not self.unlocked and rsp_type in (Trd_PlaceOrder_pb2.Response, Trd_ModifyOrder_pb2.Response):
            return None, self._err(rsp_type, "Please unlock trade first")
        return acc, None

    def _mark(self, pos: Position):
        inst = self.instruments.get((TRD_SEC_TO_QOT.get(pos.sec_market), pos.code))
        return inst.price if inst else pos.cost

    def h_2101(self, req, conn_id):
        acc, err = self._acc(req.c2s.header, Trd_GetFunds_pb2.Response)
        if err:
            return err
        mv = sum(p.qty * self._mark(p) for p in acc.positions.values())
        frozen = sum(o.remaining * o.price for o in acc.orders.values() if o.status in OPEN_STATUSES and o.is_buy)
        r = self._ok(Trd_GetFunds_pb2.Response)
        r.s2c.header.CopyFrom(req.c2s.header)
        f = r.s2c.funds
        f.power, f.totalAssets, f.cash, f.marketVal = acc.cash - frozen, acc.cash + mv, acc.cash, mv
        f.frozenCash, f.debtCash, f.avlWithdrawalCash = frozen, 0.0, acc.cash - frozen
        f.currency = Trd_Common_pb2.Currency_HKD
        f.availableFunds = acc.cash - frozen
        f.unrealizedPL = sum(p.qty * (self._mark(p) - p.cost) for p in acc.positions.values())
        f.realizedPL = 0.0
        return r

    def h_2102(self, req, conn_id):
        acc, err = self._acc(req.c2s.header, Trd_GetPositionList_pb2.Response)
        if err:
            return err
        codes = set(req.c2s.filterConditions.codeList)
        r = self._ok(Trd_GetPositionList_pb2.Response)
        r.s2c.header.CopyFrom(req.c2s.header)
        for i, p in enumerate(acc.positions.values()):
            if p.qty == 0 or (codes and p.code not in codes):
                continue
            mark = self._mark(p)
            x = r.s2c.positionList.add()
            x.positionID = i + 1
            x.positionSide = Trd_Common_pb2.PositionSide_Long if p.qty > 0 else Trd_Common_pb2.PositionSide_Short
            x.code, x.name = p.code, p.name
            x.qty, x.canSellQty, x.price, x.val = abs(p.qty), max(p.qty, 0), mark, p.qty * mark
            x.plVal, x.costPrice = p.qty * (mark - p.cost), p.cost
            x.plRatio = (mark / p.cost - 1) if p.cost else 0.0
            x.secMarket = p.sec_market                 # without it the SDK renders code as "N/A.00700"
            x.trdMarket, x.currency = Trd_Common_pb2.TrdMarket_HK, Trd_Common_pb2.Currency_HKD
            x.dilutedCostPrice = x.averageCostPrice = p.cost
        return r

    # ------------------------------------------------------------------ trade: orders
    def _fill_order(self, x, o: Order):
        x.trdSide, x.orderType, x.orderStatus = o.side, o.order_type, o.status
        x.orderID, x.orderIDEx = o.order_id, str(o.order_id)
        x.code, x.name, x.qty, x.price = o.code, o.name, o.qty, o.price
        x.createTime, x.updateTime = _fmt_ms(o.created), _fmt_ms(o.updated)
        x.fillQty, x.fillAvgPrice, x.lastErrMsg = o.fill_qty, o.fill_price, o.err
        x.secMarket, x.trdMarket = o.sec_market, o.trd_market
        x.remark, x.timeInForce, x.currency = o.remark, Trd_Common_pb2.TimeInForce_DAY, Trd_Common_pb2.Currency_HKD
        if o.aux_price is not None:
            x.auxPrice = o.aux_price

    def _order_matches(self, o: Order, fc, statuses) -> bool:
        ids, codes = set(fc.orderIDExList), set(fc.codeList)
        return not ((ids and str(o.order_id) not in ids) or (codes and o.code not in codes)
                    or (statuses and o.status not in statuses))

    def h_2201(self, req, conn_id):  # today's orders
        acc, err = self._acc(req.c2s.header, Trd_GetOrderList_pb2.Response)
        if err:
            return err
        today = self.now_local().date()
        r = self._ok(Trd_GetOrderList_pb2.Response)
        r.s2c.header.CopyFrom(req.c2s.header)
        for o in acc.orders.values():
            if o.created.date() == today and self._order_matches(o, req.c2s.filterConditions, set(req.c2s.filterStatusList)):
                self._fill_order(r.s2c.orderList.add(), o)
        return r

    def h_2221(self, req, conn_id):  # history orders, by creation time
        acc, err = self._acc(req.c2s.header, Trd_GetHistoryOrderList_pb2.Response)
        if err:
            return err
        fc = req.c2s.filterConditions
        begin, end = self._parse_time(fc.beginTime), self._parse_time(fc.endTime, end_of_day=True)
        r = self._ok(Trd_GetHistoryOrderList_pb2.Response)
        r.s2c.header.CopyFrom(req.c2s.header)
        for o in acc.orders.values():
            if begin <= o.created <= end and self._order_matches(o, fc, set(req.c2s.filterStatusList)):
                self._fill_order(r.s2c.orderList.add(), o)
        return r

    def h_2202(self, req, conn_id):
        c = req.c2s
        acc, err = self._acc(c.header, Trd_PlaceOrder_pb2.Response)
        if err:
            return err
        refusal = self._placement_refusal(acc, c, conn_id)
        if refusal:
            return self._err(Trd_PlaceOrder_pb2.Response, refusal)
        inst = self.instruments[(TRD_SEC_TO_QOT[c.secMarket], c.code)]
        now = self.now_local()
        o = Order(next(self.order_ids), acc.acc_id, acc.trd_env, c.header.trdMarket, c.secMarket, c.code, inst.name,
                  c.trdSide, c.orderType, c.qty, c.price, Trd_Common_pb2.OrderStatus_Submitted, now, now,
                  aux_price=c.auxPrice if c.HasField("auxPrice") else None, remark=c.remark)
        if o.order_type in STOP_TYPES:
            o.status = Trd_Common_pb2.OrderStatus_WaitingSubmit   # held until the trigger price trades
        acc.orders[o.order_id] = o
        self._queue_order_push(acc, o)
        self._work_order(acc, o, inst, plan=self.fill_plans.pop(o.remark, None))
        r = self._ok(Trd_PlaceOrder_pb2.Response)
        r.s2c.header.CopyFrom(c.header)
        r.s2c.orderID, r.s2c.orderIDEx = o.order_id, str(o.order_id)
        return r

    def _record_placement(self, acc_id: int) -> None:
        """Every place-order request that reaches OpenD counts towards its rate limit, refused or not."""
        acc = self.accounts.get(acc_id)
        if acc is not None:
            acc.placement_times.append(self.clock())

    def _placement_refusal(self, acc: Account, c, conn_id) -> str | None:
        if c.packetID.connID != conn_id:
            return "packetID.connID mismatch"
        if self.enforce_order_rate:
            now = self.clock()
            recent = [t for t in acc.placement_times[:-1] if now - t < self.order_rate_window]
            if len(recent) >= self.order_rate_limit:
                return ORDER_RATE_REFUSAL.format(limit=self.order_rate_limit, window=self.order_rate_window)
        inst = self.instruments.get((TRD_SEC_TO_QOT.get(c.secMarket), c.code))
        if inst is None:
            return f"Unknown stock {c.code}"
        if c.qty <= 0 or c.qty % inst.lot_size:
            return f"qty must be a multiple of lot size {inst.lot_size}"
        if c.orderType in STOP_TYPES:
            allowed = self.real_supports_stop if acc.is_real else self.simulate_supports_stop
            if not allowed:
                return SIMULATE_STOP_REFUSAL
            if not c.HasField("auxPrice") or c.auxPrice <= 0:
                return "aux_price (trigger price) is required for stop orders"
        elif c.orderType not in (Trd_Common_pb2.OrderType_Normal, Trd_Common_pb2.OrderType_Market):
            if not acc.is_real:
                return SIMULATE_STOP_REFUSAL
        return None

    def _work_order(self, acc: Account, o: Order, inst: Instrument, plan: list[int] | None = None) -> None:
        """Trigger a stop, and fill what is marketable (``plan``: quantities to fill now, in steps)."""
        if o.order_type in STOP_TYPES and o.status == Trd_Common_pb2.OrderStatus_WaitingSubmit:
            triggered = inst.price >= o.aux_price if o.is_buy else inst.price <= o.aux_price
            if not triggered:
                return
            o.status = Trd_Common_pb2.OrderStatus_Submitted
            o.updated = self.now_local()
            self._queue_order_push(acc, o)
        if not self.auto_fill or not self._marketable(o, inst):
            return
        steps = plan if plan is not None else [o.remaining]
        for qty in steps:
            self._execute(acc, o, min(qty, o.remaining), inst.price)

    @staticmethod
    def _marketable(o: Order, inst: Instrument) -> bool:
        if o.order_type in (Trd_Common_pb2.OrderType_Market, Trd_Common_pb2.OrderType_Stop):
            return True
        return inst.price <= o.price if o.is_buy else inst.price >= o.price

    def _fill_by_id(self, acc_id: int, order_id: int, qty: float | None, price: float | None) -> None:
        acc = self.accounts[acc_id]
        o = acc.orders[order_id]
        if o.status not in OPEN_STATUSES:
            raise ValueError(f"order {order_id} is not open")
        inst = self.instruments[(TRD_SEC_TO_QOT[o.sec_market], o.code)]
        self._execute(acc, o, o.remaining if qty is None else qty, inst.price if price is None else price)

    def _execute(self, acc: Account, o: Order, qty: float, px: float) -> None:
        if qty <= 0:
            return
        sign = 1 if o.is_buy else -1
        pos = acc.positions.setdefault(o.code, Position(o.code, o.name, o.sec_market))
        if sign > 0 and pos.qty + qty:
            pos.cost = (pos.cost * pos.qty + px * qty) / (pos.qty + qty)
        pos.qty += sign * qty
        acc.cash -= sign * px * qty
        o.fill_price = (o.fill_price * o.fill_qty + px * qty) / (o.fill_qty + qty)
        o.fill_qty += qty
        o.status = Trd_Common_pb2.OrderStatus_Filled_All if o.remaining <= 0 else Trd_Common_pb2.OrderStatus_Filled_Part
        o.updated = self.now_local()
        deal = Deal(next(self.deal_ids), o.order_id, o.code, o.name, o.sec_market, o.trd_market, o.side, qty, px, o.updated)
        acc.deals.append(deal)
        self._queue_order_push(acc, o)
        if acc.is_real:
            self._queue_deal_push(acc, deal)

    def h_2205(self, req, conn_id):
        c = req.c2s
        acc, err = self._acc(c.header, Trd_ModifyOrder_pb2.Response)
        if err:
            return err
        if c.forAll:
            targets = [o for o in acc.orders.values() if o.status in OPEN_STATUSES]
        else:
            target = acc.orders.get(int(c.orderIDEx) if c.orderIDEx else c.orderID)
            if target is None:
                return self._err(Trd_ModifyOrder_pb2.Response, "order not found")
            targets = [target]
        for o in targets:
            if o.status not in OPEN_STATUSES:
                return self._err(Trd_ModifyOrder_pb2.Response, f"order {o.order_id} is not open (status {o.status})")
            if c.modifyOrderOp == Trd_Common_pb2.ModifyOrderOp_Cancel:
                o.status = (Trd_Common_pb2.OrderStatus_Cancelled_Part if o.fill_qty > 0
                            else Trd_Common_pb2.OrderStatus_Cancelled_All)
            elif c.modifyOrderOp == Trd_Common_pb2.ModifyOrderOp_Normal:
                o.qty, o.price = c.qty, c.price
            o.updated = self.now_local()
            self._queue_order_push(acc, o)
        r = self._ok(Trd_ModifyOrder_pb2.Response)
        r.s2c.header.CopyFrom(c.header)
        r.s2c.orderID = targets[0].order_id if targets else 0
        r.s2c.orderIDEx = str(r.s2c.orderID)
        return r

    # ------------------------------------------------------------------ trade: deals
    def _fill_deal(self, x, d: Deal):
        x.trdSide, x.fillID, x.fillIDEx = d.side, d.deal_id, str(d.deal_id)
        x.orderID, x.orderIDEx = d.order_id, str(d.order_id)
        x.code, x.name, x.qty, x.price = d.code, d.name, d.qty, d.price
        x.createTime, x.secMarket, x.trdMarket = _fmt_ms(d.created), d.sec_market, d.trd_market
        x.status = Trd_Common_pb2.OrderFillStatus_OK

    def _deals_refusal(self, acc: Account) -> str | None:
        if not acc.is_real and not self.simulate_supports_deals:
            return SIMULATE_DEAL_REFUSAL
        return None

    def h_2211(self, req, conn_id):  # today's deals
        acc, err = self._acc(req.c2s.header, Trd_GetOrderFillList_pb2.Response)
        if err:
            return err
        refusal = self._deals_refusal(acc)
        if refusal:
            return self._err(Trd_GetOrderFillList_pb2.Response, refusal)
        codes, today = set(req.c2s.filterConditions.codeList), self.now_local().date()
        r = self._ok(Trd_GetOrderFillList_pb2.Response)
        r.s2c.header.CopyFrom(req.c2s.header)
        for d in acc.deals:
            if d.created.date() == today and (not codes or d.code in codes):
                self._fill_deal(r.s2c.orderFillList.add(), d)
        return r

    def h_2222(self, req, conn_id):  # history deals
        acc, err = self._acc(req.c2s.header, Trd_GetHistoryOrderFillList_pb2.Response)
        if err:
            return err
        refusal = self._deals_refusal(acc)
        if refusal:
            return self._err(Trd_GetHistoryOrderFillList_pb2.Response, refusal)
        fc = req.c2s.filterConditions
        codes = set(fc.codeList)
        begin, end = self._parse_time(fc.beginTime), self._parse_time(fc.endTime, end_of_day=True)
        r = self._ok(Trd_GetHistoryOrderFillList_pb2.Response)
        r.s2c.header.CopyFrom(req.c2s.header)
        for d in acc.deals:
            if begin <= d.created <= end and (not codes or d.code in codes):
                self._fill_deal(r.s2c.orderFillList.add(), d)
        return r

    # ------------------------------------------------------------------ pushes
    def _subscribers(self, acc: Account) -> list[int]:
        return [cid for cid, accs in self._acc_push.items() if acc.acc_id in accs and cid in self._writers]

    def _queue_order_push(self, acc: Account, o: Order) -> None:
        r = self._ok(Trd_UpdateOrder_pb2.Response)
        r.s2c.header.trdEnv, r.s2c.header.accID, r.s2c.header.trdMarket = acc.trd_env, acc.acc_id, o.trd_market
        self._fill_order(r.s2c.order, o)   # a snapshot of the order now, not when it is sent
        for cid in self._subscribers(acc):
            self._pending_push.append((TRD_UPDATE_ORDER, cid, r))

    def _queue_deal_push(self, acc: Account, d: Deal) -> None:
        r = self._ok(Trd_UpdateOrderFill_pb2.Response)
        r.s2c.header.trdEnv, r.s2c.header.accID, r.s2c.header.trdMarket = acc.trd_env, acc.acc_id, d.trd_market
        self._fill_deal(r.s2c.orderFill, d)
        for cid in self._subscribers(acc):
            self._pending_push.append((TRD_UPDATE_DEAL, cid, r))

    # ------------------------------------------------------------------ convenience
    def seed_position(self, code: str, qty: float, cost: float, acc_id: int = SIMULATE_ACC, market: int = HK) -> None:
        """Put a position on the book directly (no order, no push)."""
        def seed():
            inst = self.instruments[(market, code)]
            acc = self.accounts[acc_id]
            acc.positions[code] = Position(code, inst.name, QOT_TO_TRD_SEC[market], qty, cost)
            acc.cash -= qty * cost
        self.call(seed)

    def trading_day(self) -> date:
        return self.now_local().date()


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=11111)
    args = ap.parse_args()

    async def main():
        srv = FakeOpenD(port=args.port)
        port = await srv.start()
        print(f"fake OpenD listening on 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
