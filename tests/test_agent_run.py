"""The whole agent, as a trader runs it: `make run`, a Claude cycle, bad model input, the budget,
a dead API key, two runs at once, a crash between placing and recording an order.

Every run is ``agent.main`` on the bundled sample HKEX session (paper exchange, simulated clock)
against a fresh PostgreSQL database and a private var folder; Claude is the real anthropic SDK
talking to ``FakeAnthropic``. What is asserted is what a trader would look at afterwards: the
exit code, the printed summary, the rows in the trading tables and Big Bro's messages.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

import agent
from config.settings import ENV_VARS, load_profile, profile_path
from core.costs import Usage, cost_usd
from tests.fakes.fake_anthropic import AUTH_ERROR, CREDIT_TOO_LOW, reply, text
from tests.fakes.scripted_trader import ScriptedTrader, call, calls, pick_entry
from tests.helpers import query
from engine.workflow import ORDER

PROJECT = Path(__file__).resolve().parent.parent
# `--force` with no broker trades the sample session as the demo agent, never as the live `intl_claude`.
DEMO = "intl_claude-demo"
PHASES = [p.value for p in ORDER]


# --- helpers -----------------------------------------------------------------------------------------
# A developer's .env must not point a test at a real broker, key or database: blank every variable.
NO_SECRETS = {var: "" for var in ENV_VARS}


def run_agent(url: str, var_dir: Path, *argv: str, **env: str) -> int:
    """``agent.main`` in this process with an explicit environment (never the repo's var/ or .env keys)."""
    base = {**NO_SECRETS, "DATABASE_URL": url, "CATALYST_VAR_DIR": str(var_dir)}
    return agent.main(["--force", *argv], env={**base, **env})


def claude_env(fake) -> dict[str, str]:
    return {"ANTHROPIC_API_KEY": fake.api_key, "ANTHROPIC_BASE_URL": fake.base_url}


def messages(url: str) -> list[dict]:
    rows = query(url, "SELECT id, from_agent, to_agent, msg_type, priority, subject, body, data FROM claude_messages ORDER BY id")
    for r in rows:
        r["data"] = json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]
        r["event"] = r["data"].get("event")
    return rows


def events(url: str) -> Counter:
    return Counter(m["event"] for m in messages(url))


def tool_results(body: dict) -> list[dict]:
    """The tool_result blocks a request sends back (the model's view of what its tools returned)."""
    return [b for b in body["messages"][-1]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]


@pytest.fixture(scope="module")
def hk_profile():
    return load_profile(profile_path("hk"), {})


@pytest.fixture(scope="module")
def planned(hk_profile):
    """A scan candidate at the first cycle that whole board lots fit, with a stop and target check_risk accepts."""
    return pick_entry(hk_profile)


@pytest.fixture
def var_dir(tmp_path) -> Path:
    path = tmp_path / "var"
    path.mkdir()
    return path


def assert_phases_forward(stored: str, expected: set[str], exactly: bool = False) -> None:
    """cycles.phases: each phase reached with its start and duration, starts in phase order (never backwards)."""
    phases = json.loads(stored)
    assert set(phases) == expected if exactly else set(phases) >= expected, phases
    reached = [p for p in PHASES if p in phases]
    starts = [phases[p]["started_at"] for p in reached]
    assert starts == sorted(starts), phases
    assert all(phases[p]["seconds"] >= 0 for p in reached)


def assert_trade_recorded(url: str, position: dict) -> None:
    """The entry buy and the exit sell of a closed position are in orders with the real fills."""
    orders = query(url, "SELECT * FROM orders WHERE position_id=$1 ORDER BY order_id", position["position_id"])
    entry = [o for o in orders if o["purpose"] == "entry"]
    exits = [o for o in orders if o["purpose"] == "exit"]
    assert len(entry) == 1, orders
    assert entry[0]["side"] == "buy" and entry[0]["status"] == "filled"
    assert entry[0]["filled_quantity"] == position["quantity"]
    assert entry[0]["avg_fill_price"] == position["entry_price"]
    assert exits, f"no sell order recorded for {position['symbol']} (the original never recorded sells): {orders}"
    sold = [o for o in exits if o["filled_quantity"] > 0]
    assert all(o["side"] == "sell" for o in exits)
    assert sum(o["filled_quantity"] for o in sold) == position["quantity"]
    value = sum(o["avg_fill_price"] * o["filled_quantity"] for o in sold) / position["quantity"]
    assert abs(value - position["exit_price"]) < Decimal("0.0001")


