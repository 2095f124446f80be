"""A real PostgreSQL for the suite: one embedded server per test session, a fresh database per test."""
from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import pytest

from store.db import Database, EmbeddedPostgres
from tests.fakes.pg_proxy import PgProxy

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    folder = Path(tempfile.mkdtemp(prefix="catalyst-pg-"))
    server = EmbeddedPostgres(folder / "pg")
    try:
        server.start()
        yield server
    finally:  # the server's folder (~90 MB) goes too, whatever the tests did
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _fresh_database(server: EmbeddedPostgres, prefix: str) -> str:
    name = f"{prefix}_{next(_counter)}"
    server._server.psql(f"CREATE DATABASE {name};")
    return server.uri(name)


@pytest.fixture
def database_url(pg_server) -> str:
    """The URL of a new, empty database on the embedded server."""
    return _fresh_database(pg_server, "t")


@pytest.fixture
def make_database_url(pg_server):
    """A factory for more empty databases (e.g. a separate research database)."""
    return lambda prefix="x": _fresh_database(pg_server, prefix)


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
