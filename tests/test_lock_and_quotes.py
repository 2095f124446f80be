"""One run per agent through a database blip, no exit on a lapsed lease, and a price guard that keeps
checking stops while the broker's quote stream is quiet (issue 26, items 4 and 9).

* The agent lock: ``agent.main`` as cron starts it, on a clock that runs in real time inside a US
  session, with the real alpaca-py against the fake Alpaca and a real PostgreSQL. The run's lock
  connection is cut with ``pg_terminate_backend`` while it watches a position; then either nobody
  else wants the lock (the run takes it again, and a second run started now is refused), or another
  session takes it at once (the first run must stand down and sell nothing).
* The lease: the real monitor on the paper exchange and a simulated clock; a full check stalls the
  monitor past its lease while quotes queue up, and another run adopts the position meanwhile.
* The quotes: the real moomoo-api against the fake OpenD on a real-time clock; the pushes stop and
  the price moves through the stop in the broker's snapshot only.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import agent
from core.clock import SimClock
from core.instruments import Market, PositionSide, parse_symbol
from data.calendar import MarketCalendar
from store.db import AgentLock, Database, LockStatus, agent_lock_key
from store.trading import TradingStore
from tests.fakes.fake_opend import HK
from tests.fakes.pg_proxy import PgProxy
from tests.broker_harness import SessionWallClock, watched_on_pushes
from tests.cli_harness import migrated
from tests.helpers import query, query_async, wait_until
from tests.monitor_harness import Harness, hk_profile, hk_series, hkt

PROJECT = Path(__file__).resolve().parent.parent
US_AGENT = "public_claude"
US = MarketCalendar(Market.US)
US_DAY = date(2026, 1, 6)             # a normal Tuesday on XNYS: 09:30-16:00 ET
HK_DAY = date(2026, 11, 23)           # a normal Monday on XHKG


# --- helpers: the lock as PostgreSQL shows it ---------------------------------------------------------
HOLDER = """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND classid::bigint = ($1::bigint >> 32) & 4294967295 AND objid::bigint = $1::bigint & 4294967295"""


def lock_holder(url: str, agent_id: str) -> int | None:
    """The backend pid holding ``agent_id``'s run lock, as ``pg_locks`` shows it (None: nobody)."""
    rows = query(url, HOLDER, agent_lock_key(agent_id))
    return rows[0]["pid"] if rows else None


def seed_us_position(url: str, symbol: str, quantity: int, entry: Decimal, stop: Decimal, at: datetime) -> int:
    """An open US long in the trading tables, as a run of the agent left it (no monitor watching)."""
    async def go():
        db = await Database(url, "setup").connect()
        try:
            store = TradingStore(db, US_AGENT, Market.US)
            position = await store.open_position(
                symbol=parse_symbol(symbol, Market.US), side=PositionSide.LONG, quantity=quantity, entry_price=entry,
                entry_time=at, trading_day=US.trading_day(at), stop_price=stop, target_price=entry * Decimal("1.2"),
                tier=2, entry_reason="seeded")
            return position.position_id
        finally:
            await db.close()
    return asyncio.run(go())


def us_env(fake, url: str, var: Path, **extra: str) -> dict[str, str]:
    var.mkdir(parents=True, exist_ok=True)
    return {"DATABASE_URL": url, "CATALYST_VAR_DIR": str(var), "CATALYST_LOG_DIR": str(var / "logs"),
            "ANTHROPIC_API_KEY": "", "ANTHROPIC_BASE_URL": "", "ALPACA_API_KEY": fake.api_key,
            "ALPACA_SECRET_KEY": fake.secret_key, "ALPACA_BASE_URL": fake.base_url, "ALPACA_DATA_URL": fake.base_url,
            "CATALYST__SCAN__INDICES": json.dumps({"ALL": ["US.AAPL"]}),
            "CATALYST__MONITOR__PRICE_POLL_SECONDS": "0.5", "CATALYST__MONITOR__QUOTE_STALE_SECONDS": "1",
            "CATALYST__MONITOR__LOCK_CHECK_SECONDS": "0.5", **extra}


