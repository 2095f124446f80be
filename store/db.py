"""Connection pools, the embedded PostgreSQL, and migrations.

With ``DATABASE_URL`` / ``RESEARCH_DATABASE_URL`` the given servers are used. Without them an
embedded PostgreSQL (pgserver) under the project's ``var/`` folder serves both the trading and
the research (Big Bro) tables; it starts on demand and stops when the last process using it
exits.

No secret reaches a row: every text a statement carries (an error from an exception or a remote
answer, a message body, JSON data) is redacted here, on its way to the server, whoever wrote the
statement: the configured secret values and anything shaped like a credential (``core.redaction``).
"""
from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Sequence, TypeVar

import asyncpg

from core.clock import IoThread, external_io, io, simulation_running
from core.redaction import Redactor

T = TypeVar("T")

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Migrations of one database never run concurrently: two agents starting together wait here.
_MIGRATION_LOCK_KEY = 0x43617461  # "Cata"
# Configured secrets shorter than this are blanked in statements only as whole words: a six-digit trade
# PIN must never change a cycle id (it holds the time as six digits), an order id or a number.
WHOLE_WORDS_BELOW = 8


def redacting(secrets: Iterable[str] = ()) -> Redactor:
    """The redaction every statement's text goes through on its way to the server."""
    return Redactor(secrets, whole_words_below=WHOLE_WORDS_BELOW)


def statement_args(redactor: Redactor, sql: str, args: Sequence[Any]) -> tuple[Any, ...]:
    """A statement's parameters as they go to the server: redacted where the statement writes. A plain
    SELECT stores nothing, so its parameters (symbols, ids, times: every read of a hot path) go as they are."""
    if sql.lstrip()[:6].upper() == "SELECT":
        return tuple(args)
    return tuple(redactor.redact_value(a) for a in args)


def agent_lock_key(agent_id: str) -> int:
    """The advisory lock a run of ``agent_id`` holds for its whole life (one run per agent at a time)."""
    return int.from_bytes(hashlib.sha256(f"catalyst:{agent_id}".encode()).digest()[:8], "big", signed=True)


class LockStatus(str, enum.Enum):
    """What a check of a run's agent lock found."""

    HELD = "held"                # this run's session still holds it
    REGAINED = "regained"        # its connection was lost; the lock was free and is taken again on a new one
    UNREACHABLE = "unreachable"  # its connection was lost and the server cannot be reached: unproven
    TAKEN = "taken"              # its connection was lost and another session holds the lock now


# Whether this session holds the advisory lock of a bigint key (pg_locks splits it in two 32-bit halves).
_HOLDS_LOCK = """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
                     AND granted AND objsubid = 1 AND classid::bigint = ($1::bigint >> 32) & 4294967295
                     AND objid::bigint = $1::bigint & 4294967295)"""


