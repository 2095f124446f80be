"""Pytest fixtures for the fake Anthropic Messages API.

* ``fake_anthropic``: a started ``FakeAnthropic`` on 127.0.0.1 (``.base_url``, ``.api_key`` = "test"),
  stopped after the test.
* ``anthropic_client``: the real ``AsyncAnthropic`` pointed at it, no retries, closed after the test.
"""
from __future__ import annotations

import pytest
import pytest_asyncio

from tests.fakes.fake_anthropic import FakeAnthropic

FAKE_API_KEY = "test"


@pytest.fixture
def fake_anthropic():
    fake = FakeAnthropic(api_key=FAKE_API_KEY).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest_asyncio.fixture(loop_scope="function")
async def anthropic_client(fake_anthropic):
    from anthropic import AsyncAnthropic

    client = AsyncAnthropic(base_url=fake_anthropic.base_url, api_key=FAKE_API_KEY, max_retries=0)
    try:
        yield client
    finally:
        await client.close()
