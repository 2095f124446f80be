"""The original system's failures (docs/original-failures.md) that no other test proved directly.

Each test names the item it proves. Real parts only: the embedded PostgreSQL, the paper exchange
replaying the bundled sample HKEX session (or hand-built bars), the real Moomoo adapter against the
fake OpenD, the real anthropic SDK against the fake Messages API, a real HTTP server for the
webhook. Where a broker must misbehave on demand (accept a sell and never fill it, send bars that
cannot be read) the paper exchange is given that behaviour, as the other suites do.
"""
from __future__ import annotations

import dataclasses
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import pandas as pd
import pytest

import agent
from brokers.base import BAR_COLUMNS, Order, OrderPurpose, OrderRequest, OrderType, RateLimited
from brokers.paper import PaperExchange
from core.clock import SimClock
from config.settings import ENV_VARS, Levels, Profile, SignalThresholds, load_profile, profile_path
from data.calendar import MarketCalendar
from core.instruments import (
    Market, OrderSide, PositionSide, Rounding, Symbol, parse_symbol, round_to_tick, size_by_lot,
)
from position_monitor import MonitorManager
from core.risk import DailyLossAction, EntryProposal, RiskState, check_risk, daily_loss_action
from signals import (
    ExitAction, ExitReason, PositionView, SignalName, Strength, decide, evaluate, technical_signals,
)
from store.trading import TradingStore
from tests.broker_harness import local, moomoo_env, run_agent, seed_lots_bought_at_0945, series_of
from tests.broker_harness import messages as broker_messages
from tests.broker_harness import query
from tests.fakes.fake_anthropic import CREDIT_TOO_LOW
from tests.fakes.fake_opend import SIMULATE_ACC
from tests.monitor_harness import CALENDAR, Harness, hk_profile as monitor_profile, hk_series, hkt
from tests.tool_harness import Tools, _feed, first_cycle, hk_profile, run_tools
from tool_executor import tool_schemas

HK = Market.HK
D = Decimal
NO_SECRETS = {var: "" for var in ENV_VARS}
MONDAY = date(2026, 11, 23)                 # an ordinary HKEX day: 09:30-12:00, 13:00-16:00
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
ALIBABA, SYNTH = parse_symbol("9988"), parse_symbol("99915")


def events(url: str, kind: str) -> list[dict]:
    return [m for m in broker_messages(url) if m["event"] == kind]


def _run_at(start: datetime, scenario):
    """Run ``scenario(clock)`` on a simulated clock starting at ``start``."""
    clock = SimClock(start)
    return clock.run(scenario(clock))


# --- 1, 2, 3. Quantity drift is corrected in place, symbols compare in one form, no cascade ----------------
def test_a_second_fill_the_database_missed_is_corrected_in_place_and_the_next_run_changes_nothing(
        opend, database_url, tmp_path):
    """Items 1, 2, 3: the database says 100 of 09988, the broker holds 200 (a second fill that was
    never recorded); the broker spells its codes '09988'/'99915', the database 'HK.09988'/'HK.99915'.
    The original closed and re-created rows every cycle (100 -> 600 over 16 rows in a day)."""
    clock = SimClock(local("hk", "12:10"))                     # the lunch break: reconcile only, nothing watched
    opend.serve_market(series_of("hk", ALIBABA, SYNTH), now=clock.peek)
    baba, synth = seed_lots_bought_at_0945(database_url, ALIBABA, SYNTH).values()
    assert baba.lot == 100
    opend.seed_position("09988", 200, float(baba.entry))       # the broker holds twice what was recorded
    opend.seed_position("99915", synth.lot, float(synth.entry))  # the same as recorded
    env = moomoo_env(opend, database_url, tmp_path, [ALIBABA, SYNTH])

    first = run_agent(["--force", "--mode", "heartbeat"], env, clock)
    second = run_agent(["--force", "--mode", "heartbeat"], env, clock)

    assert first.code == 0 and second.code == 0, first.out + first.err + second.out + second.err
    assert "reconcile: quantity fixed: HK.09988 100->200" in first.out, first.out
    assert "phantoms" not in first.out and "adopted" not in first.out, "same symbol in two spellings is one position"
    assert "reconcile:" not in second.out, f"the second run found something to change again: {second.out}"
    rows = query(database_url, "SELECT position_id, symbol, quantity, status FROM positions ORDER BY position_id")
    assert rows == [
        {"position_id": baba.position_id, "symbol": "HK.09988", "quantity": 200, "status": "open"},
        {"position_id": synth.position_id, "symbol": "HK.99915", "quantity": synth.lot, "status": "open"},
    ], "corrected in place: no row closed, no row added"
    [told] = events(database_url, "RECONCILE")
    assert told["data"]["action"] == "quantity_corrected" and (told["data"]["from"], told["data"]["to"]) == (100, 200)
    assert told["priority"] == "high"
    assert opend.accounts[SIMULATE_ACC].orders == {}, "reconciling never trades"


