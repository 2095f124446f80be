"""The moomoo SDK, loaded once, with its side effects undone, and our subclasses of its contexts.

* ``import moomoo`` installs a SIGINT handler calling ``os._exit(0)`` and logs INFO to the
  console; both are undone when the SDK is first loaded, and its callback threads are made
  daemon threads so a context the SDK failed to close cannot keep the process alive.
* Our contexts reconnect after ``reconnect_seconds`` (the SDK waits a fixed 6 s) and report each
  reconnect; the trade context connects asynchronously like a quote context, so an absent OpenD
  never blocks its constructor.
* Push handlers hand each frame the SDK decoded to a sink (the broker, on the SDK's thread).
"""
from __future__ import annotations

import functools
import logging
import signal
import threading
from types import SimpleNamespace
from typing import Any, Callable

import pandas as pd


def restore_sigint(previous: Any) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    current = signal.getsignal(signal.SIGINT)
    if getattr(current, "__name__", "") == "quit_handler" and "moomoo" in getattr(current, "__module__", ""):
        is_moomoo = getattr(previous, "__name__", "") == "quit_handler"
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None or is_moomoo else previous)


# Long: the subclasses can only be defined after the lazy import, whose side effects are undone here first.
@functools.cache
def load_sdk() -> SimpleNamespace:
    """Import moomoo (SIGINT handler restored, console logging at ERROR) and build our subclasses."""
    previous = signal.getsignal(signal.SIGINT)
    import moomoo
    from moomoo.common.ft_logger import logger as sdk_logger

    restore_sigint(previous)
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

    def forwarding(base):
        """An SDK push handler that hands each frame the SDK parsed without error to ``sink``."""
        class Handler(base):
            def __init__(self, sink: Callable[[pd.DataFrame], None]):
                super().__init__()
                self._sink = sink

            def on_recv_rsp(self, rsp_pb):
                ret, data = super().on_recv_rsp(rsp_pb)
                if ret == moomoo.RET_OK:
                    self._sink(data)
                return ret, data
        return Handler

    QuoteHandler = forwarding(moomoo.StockQuoteHandlerBase)
    OrderHandler = forwarding(moomoo.TradeOrderHandlerBase)

    return SimpleNamespace(mod=moomoo, QuoteContext=QuoteContext, TradeContext=TradeContext,
                           QuoteHandler=QuoteHandler, OrderHandler=OrderHandler)
