"""Helpers every test module may use (no test module imports another)."""
from __future__ import annotations

import asyncio
from typing import Any

import asyncpg


def query(url: str, sql: str, *args: Any) -> list[dict]:
    """The rows of ``sql`` on the database at ``url``, as a trader (or Big Bro) reads them afterwards."""
    async def go():
        conn = await asyncpg.connect(url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    return asyncio.run(go())