# --- 1. make run ---------------------------------------------------------------------------------------
def test_make_run_trades_the_sample_session_and_records_everything(database_url, var_dir, capsys):
    code = run_agent(database_url, var_dir)
    out = capsys.readouterr().out

    assert code == 0, out
    entries = [line.split()[1] for line in out.splitlines() if line.strip().startswith("ENTRY ")]
    exits = [line.split()[1] for line in out.splitlines() if line.strip().startswith("EXIT ")]
    assert entries, out
    assert Counter(exits) == Counter(entries), out
    assert "P&L: realized HKD" in out

    cycles = query(database_url, "SELECT * FROM cycles ORDER BY started_at")
    assert cycles and all(c["status"] == "completed" and c["brain"] == "rules" for c in cycles)
    for c in cycles:
        assert_phases_forward(c["phases"], {"INIT", "PORTFOLIO", "SCAN", "ANALYZE", "LOG", "COMPLETE"})
    positions = query(database_url, "SELECT * FROM positions ORDER BY position_id")
    assert len(positions) == len(entries)
    assert all(p["status"] == "closed" and p["exit_price"] > 0 and p["realized_pnl"] is not None for p in positions)
    assert sum(c["trades_executed"] for c in cycles) == len(positions)

    decisions = query(database_url, "SELECT * FROM decisions ORDER BY decision_id")
    cycle_ids = {c["cycle_id"] for c in cycles}
    assert decisions and {d["cycle_id"] for d in decisions} <= cycle_ids
    trades = [d for d in decisions if d["decision"] == "trade"]
    assert sorted(d["symbol"] for d in trades) == sorted(p["symbol"] for p in positions)
    assert all(d["tier"] and d["entry_price"] and d["stop_price"] and d["target_price"] for d in trades)

    for p in positions:
        assert_trade_recorded(database_url, p)

    by_event: dict[str, list[dict]] = {}
    for m in messages(database_url):
        assert (m["from_agent"], m["to_agent"]) == (DEMO, "big_bro")
        assert m["subject"].startswith("[demo] ") and m["data"]["run_kind"] == "demo"
        by_event.setdefault(m["event"], []).append(m)
    for p in positions:
        for kind in ("ENTRY", "MONITOR_STARTED", "EXIT", "MONITOR_ENDED"):
            assert any(m["data"].get("position_id") == p["position_id"] for m in by_event.get(kind, [])), (kind, p["symbol"])
    exit_msgs = [m for m in by_event["EXIT"]]
    assert all(m["priority"] == "high" for m in exit_msgs)
    assert sorted(m["data"]["cycle_id"] for m in by_event["CYCLE_SUMMARY"]) == sorted(cycle_ids)


def test_every_make_run_trades_the_sample_day_afresh_and_keeps_the_earlier_runs_records(database_url, var_dir, capsys):
    """Every `make run` replays the same sample day on a fresh paper account. Counted as today's, the
    earlier runs' entries would soon use up the day's limit (here 2 entries) and the demo would stop
    trading; instead they are kept under an agent id of their own."""
    limit = {"CATALYST__RISK__MAX_ENTRIES_PER_DAY": "2"}

    def entries(out: str) -> list[str]:
        return [line.split()[1] for line in out.splitlines() if line.strip().startswith("ENTRY ")]

    assert run_agent(database_url, var_dir, **limit) == 0
    first = capsys.readouterr().out
    first_positions = query(database_url, "SELECT position_id, symbol, realized_pnl FROM positions ORDER BY position_id")
    assert len(entries(first)) == 2 == len(first_positions), first

    assert run_agent(database_url, var_dir, **limit) == 0
    second = capsys.readouterr().out
    assert entries(second) == entries(first), "the second run trades the day like the first"
    [kept_as] = re.findall(r"kept under agent id (\S+);", second)
    assert kept_as.startswith(f"{DEMO}-paper-before-")
    assert "(2 cycle(s), 2 position(s))" in second

    by_agent = query(database_url, "SELECT agent_id, position_id, symbol, realized_pnl FROM positions ORDER BY position_id")
    assert [(r["position_id"], r["symbol"], r["realized_pnl"]) for r in by_agent if r["agent_id"] == kept_as] == [
        (p["position_id"], p["symbol"], p["realized_pnl"]) for p in first_positions], "nothing of the first run is lost"
    assert len([r for r in by_agent if r["agent_id"] == DEMO]) == 2
    cycles = query(database_url, "SELECT agent_id, count(*) AS n FROM cycles GROUP BY agent_id ORDER BY agent_id")
    assert [(c["agent_id"], c["n"]) for c in cycles] == [(DEMO, 2), (kept_as, 2)]
    orphans = query(database_url, """SELECT count(*) AS n FROM decisions d JOIN cycles c USING (cycle_id)
                                     WHERE d.agent_id <> c.agent_id""")
    assert orphans[0]["n"] == 0, "decisions moved with their cycles"


