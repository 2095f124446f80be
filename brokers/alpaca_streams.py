"""Alpaca's websockets: quotes over ``StockDataStream`` (trades + quotes + daily bars), order updates
over ``TradingStream``.

Each stream runs its SDK coroutine on a private event loop in a daemon thread (the SDK's ``run()``
would call ``asyncio.run``); callbacks are handed to the agent's loop with
``call_soon_threadsafe``. One connection per stream kind is shared by every subscription.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

from alpaca.data.live import StockDataStream
from alpaca.trading.stream import TradingStream

from brokers.alpaca_convert import tick_price, us_symbol
from brokers.base import CallbackSubscription, Order, Quote
from core.instruments import Symbol

log = logging.getLogger("brokers.alpaca")

@dataclass
class Listener:
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


class StreamThread:
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


class Feed:
    """Listeners on the agent's loop, fed from one SDK stream running in its own thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.listeners: list[Listener] = []
        self.runner: StreamThread | None = None

    def hand_over(self, item: Any, wanted: Callable[[Listener], bool]) -> None:
        """Called on the stream thread: deliver ``item`` on the agent's loop."""
        try:
            self.loop.call_soon_threadsafe(self._dispatch, item, wanted)
        except RuntimeError:  # the agent's loop is closed: nobody is listening any more
            pass

    def _dispatch(self, item: Any, wanted: Callable[[Listener], bool]) -> None:
        for listener in list(self.listeners):
            if wanted(listener):
                listener.deliver(item)

    def remove(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def stop(self) -> StreamThread | None:
        runner, self.runner = self.runner, None
        if runner is not None:
            runner.stop()
        return runner


@dataclass
class LiveQuote:
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
        last = tick_price(price, on)
        optional = {k: tick_price(v, on) for k, v in (("open", self.open), ("high", self.high), ("low", self.low))
                    if v}
        return Quote(symbol=symbol, time=self.time, price=last,
                     bid=tick_price(self.bid, on) if self.bid else last,
                     ask=tick_price(self.ask, on) if self.ask else last, volume=self.volume, **optional)


class QuoteFeed(Feed):
    """Trades, quotes and daily bars from ``StockDataStream`` turned into ``Quote``s.

    ``Quote.volume`` is the latest daily bar's volume (Alpaca pushes it every minute) plus the
    trades seen since; open/high/low come from the daily bar once one has arrived.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, make_stream: Callable[[], StockDataStream]) -> None:
        super().__init__(loop)
        self._make_stream = make_stream
        self._state: dict[str, LiveQuote] = {}
        self._subscribed: set[str] = set()
        # Adding symbols to a running SDK stream blocks until its loop has sent the request:
        # that wait happens on this worker, never on the agent's loop.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alpaca-subscribe")

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)
        new = sorted(listener.tickers - self._subscribed)
        self._subscribed |= set(new)
        if self.runner is None:
            stream = self._make_stream()
            self._register(stream, new)
            self.runner = StreamThread(stream, "alpaca-quote-stream")
            self.runner.start()
        elif new:
            self._worker.submit(self._register, self.runner.stream, new)

    def remove(self, listener: Listener) -> None:
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
        state = self._state.setdefault(trade.symbol, LiveQuote())
        state.price = float(trade.price)
        state.volume += int(trade.size or 0)
        state.time = trade.timestamp
        self._publish(trade.symbol, state)

    async def _on_quote(self, quote: Any) -> None:
        state = self._state.setdefault(quote.symbol, LiveQuote())
        state.bid, state.ask = float(quote.bid_price or 0) or None, float(quote.ask_price or 0) or None
        state.time = max(state.time, quote.timestamp) if state.time else quote.timestamp
        self._publish(quote.symbol, state)

    async def _on_daily_bar(self, bar: Any) -> None:
        state = self._state.setdefault(bar.symbol, LiveQuote())
        state.open, state.high, state.low = float(bar.open), float(bar.high), float(bar.low)
        state.volume = int(bar.volume)

    def _publish(self, ticker: str, state: LiveQuote) -> None:
        quote = state.to_quote(us_symbol(ticker))
        if quote is not None:
            self.hand_over(quote, lambda listener: ticker in listener.tickers)

    def stop(self) -> StreamThread | None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        return super().stop()


class OrderFeed(Feed):
    """Order updates from ``TradingStream`` turned into ``Order``s."""

    def __init__(self, loop: asyncio.AbstractEventLoop, make_stream: Callable[[], TradingStream],
                 to_order: Callable[[Any], Order]) -> None:
        super().__init__(loop)
        self._make_stream = make_stream
        self._to_order = to_order

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)
        if self.runner is None:
            stream = self._make_stream()
            stream.subscribe_trade_updates(self._on_update)
            self.runner = StreamThread(stream, "alpaca-order-stream")
            self.runner.start()

    async def _on_update(self, update: Any) -> None:  # runs on the stream's thread
        try:
            order = self._to_order(update.order)
        except Exception:
            log.exception("could not read an Alpaca order update (%s)", getattr(update, "event", "?"))
            return
        self.hand_over(order, lambda listener: True)
