"""Pytest fixtures for the fake Alpaca server (REST + both websockets on 127.0.0.1, ephemeral ports).

``alpaca_fake``: a started ``FakeAlpaca`` (immediate fills), stopped after the test.
``alpaca_fake_factory``: call it with ``FakeAlpaca`` keyword arguments for another behaviour
(``fill_market_orders=False``, ``partial_fill_ratio=0.6``, ``bars_page_size=50``, ...); every fake
it started is stopped after the test.
``alpaca_secrets``: ``Secrets`` pointing REST and data at ``alpaca_fake`` with its keys.
"""
from __future__ import annotations

from typing import Callable

import pytest

from tests.fakes.fake_alpaca import FakeAlpaca

FAKE_ALPACA_KEY = "PKFAKEKEY0000000001"
FAKE_ALPACA_SECRET = "fake-secret-do-not-leak-7c1e9a"


@pytest.fixture
def alpaca_fake_factory() -> Callable[..., FakeAlpaca]:
    started: list[FakeAlpaca] = []

    def start(**kwargs) -> FakeAlpaca:
        kwargs.setdefault("api_key", FAKE_ALPACA_KEY)
        kwargs.setdefault("secret_key", FAKE_ALPACA_SECRET)
        fake = FakeAlpaca(**kwargs).start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


@pytest.fixture
def alpaca_fake(alpaca_fake_factory) -> FakeAlpaca:
    return alpaca_fake_factory()


def alpaca_secrets_for(fake: FakeAlpaca):
    from config.settings import Secrets

    return Secrets(alpaca_api_key=fake.api_key, alpaca_secret_key=fake.secret_key,
                   alpaca_base_url=fake.base_url, alpaca_data_url=fake.base_url)


@pytest.fixture
def alpaca_secrets(alpaca_fake):
    return alpaca_secrets_for(alpaca_fake)