# --- 2. a Claude cycle ---------------------------------------------------------------------------------
def test_claude_cycle_trades_records_and_prices_every_call(database_url, var_dir, fake_anthropic, planned, hk_profile, capsys):
    trader = ScriptedTrader([[
        call("scan_market", index="ALL", limit=10),
        call("get_quote", symbol=planned.symbol),
        call("get_technicals", symbol=planned.symbol, timeframe="5m"),
        call("check_risk", **planned.risk_input()),
        call("execute_trade", **planned.trade_input()),
        reply(text("Bought one tier-2 position; done.")),
    ]])
    fake_anthropic.script([trader] * 80)

    code = run_agent(database_url, var_dir, **claude_env(fake_anthropic))
    out = capsys.readouterr().out

    assert code == 0, out
    first = trader.decision_bodies[0]
    assert len(first) == 6
    checked = json.loads(tool_results(first[4])[0]["content"])
    assert checked["approved"] is True, checked
    traded = json.loads(tool_results(first[5])[0]["content"])
    assert traded["status"] == "filled" and traded["filled_quantity"] == planned.quantity, traded
    assert Decimal(traded["fill_price"]) == planned.ask

    # Prompt caching: the system prompt and the tool list carry cache_control on every request.
    for body in (b for cycle in trader.decision_bodies for b in cycle):
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert len(body["tools"]) == 12

    cycles = query(database_url, "SELECT * FROM cycles ORDER BY started_at")
    claude_cycle = cycles[0]
    assert claude_cycle["brain"] == "claude" and claude_cycle["status"] == "completed"
    assert claude_cycle["trades_executed"] == 1 and claude_cycle["iterations"] == 6
    assert_phases_forward(claude_cycle["phases"],
                          {"INIT", "SCAN", "ANALYZE", "DECIDE", "VALIDATE", "EXECUTE", "MONITOR", "LOG", "COMPLETE"},
                          exactly=True)
    assert json.loads(claude_cycle["tools_called"]) == ["scan_market", "get_quote", "get_technicals", "check_risk", "execute_trade"]

    decisions = query(database_url, "SELECT * FROM decisions WHERE cycle_id=$1", claude_cycle["cycle_id"])
    assert [(d["decision"], d["symbol"], d["tier"]) for d in decisions] == [("trade", planned.symbol, 2)]
    assert (decisions[0]["stop_price"], decisions[0]["target_price"]) == (planned.stop, planned.target)
    [position] = query(database_url, "SELECT * FROM positions")
    assert (position["symbol"], position["quantity"], position["entry_price"]) == (planned.symbol, planned.quantity, planned.ask)
    assert position["cycle_id"] == claude_cycle["cycle_id"] and position["status"] == "closed"
    assert_trade_recorded(database_url, position)
    kinds = {m["event"] for m in messages(database_url) if m["data"].get("position_id") == position["position_id"]}
    assert kinds >= {"ENTRY", "MONITOR_STARTED", "EXIT", "MONITOR_ENDED"}
    summaries = [m for m in messages(database_url) if m["event"] == "CYCLE_SUMMARY"
                 and m["data"]["cycle_id"] == claude_cycle["cycle_id"]]
    assert len(summaries) == 1 and summaries[0]["data"]["entries"] == 1

    # Cost: every response's usage x the profile's prices, stored per call and on the cycle.
    spec = hk_profile.models.decision
    assert len(fake_anthropic.responses) == len(fake_anthropic.requests)       # every request was answered 200
    answer_to = {id(body): r for body, r in zip(fake_anthropic.requests, fake_anthropic.responses)}
    decision_responses = [answer_to[id(body)] for body in first]              # not the monitor's Haiku consults
    assert all(r["model"] == spec.name for r in decision_responses)
    expected = sum((cost_usd(Usage.from_anthropic(r["usage"]), spec) for r in decision_responses), Decimal(0))
    usage_rows = query(database_url, "SELECT * FROM api_usage WHERE cycle_id=$1 AND purpose='decision' ORDER BY usage_id",
                       claude_cycle["cycle_id"])
    assert len(usage_rows) == 6
    assert sum(r["cost_usd"] for r in usage_rows) == expected
    assert claude_cycle["cost_usd"] == expected
    assert claude_cycle["input_tokens"] == sum(r["usage"]["input_tokens"] for r in decision_responses)
    assert claude_cycle["cache_read_tokens"] == sum(r["usage"]["cache_read_input_tokens"] for r in decision_responses)
    # The conversation's breakpoint moves to the newest block: each later turn reads the last one from the cache.
    for r in decision_responses[1:]:
        u = r["usage"]
        prompt = u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"]
        assert u["cache_read_input_tokens"] >= 0.8 * prompt, u