# --- 1, 5. An entry that does not fill is not a position ----------------------------------------------------
def test_an_entry_that_never_fills_is_cancelled_at_the_timeout_and_opens_no_position(database_url, tmp_path):
    """Item 1: the original recorded orders that never filled as positions (phantoms)."""
    async def scenario(t: Tools):
        snaps = await t.exchange.snapshots(t.market.scan_list("ALL"))
        symbol, snap = next((s, v) for s, v in sorted(snaps.items())
                            if D(3000) < v.quote.ask * v.lot_size <= D(5000))
        day = t.calendar.trading_day(t.clock.now())
        limit = round_to_tick(HK, snap.quote.price * D("0.975"), day, Rounding.DOWN)    # 2.5% under the market
        stop = round_to_tick(HK, limit * D("0.98"), day, Rounding.UP)
        target = round_to_tick(HK, limit + (limit - stop) * 3, day, Rounding.UP)
        started = t.clock.now()
        result = await t.ok("execute_trade", {
            "symbol": str(symbol), "side": "buy", "quantity": snap.lot_size, "order_type": "limit",
            "limit_price": str(limit), "stop_loss": str(stop), "take_profit": str(target), "tier": 2,
            "reason": "buy the dip"})
        return (result, t.clock.now() - started, await t.rows("SELECT * FROM orders"),
                await t.rows("SELECT * FROM positions"), await t.exchange.positions(), t.monitors.active(),
                await t.exchange.list_orders(open_only=True))

    result, waited, orders, positions, held, watched, resting = run_tools(database_url, tmp_path, scenario)
    assert result["status"] == "not_filled" and result["filled_quantity"] == 0, result
    assert "no fill within 30 s; the order was cancelled" in result["reason"]
    assert waited >= timedelta(seconds=30), "waited the paper fill timeout, not a 5-second poll"
    [order] = orders
    assert (order["status"], order["filled_quantity"], order["position_id"]) == ("cancelled", 0, None)
    assert positions == [] and held == [] and watched == [] and resting == []


# --- 4. Sides: only the two vocabularies, each in its own table; a short books a short's P&L -----------------
async def test_side_strings_outside_the_vocabulary_are_refused_by_the_tables_and_a_short_books_a_shorts_pnl(
        trading_db):
    store = TradingStore(trading_db, "intl_claude", HK)
    insert_position = """INSERT INTO positions (agent_id, market, symbol, side, quantity, entry_price, entry_time,
                             trading_day) VALUES ('intl_claude', 'HK', 'HK.00700', $1, 100, 380, $2, $3)"""
    for wrong in ("BUY", "buy", "LONG", "sell"):
        with pytest.raises(asyncpg.CheckViolationError):
            await trading_db.execute(insert_position, wrong, T0, MONDAY)
    insert_order = """INSERT INTO orders (agent_id, client_order_id, symbol, side, order_type, purpose, quantity, status,
                          trading_day, submitted_at, updated_at)
                      VALUES ('intl_claude', $1, 'HK.00700', $2, 'market', 'exit', 100, 'submitted', $3, $4, $4)"""
    for n, wrong in enumerate(("SELL", "long", "short")):
        with pytest.raises(asyncpg.CheckViolationError):
            await trading_db.execute(insert_order, f"x-{n}", wrong, MONDAY, T0)

    assert PositionSide.LONG.exit_side is OrderSide.SELL and PositionSide.SHORT.exit_side is OrderSide.BUY

    short = await store.open_position(symbol=parse_symbol("700"), side=PositionSide.SHORT, quantity=100,
                                      entry_price=D("380"), entry_time=T0, trading_day=MONDAY,
                                      stop_price=D("390"), target_price=D("360"))
    with pytest.raises(ValueError, match="exit price 0"):
        await store.close_position(short.position_id, exit_price=D(0), exit_time=T0, exit_reason="phantom",
                                   exit_type="reconcile", exit_fees=D(0))
    with pytest.raises(asyncpg.CheckViolationError):
        await trading_db.execute("UPDATE positions SET status='closed', exit_price=0, exit_time=$2 WHERE position_id=$1",
                                 short.position_id, T0)
    closed = await store.close_position(short.position_id, exit_price=D("370"), exit_time=T0,
                                        exit_reason="take_profit", exit_type="rule", exit_fees=D("10"))
    assert closed.realized_pnl == D("990.0000"), "a short that fell 10 made (380 - 370) x 100 - 10"
    long_ = await store.open_position(symbol=parse_symbol("700"), side=PositionSide.LONG, quantity=100,
                                      entry_price=D("380"), entry_time=T0, trading_day=MONDAY,
                                      stop_price=D("370"), target_price=D("400"))
    closed = await store.close_position(long_.position_id, exit_price=D("370"), exit_time=T0,
                                        exit_reason="stop_loss", exit_type="rule", exit_fees=D("10"))
    assert closed.realized_pnl == D("-1010.0000")


