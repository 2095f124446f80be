"""Pytest fixtures for the fake Moomoo OpenD: one fake per test, on 127.0.0.1, its own loop thread."""
from __future__ import annotations

import logging
import socket

import pytest

from tests.fakes.fake_opend import FakeOpenD


def _quiet_sdk_console() -> None:
    from moomoo.common.ft_logger import logger

    logger.console_level = logging.ERROR


@pytest.fixture
def opend():
    """A running fake OpenD (HK SIMULATE account 9001, REAL account 8001, trade password 123456)."""
    _quiet_sdk_console()
    fake = FakeOpenD()
    fake.start_in_thread()
    yield fake
    fake.stop_thread()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
