"""Suite-wide setup: a private HOME (the moomoo SDK writes logs under it), loopback only."""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="catalyst-test-home-"))
os.environ["HOME"] = str(_HOME)
# Registered first, so it runs last: after the SDKs' and pgserver's own exit handlers.
atexit.register(shutil.rmtree, _HOME, ignore_errors=True)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(var, None)
for var in list(os.environ):
    if var.startswith(("ANTHROPIC_", "CATALYST__", "ALPACA_", "MOOMOO_")) or var in ("DATABASE_URL", "RESEARCH_DATABASE_URL"):
        os.environ.pop(var)

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

pytest_plugins = [
    "tests.fakes.anthropic_fixtures",
    "tests.fakes.alpaca_fixtures",
    "tests.fakes.opend_fixtures",
    "tests.db_fixtures",
    "tests.fakes.webhook_fixtures",
    "tests.fakes.mail_fixtures",
    "tests.report_fixtures",
]


@pytest.fixture(autouse=True)
def _no_checkout_env_or_logs(tmp_path_factory, monkeypatch):
    """`agent.main` in a test never reads the checkout's `.env` (on a trader's server it holds real
    keys) and never writes the checkout's `logs/agent.log` (the trader's log)."""
    import agent

    monkeypatch.setattr(agent, "PROJECT_DIR", tmp_path_factory.mktemp("checkout"))


@pytest.fixture
def restore_logging():
    """agent.main points the root logger at the run's log file; give the suite its handlers back."""
    from ops.logsetup import restored_logging

    with restored_logging():
        yield