# --- 6. A sell the broker accepted but never filled is not a close ------------------------------------------
class ExitsRestUnfilled(PaperExchange):
    """A broker that accepts exit sells but, while ``stuck``, nothing trades at their price (as a
    sell resting above the market): the order stays SUBMITTED until it is cancelled."""

    stuck = True

    async def place_order(self, request: OrderRequest) -> Order:
        if self.stuck and request.purpose is OrderPurpose.EXIT:
            request = dataclasses.replace(request, order_type=OrderType.LIMIT, limit_price=D("120.00"))
        return await super().place_order(request)


def test_an_exit_the_broker_accepts_but_never_fills_is_not_booked_and_the_monitor_sells_later(database_url, tmp_path):
    """Item 6: the original treated SUBMITTED as filled and closed the database row."""
    series = hk_series("08041", MONDAY, levels=[("09:30", 80.0)])
    seen: dict = {}

    async def scenario(clock):
        profile = monitor_profile()
        exchange = ExitsRestUnfilled({series.symbol: series}, clock, CALENDAR, profile)
        h = await Harness.start(database_url, clock, {series.symbol: series}, tmp_path / "outbox.jsonl",
                                profile=profile, exchange=exchange)
        manager = MonitorManager(h.ctx)
        try:
            position = await h.open_position(series.symbol, 100, stop=D("76.00"))
            h.exchange.start(hkt(MONDAY, "11:00"))
            assert manager.start(position)
            await clock.sleep_until(hkt(MONDAY, "10:20"))
            answer = await manager.close_now(position, ExitReason.MANUAL, "close_position: thesis broken")
            seen["answer"] = answer.closed
            seen["row"] = await h.store.position(position.position_id)
            seen["held"] = await h.held(series.symbol)
            seen["resting"] = [o for o in await h.exchange.list_orders(open_only=True) if o.side is OrderSide.SELL]
            seen["exit_rows"] = await h.db.fetch("SELECT status, filled_quantity FROM orders WHERE purpose='exit'")
            seen["at"] = clock.now()
            exchange.stuck = False                                 # the market trades again
            await clock.sleep_until(hkt(MONDAY, "10:40"))
            return (await h.store.position(position.position_id), await h.sells(series.symbol),
                    await h.held(series.symbol), manager.active())
        finally:
            await manager.cancel()
            await h.close()

    booked, sells, held, watching = _run_at(hkt(MONDAY, "10:00"), scenario)

    assert seen["answer"] is False, "close_position must not report a close without a fill"
    row = seen["row"]
    assert (row.status, row.quantity, row.exit_price, row.realized_pnl) == ("open", 100, None, None)
    assert seen["held"] == 100 and seen["resting"] == [], "still held, and no forgotten sell left at the broker"
    assert seen["exit_rows"] and all((r["status"], r["filled_quantity"]) == ("cancelled", 0) for r in seen["exit_rows"])
    assert seen["at"] - hkt(MONDAY, "10:20") >= timedelta(seconds=30), "it waited for a fill before giving up"
    assert len(sells) == 1 and held == 0 and watching == []
    assert sells[0].time > seen["at"]
    assert (booked.status, booked.exit_reason, booked.exit_price) == ("closed", ExitReason.MANUAL.value, sells[0].price)


