"""Waiting for orders to finish, for entries and exits alike: one place, one timeout rule.

Where the broker pushes order events (``subscribe_orders``), an event for the order wakes the wait at
once; the wait still asks the broker (``get_order``) at every poll interval, so a lost or late push
costs one interval, never the fill. Brokers without pushes are polled. An order still working at the
timeout is cancelled, and what it had filled by then is the answer; an exit's timeout counts from
its latest fill.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from brokers.base import Broker, BrokerError, Order, Subscription
from core.clock import Clock

log = logging.getLogger(__name__)


class OrderWaiter:
    """One per broker and run. ``close()`` ends its subscription to the broker's order events."""

    def __init__(self, broker: Broker, clock: Clock, poll_seconds: float) -> None:
        self.broker = broker
        self.clock = clock
        self.poll_seconds = poll_seconds
        self._waiting: dict[str, asyncio.Event] = {}
        self._subscription: Subscription | None = None
        self._subscribed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def until_final(self, order: Order, timeout_seconds: float, *, while_filling: bool = False) -> Order:
        """The order once it is final; at the timeout, what is left of it is cancelled.

        ``while_filling``: the timeout counts from the latest fill, so an order the market takes bit by
        bit (thin minutes) goes on filling as one order. Cancelling it to send the rest again would pay
        the commission minimum and the platform fee once more, for the same fills.
        """
        deadline = self.clock.now() + timedelta(seconds=timeout_seconds)
        filled = order.filled_quantity
        while not order.status.is_final and self.clock.now() < deadline:
            await self._next_event_or_poll(order.broker_order_id)
            order = await self.broker.get_order(order.broker_order_id)
            if while_filling and order.filled_quantity > filled:
                filled = order.filled_quantity
                deadline = self.clock.now() + timedelta(seconds=timeout_seconds)
        if not order.status.is_final:
            order = await self.broker.cancel_order(order.broker_order_id)
        return order

    def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None

    async def _next_event_or_poll(self, broker_order_id: str) -> None:
        if not self._listening():
            await self.clock.sleep(self.poll_seconds)
            return
        event = self._waiting.setdefault(broker_order_id, asyncio.Event())
        try:
            await self.clock.wait_for(event, self.poll_seconds)
        finally:
            self._waiting.pop(broker_order_id, None)

    def _listening(self) -> bool:
        if not self.broker.capabilities.supports_order_push:
            return False
        if not self._subscribed:
            self._subscribed = True
            self._loop = asyncio.get_running_loop()
            try:
                self._subscription = self.broker.subscribe_orders(self._on_order)
            except BrokerError as exc:
                log.warning("no order events from %s (%s); polling for fills", self.broker.capabilities.name, exc)
        return self._subscription is not None

    def _on_order(self, order: Order) -> None:
        # Pushes may come from the SDK's own thread: the event is set on the run's loop.
        event = self._waiting.get(order.broker_order_id)
        if event is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(event.set)