def second_run(env: dict[str, str], var: Path) -> subprocess.CompletedProcess:
    """``python agent.py --force --market us`` as a person would start it beside the running one."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("ANTHROPIC_", "CATALYST", "ALPACA_", "MOOMOO_", "DATABASE_URL", "RESEARCH_"))}
    return subprocess.run([sys.executable, str(PROJECT / "agent.py"), "--force", "--market", "us"], cwd=PROJECT,
                          text=True, capture_output=True, timeout=120,
                          env={**base, **env, "CATALYST_VAR_DIR": str(var), "CATALYST_LOG_DIR": str(var / "logs")})


def sell_orders(fake, after: int = 0) -> list[dict]:
    """The sell orders sent to the fake Alpaca after its ``after``-th request."""
    return [r.body for r in fake.requests[after:] if r.method == "POST" and r.path == "/v2/orders"
            and r.body.get("side") == "sell"]


def run_a_watching_aapl(alpaca_fake, database_url: str, tmp_path: Path, while_running) -> tuple[int, str, str]:
    """Run A (``agent.main`` in this thread, as cron starts it) watches 10 AAPL bought at 190 (stop 185);
    ``while_running()`` runs on another thread meanwhile. Returns A's exit code, stdout and stderr."""
    migrated(database_url)
    start = US.at_local(US_DAY, datetime.min.time().replace(hour=10, minute=30))
    clock = SessionWallClock(start)
    alpaca_fake.now = clock.now
    alpaca_fake.set_position("AAPL", 10, 190.0)
    seed_us_position(database_url, "AAPL", 10, Decimal("190"), Decimal("185"), start - timedelta(minutes=20))
    env = us_env(alpaca_fake, database_url, tmp_path / "var-a")
    failures: list[BaseException] = []

    def helper() -> None:
        try:
            while_running(env)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            failures.append(exc)
            alpaca_fake.set_price("AAPL", 180.0)  # let run A end either way

    thread = threading.Thread(target=helper, name="while-run-a", daemon=True)
    out, err = io.StringIO(), io.StringIO()
    thread.start()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = agent.main(["--force", "--market", "us"], env=env, clock=clock)
    thread.join(30)
    if failures:
        raise failures[0]
    return code, out.getvalue(), err.getvalue()


def wait_for_run_a_to_watch(url: str) -> int:
    """Until run A holds its lock and its monitor is running; the lock holder's pid."""
    wait_until(lambda: query(url, "SELECT 1 FROM monitor_status WHERE status = 'running' AND owner LIKE $1",
                             f"{US_AGENT}@%"), 60, "run A to watch AAPL")
    return wait_until(lambda: lock_holder(url, US_AGENT), 10, "run A to hold its agent lock")