# --- 9. The real board lot, never assumed to be 100 ----------------------------------------------------------
def test_a_board_lot_of_50_is_sized_and_approved_as_50_shares():
    """Item 9: the original's check assumed a lot of 100 and would refuse a 50-share lot (as 9618)."""
    profile = Profile(market=HK, agent_id="intl_claude")
    state = RiskState(equity=D(1_000_000), cash=D(1_000_000), open_symbols=frozenset(), entries_today=0,
                      realized_pnl_today=D(0), unrealized_pnl=D(0), start_of_day_equity=D(1_000_000),
                      minutes_to_close=300.0, minutes_to_break=120.0)
    sizing = size_by_lot(D("10000"), D("130.0"), 50, "HKD")
    assert (sizing.quantity, sizing.lots) == (50, 1)                    # 50 x 130 = 6,500: one lot fits, two do not
    proposal = EntryProposal(parse_symbol("9618"), OrderSide.BUY, 50, D("130.0"), D("127.4"), D("134.0"), 2, 50)
    verdict = check_risk(proposal, state, profile)
    assert verdict.approved, verdict.reasons
    assert verdict.suggested_quantity == 50
    odd = check_risk(dataclasses.replace(proposal, quantity=75), state, profile)
    assert "quantity 75 is not a multiple of the board lot 50" in "; ".join(odd.reasons)


# --- 11. One source for every limit: the prompt, the tools and the checks agree ---------------------------
def test_the_prompt_and_the_checks_state_the_same_limits_and_tool_texts_state_none_of_their_own():
    """Item 11: the original's prompt said 2% and 5%, a tool text said "max 5 positions, 20%, 2:1"
    while the code enforced 15 / 20% / 1.2."""
    from runner.brains import render_system_prompt

    profile = load_profile(profile_path("hk"), {
        "CATALYST__RISK__MAX_POSITIONS": "3", "CATALYST__RISK__MAX_POSITION_VALUE": "8000",
        "CATALYST__RISK__DAILY_LOSS_HALT_PCT": "3", "CATALYST__RISK__MAX_ENTRIES_PER_DAY": "7"})
    prompt = " ".join(render_system_prompt(profile).split())      # as one line: the template wraps
    assert "at most 3 open positions" in prompt and "HKD 8,000" in prompt
    assert "A daily loss of 3% halts" in prompt and "at most 7 entries a day" in prompt

    state = RiskState(equity=D(1_000_000), cash=D(1_000_000),
                      open_symbols=frozenset(Symbol(HK, f"{9000 + i:05d}") for i in range(3)), entries_today=7,
                      realized_pnl_today=D(0), unrealized_pnl=D(0), start_of_day_equity=D(1_000_000),
                      minutes_to_close=300.0, minutes_to_break=120.0)
    over = EntryProposal(parse_symbol("700"), OrderSide.BUY, 100, D("80.05"), D("78.45"), D("83.25"), 2, 100)
    reasons = "; ".join(check_risk(over, state, profile).reasons)
    assert "3 positions open: the maximum is 3" in reasons
    assert "7 entries today: the maximum is 7" in reasons
    assert "above the cap of HKD 8,000.00" in reasons
    lost = dataclasses.replace(state, open_symbols=frozenset(), entries_today=0)
    assert daily_loss_action(dataclasses.replace(lost, realized_pnl_today=D(-29_999)), profile) is DailyLossAction.WARN
    assert daily_loss_action(dataclasses.replace(lost, realized_pnl_today=D(-30_000)), profile) is DailyLossAction.HALT

    limit_like = re.compile(r"\d\s*%|\d\s*:\s*\d|\b(?:max|maximum|at most|up to|limit)\s+\d|(?:HKD|USD|\$)\s*\d"
                            r"|\d+\s+(?:positions|entries|trades)", re.IGNORECASE)
    for schema in tool_schemas():
        texts = [schema["description"]] + [p.get("description", "") for p in schema["input_schema"]["properties"].values()]
        for text in texts:
            assert not limit_like.search(text), f"{schema['name']} states a limit of its own: {text!r}"


