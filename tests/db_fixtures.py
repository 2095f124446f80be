"""A real PostgreSQL for the suite: one embedded server per test session, a fresh database per test."""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from store.db import Database, EmbeddedPostgres
from tests.fakes.pg_proxy import PgProxy

_counter = itertools.count()


def _scratch_parent() -> str | None:
    """/dev/shm when the machine has room there, else the usual temporary folder. A test database is
    about 10 MB of small files; on a disk, creating, checkpointing and deleting 200 of them took 52 s,
    on tmpfs 7.5 s (the databases are dropped after each test, so a few hundred MB at most)."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= 2 * 2**30:
            return str(shm)
    except OSError:
        pass
    return None


@pytest.fixture(scope="session")
def pg_server():
    folder = Path(tempfile.mkdtemp(prefix="catalyst-pg-", dir=_scratch_parent()))
    server = EmbeddedPostgres(folder / "pg")
    try:
        server.start()
        # Thrown away after the suite: no need to flush commits and checkpoints to the disk.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            server._server.psql(f"ALTER SYSTEM SET {setting} = off;")
        server._server.psql("SELECT pg_reload_conf();")
        yield server
    finally:  # the server's folder goes too, whatever the tests did
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _fresh_database(server: EmbeddedPostgres, prefix: str, made: list[str]) -> str:
    name = f"{prefix}_{next(_counter)}"
    server._server.psql(f"CREATE DATABASE {name};")
    made.append(name)
    return server.uri(name)


def _drop(server: EmbeddedPostgres, names: list[str]) -> None:
    if names:  # WITH (FORCE): a connection a test left open must not keep its database
        server._server.psql("".join(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\n" for name in names))


@pytest.fixture
def database_url(pg_server) -> str:
    """The URL of a new, empty database on the embedded server (dropped after the test)."""
    made: list[str] = []
    yield _fresh_database(pg_server, "t", made)
    _drop(pg_server, made)


@pytest.fixture
def make_database_url(pg_server):
    """A factory for more empty databases (e.g. a separate research database), dropped after the test."""
    made: list[str] = []
    yield lambda prefix="x": _fresh_database(pg_server, prefix, made)
    _drop(pg_server, made)


@pytest.fixture
async def trading_db(database_url):
    db = await Database(database_url, "trading").connect()
    await db.migrate("trading")
    await db.migrate("research")
    yield db
    await db.close()


@pytest.fixture
def research_proxy(make_database_url):
    """A separate research database behind a ``PgProxy`` (down until the test says otherwise);
    ``research_proxy.target_url`` reaches the database directly."""
    proxy = PgProxy(make_database_url("research"))
    yield proxy
    proxy.close()