# --- 3. bad orders from the model ------------------------------------------------------------------------
@pytest.fixture
def broker_orders(monkeypatch):
    """Every order request that reaches the paper exchange in this test."""
    from brokers.paper import PaperExchange

    seen = []
    original = PaperExchange.place_order

    async def place_order(self, request):
        seen.append(request)
        return await original(self, request)

    monkeypatch.setattr(PaperExchange, "place_order", place_order)
    return seen


def test_bad_orders_from_the_model_get_precise_errors_and_never_reach_the_broker(
        database_url, var_dir, fake_anthropic, planned, broker_orders, capsys):
    assert planned.board_lot >= 2
    odd_lot = planned.quantity + planned.board_lot // 2
    over_cap = planned.quantity * 3                                  # ~HKD 24,000 against the 10,000 cap
    stop_above = planned.ask + planned.tick * 2
    missing_stop = {k: v for k, v in planned.trade_input().items() if k != "stop_loss"}
    trader = ScriptedTrader([[
        call("scan_market", index="ALL", limit=5),
        call("get_quote", symbol=planned.symbol),
        calls(("execute_trade", planned.trade_input(symbol="HK.88888")),
              ("execute_trade", planned.trade_input(quantity=odd_lot)),
              ("execute_trade", planned.trade_input(quantity=over_cap)),
              ("execute_trade", planned.trade_input(stop_loss=str(stop_above))),
              ("execute_trade", missing_stop)),
        reply(text("All refused; passing.")),
    ]])
    fake_anthropic.script([trader] * 20)

    code = run_agent(database_url, var_dir, **claude_env(fake_anthropic))
    out = capsys.readouterr().out

    assert code == 0, out
    answers = tool_results(trader.decision_bodies[0][3])
    assert len(answers) == 5 and all(a["is_error"] for a in answers), answers
    unknown, odd, cap, stop, missing = (json.loads(a["content"])["error"] for a in answers)
    assert "unknown symbol(s) HK.88888" in unknown
    assert f"quantity {odd_lot} is not a multiple of the board lot {planned.board_lot}" in odd
    value = planned.ask * over_cap
    assert f"position value HKD {value:,.2f} is above the cap of HKD 10,000.00" in cap
    assert f"stop {stop_above} must be below the entry {planned.ask}" in stop
    assert json.loads(answers[4]["content"])["problems"] == ["stop_loss: required"]

    assert broker_orders == []
    assert query(database_url, "SELECT * FROM orders") == []
    assert query(database_url, "SELECT * FROM positions") == []
    [cycle, *_] = query(database_url, "SELECT * FROM cycles ORDER BY started_at")
    assert cycle["status"] == "completed" and cycle["trades_executed"] == 0


# --- 4. the daily LLM budget ----------------------------------------------------------------------------
def test_budget_smaller_than_one_call_stops_the_cycle_and_monitors_go_on_by_rules(
        database_url, var_dir, fake_anthropic, planned, capsys):
    # The first answer already buys, so a position is open when the budget stops the cycle.
    trader = ScriptedTrader([[call("execute_trade", **planned.trade_input())]])
    fake_anthropic.script([trader] * 20)

    code = run_agent(database_url, var_dir, **claude_env(fake_anthropic),
                     CATALYST__BUDGET__DAILY_USD="0.0001", CATALYST__SCHEDULE__CYCLE_TIMES='["09:30"]')
    out = capsys.readouterr().out

    assert code == 0, out
    assert len(fake_anthropic.requests) == 1, "no call may follow the one that used up the budget (no Haiku either)"
    [cycle] = query(database_url, "SELECT * FROM cycles")
    assert cycle["status"] == "budget_stopped" and cycle["iterations"] == 1 and cycle["trades_executed"] == 1
    assert cycle["cost_usd"] > Decimal("0.0001")
    budget = [m for m in messages(database_url) if m["event"] == "BUDGET"]
    assert budget and all(m["priority"] == "urgent" for m in budget)
    assert "daily budget of USD 0.0001" in budget[0]["body"]
    [position] = query(database_url, "SELECT * FROM positions")
    assert position["status"] == "closed" and position["exit_reason"]
    [monitor] = query(database_url, "SELECT * FROM monitor_status")
    assert monitor["checks_completed"] >= 1 and monitor["haiku_calls"] == 0
    assert {"EXIT", "MONITOR_ENDED"} <= set(events(database_url))


