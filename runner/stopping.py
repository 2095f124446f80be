"""Stopping a run on a signal: SIGTERM (``kill``, a shutdown, a container stop) and SIGINT (Ctrl-C)
alike cancel the run's task instead of ending the process on the spot, so that the run's cleanup
happens: monitors release their leases (the next heartbeat adopts the positions at once, not after
the lease has lapsed), the cycle under way is recorded as interrupted, Big Bro is told what is left
open, the outbox is flushed, the broker and the databases are closed, and one line says so.

Signal handlers can only be set from the main thread; elsewhere (a run started from another
thread) the signals keep their default action.
"""
from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger("catalyst.run")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopOnSignal:
    def __init__(self) -> None:
        self.signal_name: str | None = None  # "SIGTERM" or "SIGINT" once one arrived
        self.finishing = False  # the run's own cleanup is under way: a signal now would only cut it short
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: list[tuple[signal.Signals, object]] = []

    @property
    def received(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> "StopOnSignal":
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._stop, task, sig)
            except (ValueError, RuntimeError, NotImplementedError):
                continue
            self._previous.append((sig, previous))
        self._loop = loop
        return self

    def _stop(self, task: asyncio.Task, sig: signal.Signals) -> None:
        name = signal.Signals(sig).name
        if self.finishing:
            log.warning("%s: the run is finishing already", name)
        elif not self.received:  # a second signal changes nothing: the cleanup is under way
            self.signal_name = name
            log.warning("%s: stopping the run (monitors release their positions)", name)
            task.cancel()

    def __exit__(self, *exc_info) -> None:
        if self._loop is None:
            return
        for sig, previous in self._previous:
            self._loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
        self._previous = []
