"""`agent.py --mode status`: what a trader reads about today, and its exit code.

The day is written by the real store into the embedded PostgreSQL (a position watched, a trade
closed, an LLM call, two cycles, a halt), then ``agent.main`` shows it at a moment of the HK
session on the simulated clock.
"""
from __future__ import annotations

import asyncio
import json
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import agent
from core.clock import SimClock
from data.calendar import MarketCalendar
from core.instruments import Market, PositionSide, Symbol
from runner.run import EXIT_FAILED
from store.db import Database
from store.trading import TradingStore
from tests.fakes import free_port

AGENT = "intl_claude"
DAY = date(2026, 11, 23)  # a Monday
HK = MarketCalendar(Market.HK)
TENCENT, ALIBABA = Symbol(Market.HK, "00700"), Symbol(Market.HK, "09988")


def at(hh: int, mm: int, day: date = DAY) -> datetime:
    return HK.at_local(day, time(hh, mm))


def a_day_of_trading(database_url: str) -> None:
    """09:45 bought 00700 (watched since), 10:30 09988 bought at 09:35 closed +HKD 380, one Sonnet call,
    two cycles, and a halt from Big Bro at 11:00."""
    async def write():
        db = await Database(database_url, "trading").connect()
        try:
            await db.migrate("trading")
            await db.migrate("research")
            store = TradingStore(db, AGENT, Market.HK)
            for cycle, started, trades in (("c-0935", at(9, 35), 1), ("c-0945", at(9, 45), 1)):
                await store.start_cycle(cycle, "trade", "rules", started)
                await store.finish_cycle(cycle, status="completed", completed_at=started + timedelta(minutes=2),
                                         phases={}, tools_called=[], iterations=1, tokens={}, cost_usd=Decimal("0.0123"),
                                         trades_executed=trades, decisions_made=1, summary=None)
            baba = await store.open_position(
                symbol=ALIBABA, side=PositionSide.LONG, quantity=200, entry_price=Decimal("80.00"),
                entry_time=at(9, 35), trading_day=DAY, stop_price=Decimal("78.00"), target_price=Decimal("84.00"),
                cycle_id="c-0935")
            await store.close_position(baba.position_id, exit_price=Decimal("82.00"), exit_time=at(10, 30),
                                       exit_reason="take_profit", exit_type="agent", exit_fees=Decimal("20"))
            tencent = await store.open_position(
                symbol=TENCENT, side=PositionSide.LONG, quantity=100, entry_price=Decimal("380.2"),
                entry_time=at(9, 45), trading_day=DAY, stop_price=Decimal("370"), target_price=Decimal("400"),
                cycle_id="c-0945")
            assert await store.claim_monitor(tencent.position_id, TENCENT, "intl_claude@run-1", at(9, 46), 120)
            await store.record_check(tencent.position_id, owner="intl_claude@run-1", now=at(11, 2), lease_seconds=120,
                                     last_price=Decimal("383.4"), pnl_pct=Decimal("0.84"), high_watermark=None,
                                     signals=[], decision="hold", haiku_calls=0, haiku_cost_usd=Decimal(0))
            await store.record_usage(trading_day=DAY, at=at(9, 36), purpose="decision", model="claude-sonnet-4-6",
                                     input_tokens=1000, output_tokens=100, cache_write_tokens=0, cache_read_tokens=0,
                                     cost_usd=Decimal("0.0450"))
            await store.ensure_risk_day(DAY, Decimal("1000000"))
            await store.set_halt(DAY, True, "halted by big_bro: stand down", at(11, 0))
        finally:
            await db.close()

    asyncio.run(write())


