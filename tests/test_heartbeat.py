"""``--mode heartbeat``: adopt a position whose monitor process died, watch it to its exit, no entries.

The run that died is reproduced by what it leaves behind: shares held at the (shared) paper
exchange, an open position row with its stop, and a monitor lease in ``monitor_status`` that is
never renewed. Heartbeats are the real run (``run._run`` in heartbeat mode) on the same simulated
clock and paper exchange, against the real 09988 bars of 2022-06-15.
"""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

import agent
from brokers.base import OrderRequest, OrderType
from brokers.paper import PaperExchange
from core.clock import SimClock
from data.bars import load_samples
from data.calendar import MarketCalendar
from core.instruments import Market, OrderSide, PositionSide, Symbol
from runner.run import _run
from store.db import Database
from store.trading import TradingStore
from tests.helpers import agent_messages, async_wait_until, query

AGENT = "intl_claude"
DAY = date(2022, 6, 15)
ALIBABA = Symbol(Market.HK, "09988")
DEAD_OWNER = "intl_claude@20220615T020330-dead00"
STOP = Decimal("105.4")  # 09988 trades above it until 10:15 that morning, then below


def heartbeat_settings(database_url: str, var_dir: Path):
    args = agent.parse_args(["--mode", "heartbeat", "--force"])
    env = agent.read_environment({"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(var_dir)})
    return args, agent.load_settings(args, env)


async def filled(exchange: PaperExchange, broker_order_id: str):
    """The order once it is final (filled or not), else None."""
    order = await exchange.get_order(broker_order_id)
    return order if order.status.is_final else None


async def a_run_that_died(database_url: str, exchange: PaperExchange, clock: SimClock, lease_seconds: float) -> int:
    """Buy 100 09988, record the position with its stop, take the monitor lease; then nothing (killed)."""
    db = await Database(database_url, "the run that died").connect()
    try:
        await db.migrate("trading")
        await db.migrate("research")
        store = TradingStore(db, AGENT, Market.HK)
        order = await exchange.place_order(OrderRequest(ALIBABA, OrderSide.BUY, 100, OrderType.MARKET, "intl-dead-e1"))
        order = await async_wait_until(lambda: filled(exchange, order.broker_order_id), timeout=60, interval=1,
                                       what="the paper exchange to fill the entry")
        await store.record_order(order, trading_day=DAY, at=clock.now(), cycle_id=None, position_id=None)
        position = await store.open_position(
            symbol=ALIBABA, side=PositionSide.LONG, quantity=order.filled_quantity, entry_price=order.avg_fill_price,
            entry_time=clock.now(), trading_day=DAY, stop_price=STOP, target_price=Decimal("112"), tier=2,
            entry_fees=order.fees, entry_client_order_id="intl-dead-e1")
        assert await store.claim_monitor(position.position_id, ALIBABA, DEAD_OWNER, clock.now(), lease_seconds)
        return position.position_id
    finally:
        await db.close()


def test_a_position_whose_monitor_died_is_adopted_by_the_next_heartbeat_and_exits_on_its_stop(
        database_url, tmp_path, capsys):
    args, settings = heartbeat_settings(database_url, tmp_path / "var")
    profile = settings.profile
    lease = timedelta(seconds=profile.monitor.lease_seconds)
    calendar = MarketCalendar(Market.HK)
    session = calendar.session(DAY)
    clock = SimClock(calendar.at_local(DAY, time(10, 3, 30)))

    async def scenario():
        exchange = PaperExchange(load_samples(Market.HK), clock, calendar, profile)
        exchange.start(until=session.close)
        position_id = await a_run_that_died(database_url, exchange, clock, lease.total_seconds())
        died_at = clock.now()
        await clock.sleep(lease.total_seconds() / 2)  # heartbeat 1: the lease is still valid
        first = await _run(args, settings, calendar, clock, exchange, [], False, session=None)
        first_out = capsys.readouterr().out
        exchange.start(until=session.close)  # the run closed the broker; the market goes on
        await clock.sleep_until(died_at + lease + timedelta(seconds=30))  # heartbeat 2: expired
        adopted_at = clock.now()
        second = await _run(args, settings, calendar, clock, exchange, [], False, session=None)
        held = {p.symbol: p.quantity for p in await exchange.positions()}
        await exchange.stop()
        return position_id, first, first_out, adopted_at, second, held

    position_id, first, first_out, adopted_at, second, held = clock.run(scenario())
    second_out = capsys.readouterr().out

    # heartbeat 1: a live lease is never stolen; one quiet line, exit 0
    assert first == 0
    assert first_out.splitlines() == ["heartbeat: nothing to watch (1 open position(s), each watched by a live monitor)"]
    # heartbeat 2: adopted, watched, sold on the stop
    assert second == 0
    assert "heartbeat: adopted 1 position(s) whose monitor had stopped (HK.09988)" in second_out
    position = query(database_url, "SELECT * FROM positions WHERE position_id=$1", position_id)[0]
    assert position["status"] == "closed" and position["exit_reason"] == "stop_loss"
    assert position["exit_price"] <= STOP
    assert calendar.at_local(DAY, time(10, 15)) <= position["exit_time"] <= calendar.at_local(DAY, time(10, 18))
    assert position["exit_time"] > adopted_at
    assert held.get(ALIBABA, 0) == 0, "the shares are sold at the exchange"
    monitor = query(database_url, "SELECT owner, status, lease_expires_at FROM monitor_status WHERE position_id=$1",
                    position_id)[0]
    assert monitor["owner"] != DEAD_OWNER and monitor["owner"].startswith(AGENT)
    assert monitor["status"] != "running"
    # no new entries, no cycles: only the dead run's buy and the heartbeat's sell
    orders = query(database_url, "SELECT purpose, side FROM orders ORDER BY order_id")
    assert [(o["purpose"], o["side"]) for o in orders] == [("entry", "buy"), ("exit", "sell")]
    assert query(database_url, "SELECT * FROM cycles") == []
    events = [m["data"]["event"] for m in agent_messages(database_url)]
    assert "MONITOR_STARTED" in events and "EXIT" in events and "ENTRY" not in events
    assert len(query(database_url, "SELECT * FROM claude_observations WHERE agent_id=$1", AGENT)) == 1


def test_a_heartbeat_at_lunch_adopts_nothing_and_says_so_in_one_line(database_url, tmp_path, capsys):
    args, settings = heartbeat_settings(database_url, tmp_path / "var")
    profile = settings.profile
    calendar = MarketCalendar(Market.HK)
    session = calendar.session(DAY)
    clock = SimClock(calendar.at_local(DAY, time(11, 40)))

    async def scenario():
        exchange = PaperExchange(load_samples(Market.HK), clock, calendar, profile)
        exchange.start(until=session.close)
        await a_run_that_died(database_url, exchange, clock, profile.monitor.lease_seconds)
        await clock.sleep_until(calendar.at_local(DAY, time(12, 30)))
        return await _run(args, settings, calendar, clock, exchange, [], False, session=None)

    code = clock.run(scenario())
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == [
        "heartbeat: HK session lunch (2022-06-15 12:30 HKT); 1 open position(s); nothing to watch now"]
    owner = query(database_url, "SELECT owner FROM monitor_status")[0]["owner"]
    assert owner == DEAD_OWNER, "at lunch the heartbeat leaves the position to the afternoon's run"


def test_heartbeat_with_no_broker_configured_is_one_quiet_line(tmp_path, capsys, restore_logging):
    code = agent.main(["--mode", "heartbeat"], env={"CATALYST_VAR_DIR": str(tmp_path / "var"),
                                                    "CATALYST_LOG_DIR": str(tmp_path / "logs")})
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == ["heartbeat: no HK broker configured (see .env.example); nothing to watch"]
    assert not (tmp_path / "var" / "pg").exists(), "nothing to do: no database was started"


# --- crontab.example ------------------------------------------------------------------------------
def _cron_field(text: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            start, end = map(int, part.split("-"))
        else:
            start = end = int(part)
        values.update(range(start, end + 1, step))
    return values


def crontab_runs(path: Path) -> list[tuple[set[int], set[int], set[int], str, str]]:
    """(minutes, hours, weekdays 0=Mon, market, mode) of every active agent.py line."""
    runs = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split()[0]:
            continue
        minute, hour, dom, month, dow, command = line.split(None, 5)
        assert (dom, month) == ("*", "*")
        market = command.split("--market ")[1].split()[0]
        mode = command.split("--mode ")[1].split()[0] if "--mode " in command else "trade"
        assert 'cd "$CATALYST_HOME"' in command and ">> logs/" in command and "2>&1" in command
        runs.append((_cron_field(minute, 0, 59), _cron_field(hour, 0, 23),
                     {d - 1 for d in _cron_field(dow, 0, 7)}, market, mode))
    return runs


@pytest.mark.parametrize("market", ["hk", "us"])
def test_crontab_example_runs_each_cycle_once_a_day_across_daylight_saving_and_heartbeats_in_between(market):
    from datetime import timezone

    from config.settings import load_profile, profile_path
    from data.calendar import SessionState
    from runner.run import is_cycle_time

    profile = load_profile(profile_path(market), {})
    calendar = MarketCalendar(profile.market)
    runs = [r for r in crontab_runs(Path(__file__).resolve().parent.parent / "crontab.example") if r[3] == market]
    # a summer week and a winter week (US daylight saving), with a holiday in each market's calendar
    days = [date(2026, 7, 1) + timedelta(days=i) for i in range(7)] + [date(2026, 12, 21) + timedelta(days=i) for i in range(7)]
    for day in days:
        fires = {mode: [] for mode in ("trade", "heartbeat", "report")}
        for minutes, hours, weekdays, _, mode in runs:
            if day.weekday() in weekdays:
                fires[mode] += [datetime(day.year, day.month, day.day, h, m, tzinfo=timezone.utc)
                                for h in sorted(hours) for m in sorted(minutes)]
        cycles = [t for t in fires["trade"] if is_cycle_time(profile, calendar, t)]
        session = calendar.session(day)
        if session is None:
            assert cycles == [], f"{day}: no session, no cycle"
            continue
        expected = [calendar.at_local(day, t) for t in profile.schedule.cycle_times
                    if calendar.state(calendar.at_local(day, t)) is SessionState.OPEN]
        assert cycles == expected, f"{day}: each cycle time exactly once"
        assert not set(fires["heartbeat"]) & set(fires["trade"]), "a heartbeat never races a trade run for the lock"
        [report] = fires["report"]
        assert session.close < report and calendar.local(report).date() == day, \
            f"{day}: the end-of-day report once, after the close, on the same local day"
        for start, end in session.parts:
            beats = sorted(t for t in fires["heartbeat"] if start <= t < end)
            gaps = [b - a for a, b in zip([start, *beats], [*beats, end])]
            assert max(gaps) <= timedelta(minutes=30), f"{day}: a heartbeat at least every 30 minutes in the session"