# --- 12. The exit signals get every input they read, from real bars ----------------------------------------
def test_every_technical_exit_signal_gets_its_input_from_real_bars_and_can_fire(database_url, tmp_path):
    """Item 12: the original's monitor read keys (macd_histogram, vwap, ema20) that its technicals
    never produced, so only the P&L, RSI and time signals could ever fire."""
    profile = hk_profile()
    at = first_cycle(profile) + timedelta(minutes=45)              # 10:30 HKT on the sample session

    async def scenario(t: Tools):
        position = await t.store.open_position(
            symbol=ALIBABA, side=PositionSide.LONG, quantity=100, entry_price=D("105"), entry_time=t.clock.now(),
            trading_day=t.calendar.trading_day(t.clock.now()), stop_price=D("100"), target_price=D("112"))
        return await t.market.exit_technicals(position), t.clock.now(), t.calendar.session_at(t.clock.now())

    tech, now, session = run_tools(database_url, tmp_path, scenario, at=at, profile=profile)
    assert tech is not None
    for field in dataclasses.fields(tech):
        assert getattr(tech, field.name) is not None, f"exit technicals lack {field.name}: {tech}"
    assert 0 < tech.rsi < 100 and tech.vwap > 0 and tech.ema9 > 0 and tech.volume_rate > 0

    below_both = D(str(min(tech.vwap, tech.ema9))) * D("0.97")
    view = PositionView(symbol=str(ALIBABA), side=PositionSide.LONG, quantity=100, entry_price=below_both,
                        entry_time=now - timedelta(minutes=5), stop_price=None, target_price=None,
                        high_watermark=below_both, entry_volume_rate=tech.volume_rate * 10)
    spec_levels = SignalThresholds()  # the SPEC's: the HK profile switches some exits off (docs/exit-quality.md)
    fired = {s.name: s.strength for s in technical_signals(view, below_both, tech, spec_levels)}
    assert fired[SignalName.BELOW_VWAP] is Strength.MODERATE and fired[SignalName.BELOW_EMA9] is Strength.MODERATE
    assert fired[SignalName.VOLUME_DYING] is Strength.STRONG
    assert SignalName.BELOW_VWAP in {s.name for s in evaluate(view, below_both, now, session, tech, spec_levels)}


# --- 12. The Haiku cap belongs to each position, not to the process ----------------------------------------
def test_each_position_has_its_own_ten_consults_in_one_long_running_process(database_url, tmp_path, fake_anthropic):
    """Item 12: the original's monitor service counted its Haiku cap of 5 over its whole life, so the
    positions of the afternoon had none left."""
    from anthropic import AsyncAnthropic

    from engine.exit_advisor import HaikuAdvisor
    from tests.fakes.fake_anthropic import forced

    fake_anthropic.script([forced({"decision": "HOLD", "reason": "wait", "confidence": 0.5})] * 30)
    profile = monitor_profile(check_interval_seconds=60, haiku_min_interval_minutes=0)
    # Bought at 80.05 on the 10:00 tick, 78.30 after: -2.19%, stop_loss MODERATE at every check.
    series = {s.symbol: s for s in (
        hk_series(code, MONDAY, levels=[("09:30", 78.3)], bars={"10:00": (80.0, 80.0, 78.3, 78.3)})
        for code in ("08042", "08043"))}

    async def scenario(clock):
        client = AsyncAnthropic(base_url=fake_anthropic.base_url, api_key=fake_anthropic.api_key, max_retries=0)
        advisor = HaikuAdvisor(client, profile.models.consult, 10.0)
        h = await Harness.start(database_url, clock, series, tmp_path / "outbox.jsonl", profile=profile, advisor=advisor)
        manager = MonitorManager(h.ctx)
        try:
            positions = [await h.open_position(symbol, 100, stop=D("76.00")) for symbol in series]
            h.exchange.start(hkt(MONDAY, "10:40"))
            for position in positions:
                assert manager.start(position)
            await clock.sleep_until(hkt(MONDAY, "10:40"))
            return {r["symbol"]: r["haiku_calls"] for r in await h.store.monitor_rows()}
        finally:
            await manager.cancel()
            await client.close()
            await h.close()

    calls = _run_at(hkt(MONDAY, "10:00"), scenario)
    assert calls == {"HK.08042": 10, "HK.08043": 10}
    assert len(fake_anthropic.requests) == 20

