"""The twelve tools as the model meets them, on the paper exchange's sample session at 09:45 HKT.

What a trader would check: a bad request is answered with what is wrong and nothing reaches the
broker; the board lot is never rounded up past the cap (the original bought a HKD 31,680 lot of
2328 under a HKD 10,000 cap); an entry is filled, recorded (order, position, decision), protected
and handed to its monitor; a retry never buys twice; an exit cancels the backstop first and is
recorded as a sell; the phases of the cycle never go backwards.
"""
from __future__ import annotations

import json
from decimal import ROUND_FLOOR, Decimal


from brokers.base import Disconnected, OrderPurpose, OrderStatus
from brokers.paper import PaperExchange
from core.instruments import Rounding, round_to_tick
from tests.tool_harness import CYCLE_ID, Tools, first_cycle, hk_profile, run_tools
from tool_executor import TOOL_SPECS, tool_schemas
from engine.workflow import Phase

SPEC_TOOLS = ["scan_market", "get_quote", "get_technicals", "detect_patterns", "get_news", "check_risk",
              "get_portfolio", "execute_trade", "close_position", "close_all", "send_alert", "log_decision"]
ALIBABA = "HK.09988"


def tick(price: Decimal, how: Rounding = Rounding.NEAREST) -> Decimal:
    return round_to_tick(hk_profile().market, price, first_cycle().date(), how)


async def levels(t: Tools, symbol: str, tier: int = 2) -> dict:
    """A quote and a stop at the noise floor (2% below if that is wider) with a target 2.5R above, on the
    tick grid, as a model would send them after reading check_risk's acceptable levels."""
    quote = await t.ok("get_quote", {"symbol": symbol})
    ask = Decimal(quote["ask"])
    stop = tick(ask * Decimal("0.98"), Rounding.UP)
    check = await t.ok("check_risk", {"symbol": symbol, "quantity": quote["lot_size"], "entry": str(ask),
                                      "stop": str(stop), "target": str(ask * 2), "tier": tier})
    stop = min(stop, Decimal(check["acceptable_levels"]["stop_at_most"]))
    target = tick(ask + (ask - stop) * Decimal("2.5"), Rounding.UP)
    return {"quote": quote, "ask": ask, "lot": quote["lot_size"], "stop": stop, "target": target, "tier": tier}


def trade(symbol: str, quantity: int, lv: dict, **changes) -> dict:
    args = {"symbol": symbol, "side": "buy", "quantity": quantity, "order_type": "market", "stop_loss": str(lv["stop"]),
            "take_profit": str(lv["target"]), "tier": lv["tier"], "reason": "tier 2 breakout with volume"}
    args.update(changes)
    return args


async def fitting_symbol(t: Tools, low: Decimal, high: Decimal) -> str:
    """A symbol whose one board lot at the ask costs more than ``low`` and at most ``high``."""
    snaps = await t.exchange.snapshots(t.market.scan_list("ALL"))
    for symbol, snap in sorted(snaps.items()):
        if low < snap.quote.ask * snap.lot_size <= high:
            return str(symbol)
    raise AssertionError(f"no symbol with one lot between {low} and {high} in the sample universe")


# --- schemas ------------------------------------------------------------------------------------------
def test_the_twelve_tool_schemas_come_from_the_input_models():
    schemas = {s["name"]: s for s in tool_schemas()}
    assert sorted(schemas) == sorted(SPEC_TOOLS)
    for name, schema in schemas.items():
        assert schema["description"] and schema["input_schema"]["type"] == "object"
        model_schema = TOOL_SPECS[name].model.model_json_schema()
        assert set(schema["input_schema"]["properties"]) == set(model_schema.get("properties", {}))
        assert schema["input_schema"].get("required", []) == model_schema.get("required", [])
        assert "title" not in schema["input_schema"] and '"title"' not in json.dumps(schema["input_schema"]["properties"])
    execute = schemas["execute_trade"]["input_schema"]
    assert set(execute["required"]) >= {"symbol", "quantity", "stop_loss", "take_profit", "tier", "reason"}
    assert execute["additionalProperties"] is False
    assert schemas["scan_market"]["input_schema"]["properties"]["limit"]["maximum"] == 20
    assert schemas["get_technicals"]["input_schema"]["properties"]["timeframe"]["enum"] == ["5m", "15m", "1h", "1d"]
    assert schemas["get_news"]["input_schema"]["properties"]["hours"]["maximum"] == 72