# --- 5. a dead API key, no credit left --------------------------------------------------------------------
@pytest.mark.parametrize("failure, shown", [
    (AUTH_ERROR, ("AuthenticationError (HTTP 401)", "invalid x-api-key")),
    (CREDIT_TOO_LOW, ("BadRequestError (HTTP 400)", "credit balance is too low")),   # founding incident #2
])
def test_authentication_or_credit_error_fails_the_run_with_an_urgent_message_and_no_order(
        database_url, var_dir, fake_anthropic, broker_orders, capsys, failure, shown):
    fake_anthropic.inject(failure)

    code = run_agent(database_url, var_dir, **claude_env(fake_anthropic))
    captured = capsys.readouterr()

    assert code == 1, captured.out
    assert "run failed" in captured.err and all(s in captured.err for s in shown), captured.err
    assert len(fake_anthropic.requests) == 1          # no retry, no second cycle
    failed = [m for m in messages(database_url) if m["event"] == "RUN_FAILED"]
    assert len(failed) == 1 and failed[0]["priority"] == "urgent"
    assert shown[1] in failed[0]["body"]
    [cycle] = query(database_url, "SELECT * FROM cycles")
    assert cycle["status"] == "failed" and shown[0] in cycle["error"]
    assert broker_orders == [] and query(database_url, "SELECT * FROM orders") == []


# --- 6. two runs at once -----------------------------------------------------------------------------------
LOCK_MESSAGE = f"another Catalyst run for {DEMO} is in progress"


def test_two_runs_started_together_only_one_trades(database_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CATALYST", "DATABASE_URL", "RESEARCH_"))}
    procs = []
    for n in (1, 2):
        var = tmp_path / f"var{n}"
        var.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, str(PROJECT / "agent.py"), "--force"], cwd=PROJECT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**env, **NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(var),
                 "CATALYST_LOG_DIR": str(tmp_path / f"logs{n}")},
        ))
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]

    assert [code for code, _, _ in results] == [0, 0], results
    refused = [out for _, out, _ in results if LOCK_MESSAGE in out]
    traded = [out for _, out, _ in results if LOCK_MESSAGE not in out]
    assert len(refused) == 1 and len(traded) == 1, "exactly one run may trade; the other must say the lock is held"
    assert "ENTRY" not in refused[0] and "cycle" not in refused[0]
    entries = [line for line in traded[0].splitlines() if line.strip().startswith("ENTRY ")]
    assert entries

    cycles = query(database_url, "SELECT cycle_id FROM cycles")
    orders = query(database_url, "SELECT client_order_id, cycle_id, purpose FROM orders")
    positions = query(database_url, "SELECT * FROM positions")
    assert len(cycles) == len([line for line in traded[0].splitlines() if line.startswith("cycle ")])
    assert len({o["client_order_id"] for o in orders}) == len(orders)
    assert len([o for o in orders if o["purpose"] == "entry"]) == len(positions) == len(entries)
    assert {o["cycle_id"] for o in orders if o["purpose"] == "entry"} <= {c["cycle_id"] for c in cycles}


# --- 7. a crash between placing an order and recording it --------------------------------------------------
class Crash(BaseException):
    """The process dies here (nothing in the agent may catch it)."""