# --- 13. Flattening before the close is a profile setting, not a clock literal --------------------------------
def test_the_end_of_day_exit_follows_the_profile_and_never_fires_after_the_close():
    """Item 13: the original's "near_close" was STRONG from 15:50 until midnight, hard-coded."""
    calendar = MarketCalendar(HK)
    session = calendar.session(MONDAY)
    view = PositionView(symbol="HK.00700", side=PositionSide.LONG, quantity=100, entry_price=D("100"),
                        entry_time=hkt(MONDAY, "14:00"), stop_price=D("95"), target_price=D("110"),
                        high_watermark=D("103"))
    profit = D("103")                                              # +3%: a winning position
    default = SignalThresholds()
    at_1555 = hkt(MONDAY, "15:55")
    assert decide(evaluate(view, profit, at_1555, session, None, default), default).action is ExitAction.EXIT
    no_flatten = SignalThresholds(market_close_minutes=Levels(moderate=30, weak=60))
    kept = decide(evaluate(view, profit, at_1555, session, None, no_flatten), no_flatten)
    assert kept.action is not ExitAction.EXIT, kept.reasons
    for evening in ("16:00", "16:30", "23:59"):
        now = hkt(MONDAY, evening)
        assert evaluate(view, profit, now, calendar.session_at(now), None, default) == []


# --- 14. Nothing is scheduled or sold when the market cannot trade --------------------------------------------
def test_cycles_at_the_lunch_break_or_the_close_never_run():
    """Item 14: the original scheduled close cycles at 12:00 and 16:00, after continuous trading ended."""
    from runner.run import is_cycle_time

    calendar = MarketCalendar(HK)
    profile = load_profile(profile_path("hk"), {"CATALYST__SCHEDULE__CYCLE_TIMES": '["09:30", "12:00", "13:00", "16:00"]'})
    runs = [hhmm for hhmm in ("09:30", "12:00", "13:00", "16:00")
            if is_cycle_time(profile, calendar, hkt(MONDAY, hhmm))]
    assert runs == ["09:30", "13:00"]
    assert not is_cycle_time(profile, calendar, hkt(date(2026, 12, 25), "09:30")), "Christmas Day is a holiday"


# --- 15. Bars the agent cannot read stop the run loudly --------------------------------------------------------
def test_bars_in_a_shape_the_agent_cannot_read_fail_the_run_loudly_and_out_of_band(
        database_url, tmp_path, monkeypatch, capsys, webhook_server):
    """Item 15 (the part that is guarded): the original's get_technicals died on KeyError 'date'
    inside every cycle while the cycles "passed" and the container said healthy, for three days."""
    url, received = webhook_server

    async def unreadable_bars(self, symbol, timeframe, start, end):
        raise KeyError("time_key")                     # what the adapter raises on a renamed K-line column

    monkeypatch.setattr(PaperExchange, "bars", unreadable_bars)
    code = agent.main(["--force"], env={**NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path),
                                        "CATALYST_LOG_DIR": str(tmp_path / "logs"), "ALERT_WEBHOOK_URL": url})
    captured = capsys.readouterr()

    assert code == 1, captured.out
    assert "run failed: KeyError: 'time_key'" in captured.err
    [failed] = events(database_url, "RUN_FAILED")
    assert failed["priority"] == "urgent" and "KeyError" in failed["body"]
    assert [(p["event"]["type"], p["event"]["priority"]) for _, p in received] == [("RUN_FAILED", "urgent")]
    [state] = query(database_url, "SELECT error_count_today, last_error FROM claude_state WHERE agent_id='intl_claude-demo'")
    assert state["error_count_today"] == 1 and "KeyError" in state["last_error"]
    assert query(database_url, "SELECT * FROM orders") == [] and query(database_url, "SELECT * FROM positions") == []
    [cycle] = query(database_url, "SELECT status, error, completed_at FROM cycles")
    assert cycle["status"] == "failed" and "KeyError: 'time_key'" in cycle["error"], "never left 'running'"
    assert cycle["completed_at"] is not None


async def _history_refused(self, symbol, timeframe, start, end):
    raise RateLimited("history K-line quota used up for this month; wait or raise the quota")