async def terminate(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


# --- 4. the lock's check, as PostgreSQL sees it ----------------------------------------------------------
def test_the_lock_check_tells_held_regained_unreachable_and_taken_apart(database_url):
    """Through a proxy that can be cut: held on its connection; cut, free, taken again on a new one;
    cut with the server unreachable, unproven; cut and taken by another session, lost for good."""
    pg_proxy = PgProxy(database_url)
    pg_proxy.up()
    url = pg_proxy.url()

    async def holder() -> int | None:
        rows = await query_async(database_url, HOLDER, agent_lock_key("probe_agent"))
        return rows[0]["pid"] if rows else None

    async def go() -> list:
        lock = await AgentLock.try_take(url, "probe_agent")
        assert lock is not None
        try:
            seen = [await lock.verify(), await holder() is not None]
            await terminate(database_url, await holder())
            seen += [await lock.verify(), await holder() is not None]
            pg_proxy.down()
            seen.append(await lock.verify())
            pg_proxy.up()
            seen.append(await lock.verify())
            other = await asyncpg.connect(database_url)
            try:
                await other.execute("SELECT pg_terminate_backend($1), pg_advisory_lock($2)", await holder(),
                                    agent_lock_key("probe_agent"))
                seen.append(await lock.verify())
            finally:
                await other.close()
            return seen
        finally:
            await lock.release()

    try:
        seen = asyncio.run(go())
    finally:
        pg_proxy.close()
    assert seen == [LockStatus.HELD, True, LockStatus.REGAINED, True, LockStatus.UNREACHABLE,
                                 LockStatus.REGAINED, LockStatus.TAKEN]


# --- 4a. the lock's connection is cut; nobody else wants the lock ------------------------------------------
def test_a_run_whose_lock_connection_is_cut_takes_the_lock_again_and_a_second_run_is_refused(
        alpaca_fake, database_url, tmp_path):
    seen: dict[str, Any] = {}

    def while_running(env):
        first = wait_for_run_a_to_watch(database_url)
        asyncio.run(terminate(database_url, first))   # a connection reset: the server frees the lock
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and lock_holder(database_url, US_AGENT) in (None, first):
            time.sleep(0.05)
        seen["holder_after_cut"] = lock_holder(database_url, US_AGENT)
        seen["orders_before_b"] = alpaca_fake.count("POST", "/v2/orders")
        seen["b"] = second_run(env, tmp_path / "var-b")
        seen["orders_after_b"] = alpaca_fake.count("POST", "/v2/orders")
        alpaca_fake.set_price("AAPL", 180.0)             # through the stop: run A sells

    code, out, err = run_a_watching_aapl(alpaca_fake, database_url, tmp_path, while_running)

    assert seen["holder_after_cut"] is not None, "run A must hold its agent lock again after its connection was cut"
    b = seen["b"]
    assert b.returncode == 0 and f"another Catalyst run for {US_AGENT} is in progress" in b.stdout, b.stdout + b.stderr
    assert b.stdout.splitlines() == [f"another Catalyst run for {US_AGENT} is in progress (it holds the agent lock); "
                                     "this run exits without trading"], b.stdout
    assert seen["orders_after_b"] == seen["orders_before_b"], "an order was placed while the second run ran"
    assert code == 0, out + err
    assert "EXIT  US.AAPL stop_loss" in out, out
    [sale] = sell_orders(alpaca_fake)
    assert sale["symbol"] == "AAPL" and float(sale["qty"]) == 10
    assert alpaca_fake.positions == {}, "sold once: flat, not short"


# --- 4a. the lock's connection is cut and another run takes the lock at once -------------------------------
@pytest.mark.slow  # a whole run on the wall clock (about 30 s)
def test_a_run_that_lost_its_lock_to_another_run_stands_down_and_sells_nothing(alpaca_fake, database_url, tmp_path):
    seen: dict[str, Any] = {}
    done = threading.Event()

    def while_running(env):
        first = wait_for_run_a_to_watch(database_url)

        async def cut_and_take() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                # As a second run would: the lock is free the moment A's session ends, and taken.
                await conn.execute("SELECT pg_terminate_backend($1), pg_advisory_lock($2)", first,
                                   agent_lock_key(US_AGENT))
                seen["taken_at"] = len(alpaca_fake.requests)
                alpaca_fake.set_price("AAPL", 180.0)  # through A's stop while the other run holds the lock
                await asyncio.to_thread(done.wait, 60)
            finally:
                await conn.close()
        asyncio.run(cut_and_take())

    def a_then_release():
        try:
            return run_a_watching_aapl(alpaca_fake, database_url, tmp_path, while_running)
        finally:
            done.set()

    code, out, err = a_then_release()

    assert sell_orders(alpaca_fake, after=seen["taken_at"]) == [], "run A sold while another run held the agent lock"
    assert alpaca_fake.positions["AAPL"]["qty"] == 10, "the position is left to the run that holds the lock"
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("stood down: this run lost the public_claude agent lock"), err
    stopped = [m for m in query(database_url, "SELECT priority, data FROM claude_messages WHERE from_agent = $1",
                                US_AGENT) if json.loads(m["data"]).get("event") == "RUN_STOPPED"]
    assert len(stopped) == 1 and stopped[0]["priority"] == "urgent"
    assert json.loads(stopped[0]["data"])["reason"] == "agent_lock_lost"
    [monitor] = query(database_url, "SELECT status, lease_expires_at FROM monitor_status")
    assert monitor["lease_expires_at"] is None, "the stood-down monitor released the position for the lock's holder"
    [position] = query(database_url, "SELECT status FROM positions")
    assert position["status"] == "open"


# --- 4b. a lease that lapsed while the monitor stalled ---------------------------------------------------
class StallingTechnicals:
    """The exit technicals, with the first call taking ``seconds`` (a stalled loop, a slow bars call)."""

    def __init__(self, inner, clock: SimClock, seconds: float) -> None:
        self.inner, self.clock, self.seconds, self.calls = inner, clock, seconds, 0

    async def exit_technicals(self, position):
        self.calls += 1
        if self.calls == 1:
            await self.clock.sleep(self.seconds)
        return await self.inner.exit_technicals(position)


@pytest.mark.parametrize("adopted", [True, False], ids=["adopted-meanwhile", "nobody-else"])
def test_a_monitor_whose_lease_lapsed_while_it_stalled_renews_it_before_any_exit(database_url, tmp_path, adopted):
    """The full check at 10:05 stalls 280 s; the lease (120 s) lapses at 10:06:40; the price breaks
    the 78.00 stop at 10:07 and the pushed quotes queue up. When another run adopted the position at
    10:08 the monitor must stand down without selling; when nobody did, it renews and sells."""
    series = hk_series("08041", HK_DAY, levels=[("09:30", 80.0), ("10:07", 77.0)])

    async def scenario(clock):
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl",
                                profile=hk_profile(lease_seconds=120))
        h.ctx.technicals = StallingTechnicals(h.market, clock, 280)
        try:
            position = await h.open_position(series.symbol, 100, stop=Decimal("78.00"))
            other: list[bool] = []

            async def another_run_adopts_it():
                other.append(await h.store.claim_monitor(position.position_id, series.symbol, "intl_claude@other-run",
                                                         clock.now(), 3600))
            if adopted:
                h.at(hkt(HK_DAY, "10:08"), another_run_adopts_it)
            outcome = await h.run_monitor(position, until=hkt(HK_DAY, "10:30"))
            return outcome, other, await h.exit_orders(series.symbol), await h.status_row(position.position_id)
        finally:
            await h.close()

    clock = SimClock(hkt(HK_DAY, "10:00"))
    outcome, other, exits, row = clock.run(scenario(clock))

    if adopted:
        assert other == [True], "the lease had lapsed: the other run could adopt the position"
        assert exits == [], "an exit order was placed on a lapsed lease that another run holds now"
        assert not outcome.closed and "another process" in outcome.note
        assert row["owner"] == "intl_claude@other-run"
    else:
        assert outcome.closed and outcome.exit_reason == "stop_loss" and len(exits) == 1


