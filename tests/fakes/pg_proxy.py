"""A TCP front for the embedded PostgreSQL that can be down, up, or lose a commit's acknowledgement,
and a LISTEN connection that records notifications; both on an asyncio loop of their own thread
(the agent under test runs its own loop, often a simulated one, in the test's thread).

* ``down()``: nothing listens on the port (connection refused).
* ``up()``: every connection is forwarded to the server's unix socket.
* ``up_when(condition)``: connections are accepted and closed at once (the server is not there)
  until one arrives while ``condition()`` holds; from that connection on the proxy is up. The
  condition is checked while the agent waits for its connection, so it sees the agent's state
  (e.g. its outbox) at the moment of the attempt: no timing decides when the database comes back.
* ``lose_next_commit_ack``: the next COMMIT is forwarded, the server's answer (sent once the commit
  is done) is dropped and the connection cut.
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine
from urllib.parse import parse_qs, urlsplit

import asyncpg

from tests.fakes import free_port

COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for a COMMIT


class LoopThread:
    """An event loop running in a daemon thread; ``call`` runs a coroutine there and returns its result."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class PgProxy:
    def __init__(self, unix_url: str) -> None:
        """In front of the database of ``unix_url`` (the embedded server's URL); down until told otherwise."""
        self.target_url = unix_url
        host_dir = parse_qs(urlsplit(unix_url).query)["host"][0]
        self.socket_path = next(Path(host_dir).glob(".s.PGSQL.*"))
        self.database = urlsplit(unix_url).path.lstrip("/")
        self.port = free_port()
        self.lose_next_commit_ack = False
        self.acks_lost = 0
        self.refused = 0           # connections turned away while waiting for ``up_when``'s condition
        self.came_up_with: Any = None  # what the condition returned when the proxy came up
        self._condition: Callable[[], Any] | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = LoopThread("pg-proxy")

    def url(self, password: str = "pw") -> str:
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{self.database}"

    def up(self) -> None:
        self.up_when(lambda: True)

    def up_when(self, condition: Callable[[], Any]) -> None:
        self._condition = condition
        self._thread.call(self._listen())

    def down(self) -> None:
        self._thread.call(self._stop_listening())

    def close(self) -> None:
        self.down()
        self._thread.close()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._condition is not None:
            value = self._condition()
            if not value:
                self.refused += 1
                client_w.close()
                return
            self._condition, self.came_up_with = None, value
        server_r, server_w = await asyncio.open_unix_connection(str(self.socket_path))
        self._writers |= {client_w, server_w}
        commit_sent = asyncio.Event()
        await asyncio.gather(self._upstream(client_r, server_w, commit_sent),
                             self._downstream(server_r, client_w, commit_sent), return_exceptions=True)
        for w in (client_w, server_w):
            w.close()
            self._writers.discard(w)

    async def _upstream(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, commit_sent: asyncio.Event) -> None:
        while data := await src.read(65536):
            if self.lose_next_commit_ack and b"COMMIT" in data:
                self.lose_next_commit_ack = False
                commit_sent.set()
            dst.write(data)
            await dst.drain()
        dst.close()

    async def _downstream(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, commit_sent: asyncio.Event) -> None:
        answer = b""
        while data := await src.read(65536):
            if commit_sent.is_set():
                answer += data  # the answer to the COMMIT: held back, never delivered
                if COMMIT_DONE in answer:
                    self.acks_lost += 1
                    break
                continue
            dst.write(data)
            await dst.drain()
        dst.close()  # the line is cut: the client never hears that its COMMIT succeeded


class Listen:
    """``LISTEN claude_messages`` on ``url``; ``payloads`` in arrival order. A context manager."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.payloads: list[str] = []
        self._thread: LoopThread | None = None
        self._conn: asyncpg.Connection | None = None

    async def _start(self) -> None:
        self._conn = await asyncpg.connect(self.url)
        await self._conn.add_listener("claude_messages", lambda *args: self.payloads.append(args[-1]))

    def __enter__(self) -> "Listen":
        self._thread = LoopThread("listen")
        self._thread.call(self._start())
        return self

    def __exit__(self, *exc) -> None:
        assert self._thread is not None
        if self._conn is not None:
            self._thread.call(self._conn.close())
        self._thread.close()

    def ids(self) -> list[int]:
        return [int(p) for p in self.payloads]
