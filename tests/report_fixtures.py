"""Fixtures of the report tests: the environment of a report run and a day the demo traded."""
from __future__ import annotations

from pathlib import Path

import pytest

import agent
from config.settings import ENV_VARS
from tests.helpers import query

DEMO = "intl_claude-demo"
NO_SECRETS = {var: "" for var in ENV_VARS}


def report_env(url: str, tmp_path: Path, **more: str) -> dict[str, str]:
    return {**NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
            "CATALYST_REPORTS_DIR": str(tmp_path / "reports"), "CATALYST_LOG_DIR": str(tmp_path / "logs"), **more}


@pytest.fixture
def traded_day(database_url, tmp_path, capsys):
    """`make run`: the demo trades the sample session on the paper exchange, recorded under its own id."""
    assert agent.main(["--force"], env=report_env(database_url, tmp_path)) == 0, capsys.readouterr().out
    capsys.readouterr()
    [day] = {p["trading_day"] for p in query(database_url, "SELECT trading_day FROM positions WHERE agent_id=$1", DEMO)}
    return day