def test_crash_after_placing_an_order_is_reconciled_by_the_next_run(database_url, var_dir, monkeypatch, capsys):
    from brokers.base import OrderPurpose
    from brokers.paper import PaperExchange
    from core.clock import SimClock
    from data.calendar import MarketCalendar
    from runner.run import _run
    from runner.sessions import sample_feed
    from store.trading import TradingStore

    env = {"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(var_dir)}
    settings = agent.load_settings(agent.parse_args(["--force"]), env)
    calendar = MarketCalendar(settings.profile.market)
    feed = sample_feed(settings.profile, calendar)
    session = feed.sessions[-1]
    clock = SimClock(session.open)
    exchange = PaperExchange(feed.series, clock, calendar, settings.profile)   # the broker outlives both runs

    record_order = TradingStore.record_order

    async def crash_after_place(self, order, **kwargs):
        if order.purpose is OrderPurpose.ENTRY:
            raise Crash(f"killed after placing {order.client_order_id}")
        return await record_order(self, order, **kwargs)

    monkeypatch.setattr(TradingStore, "record_order", crash_after_place)
    with pytest.raises(Crash):
        clock.run(_run(agent.parse_args(["--force"]), settings, calendar, clock, exchange, feed.universe, False, session))
    monkeypatch.setattr(TradingStore, "record_order", record_order)

    [placed] = [o for o in clock.run(exchange.list_orders(open_only=False)) if o.purpose is OrderPurpose.ENTRY]
    assert placed.filled_quantity > 0
    [intent] = query(database_url, "SELECT * FROM orders")
    assert (intent["client_order_id"], intent["status"]) == (placed.client_order_id, "pending_submit")
    assert query(database_url, "SELECT * FROM positions") == []

    # The next run (a heartbeat: reconcile, adopt, monitor, no new entries) on the same broker.
    code = clock.run(_run(agent.parse_args(["--force", "--mode", "heartbeat"]), settings, calendar, clock, exchange,
                          feed.universe, False, session))
    out = capsys.readouterr().out

    assert code == 0, out
    broker_entries = [o for o in clock.run(exchange.list_orders(open_only=False)) if o.purpose is OrderPurpose.ENTRY]
    assert broker_entries == [placed], "the next run must not place the entry again"
    [row] = query(database_url, "SELECT * FROM orders WHERE client_order_id=$1", placed.client_order_id)
    assert (row["status"], row["filled_quantity"], row["avg_fill_price"], row["broker_order_id"]) == (
        "filled", placed.filled_quantity, placed.avg_fill_price, placed.broker_order_id)
    [position] = query(database_url, "SELECT * FROM positions")
    # Recovered as the crashed run's own entry: linked to its order and cycle, counted in today's entries.
    assert position["origin"] == "agent" and position["symbol"] == str(placed.symbol)
    assert position["entry_client_order_id"] == placed.client_order_id and position["cycle_id"] == intent["cycle_id"]
    assert row["position_id"] == position["position_id"]
    assert (position["quantity"], position["entry_price"]) == (placed.filled_quantity, placed.avg_fill_price)
    assert position["status"] == "closed"                                  # the adopted position was monitored out
    reconcile = [m for m in messages(database_url) if m["event"] == "RECONCILE"]
    assert any(m["data"].get("action") == "adopted" for m in reconcile), reconcile
    assert "reconcile:" in out and "orders confirmed" in out


def test_a_phantom_position_is_never_booked_at_price_zero(database_url, var_dir, capsys):
    """Open in the database, not held at the broker, no exit fill: marked reconciled_missing, not closed at 0."""
    from datetime import datetime, timezone

    from core.instruments import Market, PositionSide, parse_symbol
    from store.db import Database
    from store.trading import TradingStore

    async def phantom():
        db = await Database(database_url, "trading").connect()
        try:
            await db.migrate("trading")
            await db.migrate("research")
            store = TradingStore(db, DEMO, Market.HK)
            when = datetime(2022, 6, 14, 2, 0, tzinfo=timezone.utc)
            return await store.open_position(
                symbol=parse_symbol("9988"), side=PositionSide.LONG, quantity=100, entry_price=Decimal("104.5"),
                entry_time=when, trading_day=when.date(), stop_price=Decimal("101"), target_price=Decimal("110"))
        finally:
            await db.close()

    position = asyncio.run(phantom())
    code = run_agent(database_url, var_dir, "--mode", "heartbeat")
    out = capsys.readouterr().out

    assert code == 0, out
    assert "phantoms missing: HK.09988" in out
    [row] = query(database_url, "SELECT * FROM positions WHERE position_id=$1", position.position_id)
    assert row["status"] == "reconciled_missing" and row["exit_price"] is None and row["realized_pnl"] is None
    [told] = [m for m in messages(database_url) if m["event"] == "RECONCILE"]
    assert told["priority"] == "high" and "not booked at any price" in told["body"]