async def _history_empty(self, symbol, timeframe, start, end):
    return pd.DataFrame(columns=BAR_COLUMNS, index=pd.DatetimeIndex([], tz="UTC"), dtype=float)


@pytest.mark.parametrize("history, said", [
    (_history_refused, "(broker: history K-line quota used up for this month; wait or raise the quota)"),
    (_history_empty, "(no bars before this session)"),
], ids=["broker-refuses-history", "broker-returns-no-history"])
def test_a_broker_that_gives_no_history_fails_the_cycle_loudly_instead_of_a_quiet_no_candidate_day(
        database_url, tmp_path, monkeypatch, capsys, webhook_server, history, said):
    """Item 15 (the quiet half): the broker answers, but with an error or with no bars. The scan
    sees no volume, so nothing is a candidate: the original would have logged "no candidate", called
    the cycle completed and exited 0, day after day."""
    url, received = webhook_server
    monkeypatch.setattr(PaperExchange, "bars", history)
    code = agent.main(["--force"], env={**NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path),
                                        "CATALYST_LOG_DIR": str(tmp_path / "logs"), "ALERT_WEBHOOK_URL": url})
    captured = capsys.readouterr()

    assert code == 1, captured.out + captured.err
    assert "market data unavailable: scan_market: no price history for any of the 31 symbols of ALL " in captured.err
    assert said in captured.err
    [cycle] = query(database_url, "SELECT status, error FROM cycles")
    assert cycle["status"] == "failed" and said in cycle["error"]
    [event] = events(database_url, "DATA_UNAVAILABLE")
    assert event["priority"] == "urgent" and said in event["body"]
    assert ("DATA_UNAVAILABLE", "urgent") in [(p["event"]["type"], p["event"]["priority"]) for _, p in received]
    [state] = query(database_url, "SELECT error_count_today FROM claude_state WHERE agent_id='intl_claude-demo'")
    assert state["error_count_today"] >= 1
    assert query(database_url, "SELECT * FROM orders") == [], "nothing traded on data it could not see"


def test_one_symbol_whose_history_the_broker_refuses_leaves_the_others_ranked(database_url, tmp_path, monkeypatch):
    """Item 15, the other way round: one symbol's history failing is not an outage, and must not
    blind the scan of the thirty others."""
    served = PaperExchange.bars

    async def refuse_one(self, symbol, timeframe, start, end):
        if symbol == ALIBABA:
            raise RateLimited("history K-line quota used up for this month; wait or raise the quota")
        return await served(self, symbol, timeframe, start, end)

    monkeypatch.setattr(PaperExchange, "bars", refuse_one)

    async def scenario(t: Tools):
        scan = await t.ok("scan_market", {"limit": 20})
        return scan, t.market.without_history(t.market.scan_list("ALL")), t.ctx.data_outage()

    scan, blind, outage = run_tools(database_url, tmp_path, scenario)
    assert blind == {ALIBABA: "broker: history K-line quota used up for this month; wait or raise the quota"}
    ranked = [r["volume_ratio"] for r in scan["candidates"] if r["symbol"] != "HK.09988"]
    assert len(ranked) >= 19 and all(r is not None and r > 0 for r in ranked), "the thirty others are ranked"
    assert "warning" not in scan and outage is None


# --- 16. The volume ratio is today's volume against the usual volume by this minute --------------------------
def test_the_volume_ratio_is_todays_volume_over_the_average_volume_by_the_same_minute(database_url, tmp_path):
    """Item 16: the original divided the volume by half of itself, so every stock showed about 2.0."""
    profile = hk_profile()
    feed_, calendar = _feed(profile)
    at = first_cycle(profile)                                       # 09:45 HKT, 15 minutes into the session
    session = calendar.session_at(at)
    minute = int(session.minutes_since_open(at))

    async def scenario(t: Tools):
        views = await t.market.quotes(t.market.scan_list("ALL"))
        return {s: (v.volume, v.volume_ratio) for s, v in views.items()}

    seen = run_tools(database_url, tmp_path, scenario, at=at, profile=profile)

    # By hand from the raw minute bars: the volume traded in the first `minute` minutes of each of the
    # last 20 complete sessions, averaged.
    bars = feed_.series[ALIBABA].minute
    usual = []
    for past in calendar.previous_sessions(session.day, profile.scan.volume_lookback_sessions):
        day = bars[(bars.index >= past.open) & (bars.index < past.close)]
        if len(day) == past.trading_minutes == session.trading_minutes:
            usual.append(float(day["volume"].iloc[:minute].sum()))
    assert len(usual) >= 10
    volume, ratio = seen[ALIBABA]
    assert ratio == pytest.approx(volume / (sum(usual) / len(usual)), rel=1e-9)

    ratios = sorted(r for _, r in seen.values())
    assert all(r is not None for r in ratios)
    near_two = [r for r in ratios if abs(r - 2.0) < 0.1]
    assert len(near_two) <= len(ratios) // 4, f"ratios cluster at 2.0 again: {ratios}"
    assert ratios[0] < 1.0 < ratios[-1], "quiet and busy stocks are told apart"