# --- 8. the board lot is never rounded up past the cap -----------------------------------------------------
def test_a_stock_whose_one_board_lot_is_above_the_cap_is_refused_with_the_reason(database_url, tmp_path):
    async def scenario(t: Tools):
        lv = await levels(t, "9988")
        lot_value = lv["ask"] * lv["lot"]
        assert lot_value > Decimal(10000), "precondition: one lot of Alibaba costs more than the HKD 10,000 cap"
        reason = f"one board lot ({lv['lot']} x {lv['ask']} = HKD {lot_value:,.2f}) is above the cap of HKD 10,000.00; not buying"

        verdict = await t.ok("check_risk", {"symbol": ALIBABA, "quantity": lv["lot"], "entry": str(lv["ask"]),
                                            "stop": str(lv["stop"]), "target": str(lv["target"]), "tier": 2})
        assert verdict["approved"] is False
        assert reason in verdict["reasons"]
        assert verdict["suggested_quantity"] == 0 and verdict["board_lot"] == lv["lot"]

        error = await t.error("execute_trade", trade(ALIBABA, lv["lot"], lv))
        assert error.startswith("refused by risk: ") and reason in error
        assert "suggested quantity 0, board lot 100" in error
        assert await t.broker_orders() == [] and await t.exchange.positions() == []
        assert await t.rows("SELECT * FROM orders") == [] and await t.rows("SELECT * FROM positions") == []

    run_tools(database_url, tmp_path, scenario)


def test_tier_three_half_size_cap_refuses_a_lot_that_tier_two_may_buy(database_url, tmp_path):
    async def scenario(t: Tools):
        symbol = await fitting_symbol(t, Decimal(5000), Decimal(10000))
        lv = await levels(t, symbol)
        base = {"symbol": symbol, "quantity": lv["lot"], "entry": str(lv["ask"]), "stop": str(lv["stop"]),
                "target": str(lv["target"])}
        tier2 = await t.ok("check_risk", {**base, "tier": 2})
        tier3 = await t.ok("check_risk", {**base, "tier": 3})
        assert tier2["approved"] is True and tier2["suggested_quantity"] == lv["lot"], tier2
        assert tier3["approved"] is False and tier3["suggested_quantity"] == 0
        assert any("is above the cap of HKD 5,000.00" in r for r in tier3["reasons"]), tier3

    run_tools(database_url, tmp_path, scenario)