class AgentLock:
    """The agent's advisory lock, held on a connection of its own for as long as a run lives.

    A session lock lasts as long as its connection: a reset (a proxy or network cut, a server
    restart, ``pg_terminate_backend``) frees it silently for another run. ``verify`` asks the server
    whether this run's session still holds it and, when that connection is gone, takes the lock
    again on a new one if it is free. Under a simulated clock the connection lives on an
    ``IoThread``, as the pools do: a check has its answer before the simulation runs anything else.
    """

    CHECK_TIMEOUT_SECONDS = 3.0

    def __init__(self, url: str, agent_id: str, thread: IoThread | None) -> None:
        self.url = url
        self.agent_id = agent_id
        self._key = agent_lock_key(agent_id)
        self._thread = thread
        self._conn: asyncpg.Connection | None = None
        self._checking: asyncio.Lock | None = None

    @classmethod
    async def try_take(cls, url: str, agent_id: str) -> "AgentLock | None":
        """The lock, or None when another run of the agent holds it."""
        lock = cls(url, agent_id, IoThread(f"lock-{agent_id}") if simulation_running() else None)
        try:
            if await lock._take_on_new_connection(timeout=10):
                return lock
        except BaseException:
            lock._stop_thread()
            raise
        lock._stop_thread()
        return None

    async def verify(self) -> LockStatus:
        """Whether this run still holds the lock, asked of the server (one check at a time)."""
        if self._checking is None:
            self._checking = asyncio.Lock()
        async with self._checking:
            conn = self._conn
            if conn is not None:
                try:
                    if await self._call(lambda: conn.fetchval(_HOLDS_LOCK, self._key), self.CHECK_TIMEOUT_SECONDS):
                        return LockStatus.HELD
                except Exception as exc:  # noqa: BLE001 - any failure: the session (and its lock) may be gone
                    log.warning("the %s run lock's connection failed (%s); taking the lock again", self.agent_id,
                                type(exc).__name__)
                self._conn = None
                await self._close(conn)
            try:
                got = await self._take_on_new_connection(timeout=self.CHECK_TIMEOUT_SECONDS)
            except Exception:  # noqa: BLE001 - the server cannot be reached: the lock is unproven
                return LockStatus.UNREACHABLE
            return LockStatus.REGAINED if got else LockStatus.TAKEN

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._close(conn)
        self._stop_thread()

    async def _take_on_new_connection(self, timeout: float) -> bool:
        conn = await self._call(lambda: asyncpg.connect(self.url, timeout=timeout), timeout)
        try:
            got = await self._call(lambda: conn.fetchval("SELECT pg_try_advisory_lock($1)", self._key), timeout)
        except BaseException:
            await self._close(conn)
            raise
        if got:
            self._conn = conn
            return True
        await self._close(conn)
        return False

    async def _call(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        if self._thread is not None:
            return self._thread.call(make, timeout=timeout + 1)
        return await io(make(), timeout=timeout)

    async def _close(self, conn: asyncpg.Connection) -> None:
        async def close() -> None:
            try:
                await conn.close(timeout=2)
            except Exception:  # noqa: BLE001 - a broken connection is dropped, not closed politely
                conn.terminate()
        try:
            await self._call(close, 3)
        except Exception:  # noqa: BLE001
            conn.terminate()

    def _stop_thread(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.close()


class DatabaseError(Exception):
    """The database could not be reached or used; the message names which one and why."""


# The values libpq (and asyncpg) accept for these URL parameters.
URL_PARAMETER_VALUES = {
    "target_session_attrs": ("any", "primary", "standby", "prefer-standby", "read-write", "read-only"),
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
}
URL_EXAMPLE = "postgresql://user:password@host:5432/database"


def url_problem(url: str) -> str | None:
    """Why the driver could not use ``url``, in words that never quote it (it holds a password)."""
    from urllib.parse import parse_qs, urlsplit

    try:
        parts = urlsplit(url)
        for host in parts.netloc.rpartition("@")[2].split(","):  # libpq's host1:port1,host2:port2
            urlsplit(f"//{host}").port
    except ValueError as exc:
        what = "an IPv6 host needs both brackets ([::1]:5432)" if "IPv6" in str(exc) else "its port is not a number"
        return f"not a valid PostgreSQL URL: {what}; write it like {URL_EXAMPLE}"
    for name, allowed in URL_PARAMETER_VALUES.items():
        for value in parse_qs(parts.query).get(name, []):
            if value not in allowed:
                return f"{name} must be one of {', '.join(allowed)}; got {value!r}"
    return None


def _describe(url: str) -> str:
    """A database URL without credentials, for messages."""
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        host = parts.hostname or "local socket"
        return f"{host}{':' + str(parts.port) if parts.port else ''}{parts.path or ''}"
    except ValueError:
        return "the configured database"


class Database:
    """An asyncpg pool; every call is marked as external I/O for the simulated clock.

    Under a simulated clock the pool lives on an ``IoThread``: each call completes before the
    simulation runs anything else, so concurrent tasks interleave the same way on every run.

    An *optional* database (``optional_migrations`` given: Big Bro's research database) may be
    unreachable when the run starts: every call then tries to connect (and migrate) first, at
    most once every ``RECONNECT_SECONDS`` of the loop's clock, and raises ``DatabaseError``
    meanwhile, so that callers fall back (the notifier to its outbox) instead of stalling.
    """

    RECONNECT_SECONDS = 30.0

    def __init__(self, url: str, name: str, optional_migrations: str | None = None,
                 secrets: Iterable[str] = ()) -> None:
        self.url = url
        self.name = name
        self.redactor = redacting(secrets)
        self._pool: asyncpg.Pool | None = None
        self._io_thread: IoThread | None = None
        self._optional_migrations = optional_migrations
        self._next_attempt: float | None = None
        self._connecting: asyncio.Lock | None = None

    @property
    def where(self) -> str:
        return _describe(self.url)

    async def connect(self, min_size: int = 1, max_size: int = 5, timeout: float = 10) -> "Database":
        def create_pool() -> asyncpg.Pool:
            return asyncpg.create_pool(self.url, min_size=min_size, max_size=max_size, timeout=timeout, command_timeout=30)

        try:
            if simulation_running():
                self._io_thread = IoThread(f"db-{self.name}")
                # asyncpg's own timeout is real time on that thread; ours is only a backstop
                self._pool = self._io_thread.call(create_pool, timeout=timeout + 5)
            else:
                # A real-time deadline: asyncpg's own timeout runs on the loop's timers, which never
                # come due under the simulated clock while the connection is in flight.
                self._pool = await io(create_pool(), timeout=timeout)
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            self._stop_io_thread()
            raise DatabaseError(f"cannot connect to the {self.name} database at {self.where}: {type(exc).__name__}") from None
        except ValueError as exc:  # the driver could not read the URL (agent.py checks it first; its words may quote it)
            self._stop_io_thread()
            raise DatabaseError(f"the {self.name} database URL is not valid ({type(exc).__name__}); "
                                f"write it like {URL_EXAMPLE}") from None
        return self

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._on(pool, lambda p: p.close())
        self._stop_io_thread()

    def _stop_io_thread(self) -> None:
        thread, self._io_thread = self._io_thread, None
        if thread is not None:
            thread.close()

    async def _on(self, pool: asyncpg.Pool, use: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """``use(pool)``, on the I/O thread under a simulated clock, else as external I/O here."""
        if self._io_thread is not None:
            return self._io_thread.call(lambda: use(pool))
        with external_io():
            return await use(pool)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseError(f"the {self.name} database is not connected")
        return self._pool

    @property
    def connected(self) -> bool:
        return self._pool is not None

    def retry_now(self) -> None:
        """Let the next call try to connect at once (a run's last attempt at its outbox)."""
        self._next_attempt = None

    async def ready(self) -> asyncpg.Pool:
        """The pool; an optional database that is not connected yet is connected (and migrated) here."""
        if self._pool is not None or self._optional_migrations is None:
            return self.pool
        loop = asyncio.get_running_loop()
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._pool is not None:
                return self._pool
            if self._next_attempt is not None and loop.time() < self._next_attempt:
                raise DatabaseError(f"the {self.name} database at {self.where} is unreachable; next attempt soon")
            try:
                await self.connect(timeout=5)
                await self.migrate(self._optional_migrations)
            except Exception as exc:  # noqa: BLE001 - any failure here means "not reachable yet"
                await self.close()
                self._next_attempt = loop.time() + self.RECONNECT_SECONDS
                if isinstance(exc, DatabaseError):
                    raise
                raise DatabaseError(f"cannot use the {self.name} database at {self.where}: {type(exc).__name__}") from None
            if self._next_attempt is not None:
                log.info("the %s database at %s is reachable again", self.name, self.where)
            self._next_attempt = None
            return self.pool

    def _clean(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...]:
        return statement_args(self.redactor, sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        args = self._clean(sql, args)
        return await self._on(await self.ready(), lambda pool: pool.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        args = self._clean(sql, args)
        return await self._on(await self.ready(), lambda pool: pool.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        args = self._clean(sql, args)
        return await self._on(await self.ready(), lambda pool: pool.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        args = self._clean(sql, args)
        return await self._on(await self.ready(), lambda pool: pool.execute(sql, *args))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator["TransactionConnection"]:
        pool = await self.ready()
        thread = self._io_thread
        if thread is None:
            with external_io():
                async with pool.acquire() as conn:
                    async with conn.transaction():
                        yield TransactionConnection(conn, self.redactor)
            return
        conn = thread.call(lambda: pool.acquire())
        try:
            tx = conn.transaction()
            thread.call(tx.start)
            try:
                yield BlockingConnection(conn, self.redactor, thread)
            except BaseException:
                thread.call(tx.rollback)
                raise
            thread.call(tx.commit)
        finally:
            thread.call(lambda: pool.release(conn))

    async def migrate(self, kind: str) -> list[str]:
        """Apply ``migrations/<kind>/*.sql`` not yet applied; safe to run twice or concurrently."""
        files = sorted((MIGRATIONS_DIR / kind).glob("*.sql"))
        applied_now = await self._on(self.pool, lambda pool: _apply_migrations(pool, kind, files))
        if applied_now:
            log.info("applied %s migrations to the %s database: %s", kind, self.name, ", ".join(applied_now))
        return applied_now


class TransactionConnection:
    """The connection of a transaction (``Database.transaction``): its statements' text is redacted
    like every other statement of the database."""

    def __init__(self, conn: asyncpg.Connection, redactor: Redactor) -> None:
        self._conn = conn
        self._redactor = redactor

    def _clean(self, sql: str, args: Sequence[Any]) -> tuple[Any, ...]:
        return statement_args(self._redactor, sql, args)

    async def _call(self, use: Callable[[], Awaitable[T]]) -> T:
        return await use()

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        args = self._clean(sql, args)
        return await self._call(lambda: self._conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        args = self._clean(sql, args)
        return await self._call(lambda: self._conn.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        args = self._clean(sql, args)
        return await self._call(lambda: self._conn.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        args = self._clean(sql, args)
        return await self._call(lambda: self._conn.execute(sql, *args))


class BlockingConnection(TransactionConnection):
    """A connection of a database's ``IoThread``, used from the simulated loop inside a transaction:
    each call has its answer before it returns, like every other call of that database."""

    def __init__(self, conn: asyncpg.Connection, redactor: Redactor, thread: IoThread) -> None:
        super().__init__(conn, redactor)
        self._thread = thread

    async def _call(self, use: Callable[[], Awaitable[T]]) -> T:
        return self._thread.call(use)


async def _apply_migrations(pool: asyncpg.Pool, kind: str, files: list[Path]) -> list[str]:
    applied_now: list[str] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       kind TEXT NOT NULL, version TEXT NOT NULL, checksum TEXT NOT NULL,
                       applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (kind, version))"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations WHERE kind = $1", kind)}
            for path in files:
                if path.name in done:
                    continue
                sql = path.read_text()
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (kind, version, checksum) VALUES ($1, $2, $3)",
                        kind, path.name, hashlib.sha256(sql.encode()).hexdigest(),
                    )
                applied_now.append(path.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied_now


class EmbeddedPostgres:
    """A PostgreSQL server in a folder of the project, started on demand (pgserver)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return a connection URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
            import pgserver

            self._forget_dead_users()

            try:
                self._server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
            except Exception as exc:  # pgserver raises plain exceptions with the initdb/pg_ctl output
                raise DatabaseError(
                    f"could not start the embedded PostgreSQL in {self.data_dir}: {exc}; "
                    "set DATABASE_URL to use an existing server instead"
                ) from None
        return self._server.get_uri()

    def _forget_dead_users(self) -> list[int]:
        """pgserver stops the server when its last user exits, counting users in ``.handle_pids.json``.
        A killed run never takes itself off that list, so the server would outlive every later run.
        Processes that no longer exist are taken off first: a running server is then reused, and
        stopped by the last live run as it should be. Returns the pids forgotten."""
        import json

        import psutil
        from pgserver.postgres_server import PostgresServer  # its inter-process lock guards the list

        path = self.data_dir / ".handle_pids.json"
        with PostgresServer._lock:
            try:
                pids = json.loads(path.read_text())
            except (OSError, ValueError):
                return []
            if not isinstance(pids, list):
                return []
            dead = [pid for pid in pids if not (isinstance(pid, int) and psutil.pid_exists(pid))]
            if dead:
                path.write_text(json.dumps([pid for pid in pids if pid not in dead]))
        if dead:
            log.warning("embedded PostgreSQL %s: forgot %d user(s) that died without stopping it (pids %s)",
                        self.data_dir, len(dead), ", ".join(map(str, dead)))
        return dead

    def uri(self, database: str | None = None) -> str:
        return self._server.get_uri(database)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            # pgserver forgets its handle only when the last user stops the server. While another
            # process still uses it, the handle stays cached, and a later start() in this process
            # (--compare's random control) would get it back without counting this process as a
            # user again: the other process, ending, would then stop the server under this one.
            from pgserver.postgres_server import PostgresServer

            PostgresServer._instances.pop(self._server.pgdata, None)
            self._server = None


@dataclass
class Databases:
    trading: Database
    research: Database
    embedded: EmbeddedPostgres | None

    @property
    def shared(self) -> bool:
        return self.trading is self.research

    async def close(self) -> None:
        await self.trading.close()
        if not self.shared:
            await self.research.close()
        if self.embedded is not None:
            self.embedded.stop()


async def open_databases(database_url: str | None, research_url: str | None, var_dir: Path,
                         secrets: Iterable[str] = ()) -> Databases:
    """Connect (starting the embedded server when no URL is given) and migrate both databases.
    ``secrets`` (``Secrets.secret_values()``) are blanked in every statement, with every secret shape.

    The trading database is mandatory. A separate research (Big Bro) database is optional: when
    it cannot be reached the run goes on, its events wait in the notifier's outbox, and the
    database is connected and migrated at the first use after it came back.
    """
    secrets = tuple(secrets)
    embedded = None
    if not database_url:
        embedded = EmbeddedPostgres(var_dir / "pg")
        with external_io():
            database_url = await asyncio.to_thread(embedded.start)
    trading = await Database(database_url, "trading", secrets=secrets).connect()
    await trading.migrate("trading")
    if research_url and research_url != database_url:
        research = Database(research_url, "research", optional_migrations="research", secrets=secrets)
        try:
            await research.ready()
        except DatabaseError as exc:
            log.warning("%s; Big Bro's events wait in the local outbox until it is reachable", exc)
    else:
        research = trading
        await research.migrate("research")
    return Databases(trading, research, embedded)