# --- 9. the quote stream goes quiet: the price guard polls the broker ------------------------------------
def test_with_the_quote_pushes_stopped_a_price_through_the_stop_is_polled_and_sold_within_seconds(
        opend, database_url, tmp_path):
    """OpenD pushes 381.0, then nothing more (a stream down or reconnecting with its back-off); the
    price falls to 365.0 (stop 370) in the broker's snapshot only. With pushes quiet for
    ``quote_stale_seconds`` (1 s here) the monitor polls every ``price_poll_seconds`` (0.5 s) and
    sells within a few seconds, not at the next full check 5 minutes later."""
    profile = hk_profile(price_poll_seconds=0.5, quote_stale_seconds=1, check_interval_seconds=300)
    clock = SessionWallClock(hkt(HK_DAY, "10:00"))

    async def scenario():
        async with watched_on_pushes(opend, database_url, clock, profile, tmp_path / "outbox.jsonl",
                                     "quiet-test@1") as watched:
            opend.set_price(HK, "00700", 365.0)     # below the stop, and no push tells of it
            moved = clock.now()
            try:
                outcome = await asyncio.wait_for(asyncio.shield(watched.task), 6)
            except TimeoutError:
                watched.task.cancel()
                await asyncio.gather(watched.task, return_exceptions=True)
                raise AssertionError("no exit within 6 s of the price moving through the stop while pushes were quiet")
            return outcome, moved, await watched.store.position(watched.position.position_id)

    outcome, moved, closed = asyncio.run(scenario())

    assert outcome.closed and outcome.exit_reason == "stop_loss", outcome
    assert (closed.status, closed.exit_price) == ("closed", Decimal("365.0"))
    assert closed.exit_time - moved < timedelta(seconds=4), "polled within quote_stale_seconds + a poll or two"
    [sale] = [o for o in opend.accounts[9001].orders.values() if not o.is_buy]
    assert (sale.fill_qty, sale.fill_price) == (100, 365.0)