# --- 17. The scan honours what it is asked -------------------------------------------------------------------
def test_scan_market_honours_max_price_and_min_volume_ratio(database_url, tmp_path):
    """Item 17: the original's executor passed max_price to a scan_market that did not accept it, and
    other tool inputs were silently ignored."""
    async def scenario(t: Tools):
        everything = await t.ok("scan_market", {"limit": 20})
        prices = sorted(D(r["price"]) for r in everything["candidates"])
        cut = prices[len(prices) // 2]
        cheap = await t.ok("scan_market", {"limit": 20, "max_price": str(cut)})
        busy = await t.ok("scan_market", {"limit": 20, "min_volume_ratio": 1.2})
        return everything, cut, cheap, busy

    everything, cut, cheap, busy = run_tools(database_url, tmp_path, scenario)
    assert any(D(r["price"]) > cut for r in everything["candidates"])
    assert cheap["candidates"] and all(D(r["price"]) <= cut for r in cheap["candidates"])
    assert any(r["volume_ratio"] < 1.2 for r in everything["candidates"])
    assert busy["candidates"] and all(r["volume_ratio"] >= 1.2 for r in busy["candidates"])


# --- 20. A decision is never stored without its cycle, and never silently lost --------------------------------
async def test_a_decision_for_a_cycle_that_was_never_recorded_is_refused_not_lost(trading_db):
    """Item 20: the original's executor invented cycle ids without parent rows; every decision was
    dropped by the foreign key without a word, and reports showed no orders while trades happened."""
    store = TradingStore(trading_db, "intl_claude", HK)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await store.log_decision(cycle_id="mcp_1712730000", created_at=T0, decision="trade",
                                 reasoning="bought on a breakout", source="claude", symbol=parse_symbol("700"))
    await store.start_cycle("hk_20261123_100000_abc123", "trade", "claude", T0)
    decision_id = await store.log_decision(cycle_id="hk_20261123_100000_abc123", created_at=T0, decision="trade",
                                           reasoning="bought on a breakout", source="claude",
                                           symbol=parse_symbol("700"))
    assert [d["decision_id"] for d in await store.decisions("hk_20261123_100000_abc123")] == [decision_id]


# --- 21. No credit left: the trader hears it outside the database ------------------------------------------
def test_no_credit_left_fails_the_run_and_reaches_the_trader_by_webhook(
        database_url, tmp_path, fake_anthropic, webhook_server, capsys):
    """Item 21: with the credit exhausted the original failed every cycle for nine trading days with
    its alarms only in the database and the logs."""
    url, received = webhook_server
    fake_anthropic.inject(CREDIT_TOO_LOW)
    code = agent.main(["--force"], env={
        **NO_SECRETS, "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path),
        "CATALYST_LOG_DIR": str(tmp_path / "logs"), "ANTHROPIC_API_KEY": fake_anthropic.api_key,
        "ANTHROPIC_BASE_URL": fake_anthropic.base_url, "ALERT_WEBHOOK_URL": url})
    captured = capsys.readouterr()

    assert code == 1, captured.out
    assert "credit balance is too low" in captured.err
    assert len(fake_anthropic.requests) == 1, "no retry loop burning the same error"
    [(_, alert)] = received
    assert alert["event"]["type"] == "RUN_FAILED" and alert["event"]["priority"] == "urgent"
    assert "credit balance is too low" in alert["event"]["body"]
    assert query(database_url, "SELECT * FROM orders") == []