# --- bad input never reaches the broker -----------------------------------------------------------------------
def test_bad_input_is_answered_with_what_is_wrong_and_nothing_reaches_the_broker(database_url, tmp_path):
    async def scenario(t: Tools):
        symbol = await fitting_symbol(t, Decimal(2000), Decimal(5000))
        lv = await levels(t, symbol)
        lot, ask, tick_size = lv["lot"], lv["ask"], Decimal(lv["quote"]["tick"])
        far = tick(ask * Decimal("1.10"))
        cases = [
            ("get_quote", {"symbol": "HK.88888"}, "unknown symbol(s) HK.88888"),
            ("get_quote", {"symbol": "AAPL"}, "US.AAPL is not a HK symbol; this agent trades HK only"),
            ("get_quote", {"symbol": "tencent"}, "'tencent' is not a symbol this agent understands"),
            ("get_quote", {}, "symbol: required"),
            ("get_technicals", {"symbol": symbol, "timeframe": "2m"}, "timeframe = '2m'"),
            ("scan_market", {"limit": 50}, "limit = 50: Input should be less than or equal to 20"),
            ("get_news", {"symbol": symbol, "hours": 100}, "hours = 100: Input should be less than or equal to 72"),
            ("execute_trade", trade(symbol, -lot, lv), f"quantity = {-lot}: Input should be greater than 0"),
            ("execute_trade", trade(symbol, "two lots", lv), "quantity = 'two lots'"),
            ("execute_trade", {k: v for k, v in trade(symbol, lot, lv).items() if k != "stop_loss"}, "stop_loss: required"),
            ("execute_trade", trade(symbol, lot, lv, leverage=5), "leverage: not an input of this tool"),
            ("execute_trade", trade(symbol, lot + lot // 2, lv), f"quantity {lot + lot // 2} is not a multiple of the board lot {lot}"),
            ("execute_trade", trade(symbol, lot, lv, order_type="limit"), "limit_price is required for a limit order"),
            ("execute_trade", trade(symbol, lot, lv, order_type="limit", limit_price=str(ask + tick_size / 2)),
             f"limit_price {ask + tick_size / 2} is not on the tick grid of {symbol} (tick {tick_size}): use {ask} or {ask + tick_size}"),
            ("execute_trade", trade(symbol, lot, lv, order_type="limit", limit_price=str(far)),
             f"limit_price {far} is "),
            ("execute_trade", trade(symbol, lot, lv, stop_loss=str(lv["stop"] + tick_size / 2)), "stop_loss "),
            ("execute_trade", trade(symbol, lot, lv, stop_loss=str(ask + tick_size)),
             f"stop {ask + tick_size} must be below the entry {ask} for a long position"),
            ("execute_trade", trade(symbol, lot, lv, side="sell"), "only long entries (buy) are allowed"),
            ("execute_trade", trade(symbol, lot, lv, tier=4), "tier = 4: Input should be less than or equal to 3"),
            ("close_position", {"symbol": symbol, "reason": "test"}, f"no open position in {symbol}; open positions: none"),
            ("sell_everything", {}, "unknown tool 'sell_everything'"),
        ]
        for name, args, expected in cases:
            error = await t.error(name, args)
            assert expected in error, (name, args, error)
        far_error = await t.error("execute_trade", trade(symbol, lot, lv, order_type="limit", limit_price=str(far)))
        assert "from the market" in far_error and "allowed within 3%" in far_error
        assert await t.broker_orders() == []
        assert await t.rows("SELECT * FROM orders") == [] and await t.rows("SELECT * FROM positions") == []

    run_tools(database_url, tmp_path, scenario)


# --- an entry, end to end -----------------------------------------------------------------------------------
def test_execute_trade_fills_records_protects_and_hands_the_position_to_its_monitor(database_url, tmp_path):
    async def scenario(t: Tools):
        symbol = await fitting_symbol(t, Decimal(2000), Decimal(5000))
        lv = await levels(t, symbol)
        quantity = int((Decimal(8000) / (lv["ask"] * lv["lot"])).to_integral_value(ROUND_FLOOR)) * lv["lot"]
        verdict = await t.ok("check_risk", {"symbol": symbol, "quantity": quantity, "entry": str(lv["ask"]),
                                            "stop": str(lv["stop"]), "target": str(lv["target"]), "tier": 2})
        assert verdict["approved"] is True, verdict

        result = await t.ok("execute_trade", trade(symbol, quantity, lv))

        code = symbol.split(".")[1]
        assert result["client_order_id"] == f"{CYCLE_ID}-{code}-1"
        assert result["status"] == "filled" and result["filled_quantity"] == quantity
        assert Decimal(result["fill_price"]) == lv["ask"]
        backstop = round_to_tick(t.profile.market, lv["ask"] * Decimal("0.95"), first_cycle().date(), Rounding.DOWN)
        assert result["backstop"] == f"stop {backstop}"

        [entry, stop_order] = await t.rows("SELECT * FROM orders ORDER BY order_id")
        [position] = await t.rows("SELECT * FROM positions")
        assert (entry["purpose"], entry["side"], entry["status"], entry["filled_quantity"], entry["avg_fill_price"]) == (
            "entry", "buy", "filled", quantity, lv["ask"])
        assert entry["position_id"] == position["position_id"] == result["position_id"]
        assert (stop_order["purpose"], stop_order["side"], stop_order["order_type"], stop_order["stop_price"]) == (
            "stop_loss", "sell", "stop", backstop)
        assert (position["status"], position["quantity"], position["entry_price"]) == ("open", quantity, lv["ask"])
        assert (position["stop_price"], position["target_price"], position["tier"]) == (lv["stop"], lv["target"], 2)
        assert position["backstop_status"] == "placed" and position["backstop_order_ids"] == [stop_order["broker_order_id"]]
        [decision] = await t.rows("SELECT * FROM decisions")
        assert (decision["cycle_id"], decision["decision"], decision["symbol"]) == (CYCLE_ID, "trade", symbol)
        assert [m["data"]["event"] for m in await t.messages()][:1] == ["ENTRY"]
        assert t.monitors.active() == [position["position_id"]]
        assert t.ctx.tracker.current is Phase.MONITOR and t.ctx.trades_executed == 1

        # get_portfolio shows what is held (the original omitted positions and Claude re-bought them).
        portfolio = await t.ok("get_portfolio")
        assert [(p["symbol"], p["quantity"], Decimal(p["avg_cost"])) for p in portfolio["positions"]] == [
            (symbol, quantity, lv["ask"])]
        assert portfolio["entries_today"] == 1

        again = await t.error("execute_trade", trade(symbol, quantity, lv))
        assert f"{symbol} is already held: one position per symbol" in again
        assert len([o for o in await t.broker_orders() if o.purpose is OrderPurpose.ENTRY]) == 1

        # Closing cancels the backstop first (never sells twice, never goes short) and records the sell.
        closed = await t.ok("close_position", {"symbol": symbol, "reason": "news turned negative"})
        assert closed["closed"] is True, closed
        broker = {o.client_order_id: o for o in await t.broker_orders()}
        assert broker[stop_order["client_order_id"]].status is OrderStatus.CANCELLED
        assert await t.exchange.positions() == []
        sells = await t.rows("SELECT * FROM orders WHERE purpose='exit'")
        assert len(sells) == 1 and sells[0]["side"] == "sell" and sells[0]["filled_quantity"] == quantity
        [position] = await t.rows("SELECT * FROM positions")
        assert position["status"] == "closed" and position["exit_price"] == sells[0]["avg_fill_price"] == Decimal(closed["exit_price"])
        assert position["realized_pnl"] == Decimal(closed["realized_pnl"])

    run_tools(database_url, tmp_path, scenario)


def test_a_retry_after_a_broker_error_never_places_the_entry_twice(database_url, tmp_path, monkeypatch):
    """The order reached the broker but the answer was lost; the model retries the same trade."""
    place_order = PaperExchange.place_order
    lost = []

    async def answer_lost_once(self, request):
        order = await place_order(self, request)
        if request.purpose is OrderPurpose.ENTRY and not lost:
            lost.append(order)
            raise Disconnected("connection to the broker lost while placing the order; it may have been placed")
        return order

    monkeypatch.setattr(PaperExchange, "place_order", answer_lost_once)

    async def scenario(t: Tools):
        symbol = await fitting_symbol(t, Decimal(2000), Decimal(5000))
        lv = await levels(t, symbol)
        first = await t.error("execute_trade", trade(symbol, lv["lot"], lv))
        assert first.startswith("broker: connection to the broker lost")

        retried = await t.ok("execute_trade", trade(symbol, lv["lot"], lv))

        entries = [o for o in await t.broker_orders() if o.purpose is OrderPurpose.ENTRY]
        assert [o.broker_order_id for o in entries] == [lost[0].broker_order_id], entries
        assert retried["client_order_id"] == lost[0].client_order_id and retried["status"] == "filled"
        rows = await t.rows("SELECT * FROM orders WHERE purpose='entry'")
        assert len(rows) == 1 and rows[0]["status"] == "filled"
        assert len(await t.rows("SELECT * FROM positions")) == 1

    run_tools(database_url, tmp_path, scenario)


def test_results_are_compact_json(database_url, tmp_path):
    async def scenario(t: Tools):
        symbol = await fitting_symbol(t, Decimal(2000), Decimal(5000))
        sizes = {
            "scan_market": len((await t.run("scan_market", {"limit": 10})).content),
            "get_quote": len((await t.run("get_quote", {"symbol": symbol})).content),
            "get_technicals": len((await t.run("get_technicals", {"symbol": symbol, "timeframe": "5m"})).content),
            "detect_patterns": len((await t.run("detect_patterns", {"symbol": symbol, "timeframe": "5m"})).content),
            "get_portfolio": len((await t.run("get_portfolio")).content),
        }
        assert all(size <= 2000 for size in sizes.values()), sizes
        for name in ("get_quote", "get_technicals"):
            content = (await t.run(name, {"symbol": symbol})).content
            assert "\n" not in content and ": " not in content   # compact separators, no raw frames

    run_tools(database_url, tmp_path, scenario)


def test_send_alert_and_log_decision_reach_big_bro_and_the_cycle(database_url, tmp_path):
    async def scenario(t: Tools):
        sent = await t.ok("send_alert", {"severity": "critical", "subject": "Data feed stale",
                                         "message": "quotes have not moved for 10 minutes"})
        assert sent == {"sent": True, "priority": "urgent"}
        logged = await t.ok("log_decision", {"decision": "skip", "symbol": "9988", "reasoning": "one lot above the cap",
                                             "tier": 2, "entry": "105.3", "stop": "103.2", "target": "110.6"})
        [row] = await t.rows("SELECT * FROM decisions")
        assert row["decision_id"] == logged["decision_id"] and row["cycle_id"] == CYCLE_ID   # FK to a real cycle
        assert (row["symbol"], row["tier"], row["stop_price"]) == (ALIBABA, 2, Decimal("103.2"))
        [alert] = await t.messages()
        assert alert["priority"] == "urgent" and alert["subject"] == "Data feed stale"

    run_tools(database_url, tmp_path, scenario)


# --- partial fills, missing backstops, symbols, the prompt -----------------------------------------------------
def test_a_partial_fill_is_recorded_as_partial_with_the_filled_quantity(database_url, tmp_path):
    """Only one board lot of liquidity: the rest is cancelled at the fill timeout; the position is what filled."""
    from datetime import timedelta

    from tests.tool_harness import _feed

    base = hk_profile()
    at = first_cycle(base)
    feed, _ = _feed(base)

    symbol = run_tools(database_url, tmp_path, lambda t: fitting_symbol(t, Decimal(2000), Decimal(3300)), at=at,
                       profile=base, cycle_id="hk_20220615_094500_pick00")
    series = next(s for k, s in feed.series.items() if str(k) == symbol)
    minute = series.minute
    bar_volume = float(minute.loc[minute.index == at, "volume"].iloc[0])
    step_volume = bar_volume / 4
    participation = min(1.0, 1.5 * series.lot_size / step_volume)       # one lot of liquidity at the step
    # The symbol that fits the price range is a volatile synthetic one: a narrower noise floor keeps
    # its stop within the 5% limit (the floor itself is tested in test_risk.py).
    profile = hk_profile({"CATALYST__PAPER__MAX_VOLUME_PARTICIPATION": repr(participation),
                          "CATALYST__RISK__NOISE_STOP_MULTIPLE": "1"})

    async def scenario(t: Tools):
        lv = await levels(t, symbol)
        result = await t.ok("execute_trade", trade(symbol, 3 * lv["lot"], lv))
        [entry] = await t.rows("SELECT * FROM orders WHERE purpose='entry'")
        [position] = await t.rows("SELECT * FROM positions")
        entry_msg = next(m for m in await t.messages() if m["data"]["event"] == "ENTRY")
        return lv, result, entry, position, entry_msg, t.clock.now()

    lv, result, entry, position, entry_msg, done_at = run_tools(database_url, tmp_path, scenario, at=at, profile=profile)
    assert result["status"] == "partial" and result["requested_quantity"] == 3 * lv["lot"]
    assert 0 < result["filled_quantity"] < 3 * lv["lot"]
    assert (entry["status"], entry["quantity"], entry["filled_quantity"]) == ("cancelled", 3 * lv["lot"], result["filled_quantity"])
    assert position["quantity"] == result["filled_quantity"]          # the original recorded the requested quantity
    assert f"Bought {result['filled_quantity']} of {3 * lv['lot']}" in entry_msg["body"]
    assert done_at - at >= timedelta(seconds=30)                       # waited the paper fill timeout before cancelling


def test_without_a_broker_backstop_the_position_says_so(database_url, tmp_path, monkeypatch):
    """Moomoo paper accepts no stop orders: the entry goes on, and Big Bro hears "no broker backstop"."""
    from brokers.base import Capabilities

    monkeypatch.setattr(PaperExchange, "capabilities", property(lambda self: Capabilities(
        supports_stop_orders=False, supports_bracket=False, supports_quote_push=True, supports_order_push=True,
        is_paper=True, name="Moomoo paper (simulated)")))

    async def scenario(t: Tools):
        symbol = await fitting_symbol(t, Decimal(2000), Decimal(5000))
        lv = await levels(t, symbol)
        result = await t.ok("execute_trade", trade(symbol, lv["lot"], lv))
        assert result["backstop"] == "none"
        assert [o.purpose for o in await t.broker_orders()] == [OrderPurpose.ENTRY]
        [position] = await t.rows("SELECT * FROM positions")
        assert position["backstop_status"] == "none"
        [warning] = [m for m in await t.messages() if m["data"]["event"] == "NO_BACKSTOP"]
        assert warning["priority"] == "high" and "no broker-side protective order" in warning["body"]
        assert t.ctx.entries[0]["backstop"] == "none"                   # the cycle summary lists it

    run_tools(database_url, tmp_path, scenario)


def test_every_spelling_of_a_symbol_is_the_same_canonical_symbol(database_url, tmp_path):
    async def scenario(t: Tools):
        for spelling in ("9988", "09988", "9988.HK", "hk.9988", " HK.09988 "):
            assert (await t.ok("get_quote", {"symbol": spelling}))["symbol"] == ALIBABA, spelling
        logged = await t.ok("log_decision", {"decision": "observation", "symbol": "9988.hk", "reasoning": "watch"})
        [row] = await t.rows("SELECT symbol FROM decisions WHERE decision_id=$1", logged["decision_id"])
        assert row["symbol"] == ALIBABA

    run_tools(database_url, tmp_path, scenario)


def test_the_system_prompt_states_the_profiles_limits_not_fixed_text():
    from runner.brains import render_system_prompt

    default = render_system_prompt(hk_profile())
    assert "at most 5 open positions" in default and "HKD 10,000" in default and "tier 3: HKD 5,000" in default
    assert "reward:risk >= 2.0" in default and "reward:risk >= 1.5" in default
    assert "A daily loss of 2% halts new entries" in default
    tuned = render_system_prompt(hk_profile({"CATALYST__RISK__MAX_POSITIONS": "3", "CATALYST__RISK__DAILY_LOSS_HALT_PCT": "3",
                                             "CATALYST__RISK__MAX_POSITION_VALUE": "8000"}))
    assert "at most 3 open positions" in tuned and "3 positions are already open" in tuned
    assert "A daily loss of 3% halts" in tuned and "HKD 8,000" in tuned and "HKD 10,000" not in tuned
    # The noise floor, so Claude proposes stops check_risk accepts and reads its acceptable_levels.
    flat = " ".join(default.split())
    assert "2.5 x its one-minute volatility over 60 minutes" in flat and "acceptable_levels" in flat
    wider = " ".join(render_system_prompt(hk_profile({"CATALYST__RISK__NOISE_STOP_MULTIPLE": "3"})).split())
    assert "3 x its one-minute volatility" in wider