def status(database_url, tmp_path, capsys, when: datetime, *argv: str) -> tuple[int, str, str]:
    code = agent.main(["--mode", "status", *argv], clock=SimClock(when), env={
        "DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var"),
        "CATALYST_LOG_DIR": str(tmp_path / "logs")})
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_days_positions_trades_spend_cycles_and_halt_in_plain_words(database_url, tmp_path, capsys, restore_logging):
    a_day_of_trading(database_url)
    code, out, err = status(database_url, tmp_path, capsys, at(11, 3))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Catalyst intl_claude — HK (paper)"
    # 57 minutes to 12:00, then 13:00-16:00
    assert lines[1] == ("Market: 2026-11-23 11:03 HKT — open, 237 trading minutes to the close, 57 to the lunch break; "
                        "next open Mon 2026-11-23 13:00 HKT")
    assert lines[2] == "Open positions:"
    assert lines[3] == "  HK.00700 long 100 @ 380.2 stop 370 target 400 backstop none; monitor running (last 383.4, hold)"
    # 200 x (82 - 80) - 20 of fees; the halt said with its reason
    assert lines[4] == ("Today (2026-11-23): realized P&L HKD 380.00 over 1 closed trade(s); entries 2 of "
                        f"{_max_entries(database_url, tmp_path)}; HALTED: halted by big_bro: stand down")
    assert lines[5] == "LLM spend today: USD 0.0450 of 5.00"
    assert lines[6:9] == ["Recent cycles:", "  c-0945 completed (rules) trades 1 cost USD 0.0123",
                          "  c-0935 completed (rules) trades 1 cost USD 0.0123"]
    assert "Database: " in lines[9]
    # no broker configured: the trader is told where the sample sessions' records are
    assert lines[10].startswith("(no broker configured: the sample sessions of `make run` / `--force` are recorded "
                                "under agent id intl_claude-demo")


def test_json_says_the_same_for_programs(database_url, tmp_path, capsys, restore_logging):
    a_day_of_trading(database_url)
    code, out, err = status(database_url, tmp_path, capsys, at(12, 15), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["session"]["state"] == "lunch" and shown["session"]["next_open"] == at(13, 0).isoformat()
    [position] = shown["positions"]
    assert (position["symbol"], position["quantity"], position["entry_price"]) == ("HK.00700", 100, "380.2")
    # the monitor last renewed its lease at 11:02 for 120 s: at 12:15 its run is gone
    assert position["monitor"]["status"] == "dead"
    assert shown["today"] | {"max_entries": None} == {
        "realized_pnl": "380.0000", "currency": "HKD", "entries": 2, "max_entries": None, "closed_trades": 1,
        "halted": True, "halt_reason": "halted by big_bro: stand down"}
    assert shown["llm"]["spend_usd"] == "0.0450" and not shown["empty"]
    assert [c["cycle_id"] for c in shown["cycles"]] == ["c-0945", "c-0935"]


def test_the_next_day_starts_empty_and_a_day_without_session_says_so(database_url, tmp_path, capsys, restore_logging):
    a_day_of_trading(database_url)
    code, out, _ = status(database_url, tmp_path, capsys, HK.at_local(date(2026, 11, 29), time(10, 0)))  # Sunday
    assert code == 0
    assert "— closed (no session today); next open Mon 2026-11-30 09:30 HKT" in out.splitlines()[1]
    assert "Today (2026-11-29): realized P&L HKD 0.00 over 0 closed trade(s); entries 0 of" in out
    assert "HALTED" not in out, "a halt lasts its trading day"
    assert "  HK.00700 long 100 @ 380.2" in out, "an open position is shown whatever the day"


def test_an_empty_database_says_nothing_is_recorded_yet(database_url, tmp_path, capsys, restore_logging):
    code, out, _ = status(database_url, tmp_path, capsys, at(10, 0))
    assert code == 0
    assert "Nothing recorded yet: no positions, no trades, no cycles. `make run` trades a sample session." in out
    assert "Open positions: none" in out and "Recent cycles: none" in out


def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path, capsys, restore_logging):
    port = free_port()
    code, out, err = status(f"postgresql://catalyst:hunter2@127.0.0.1:{port}/trading", tmp_path, capsys, at(10, 0))
    assert code == EXIT_FAILED == 1
    assert out == ""
    assert err.strip().splitlines() == [
        f"status failed: cannot connect to the trading database at 127.0.0.1:{port}/trading: ConnectionRefusedError"]
    assert "hunter2" not in err


def _max_entries(database_url, tmp_path) -> int:
    args = agent.parse_args(["--mode", "status"])
    env = agent.read_environment({"DATABASE_URL": database_url, "CATALYST_VAR_DIR": str(tmp_path / "var")})
    return agent.load_settings(args, env).profile.risk.max_entries_per_day
