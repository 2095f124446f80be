"""Symbols, ticks and board-lot sizing: the places the original lost orders and money."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from core.instruments import (
    Market, OrderSide, PositionSide, Rounding, SymbolError, check_lot_multiple, is_on_tick, parse_symbol,
    round_to_tick, size_by_lot, tick_size,
)

OLD = date(2022, 6, 15)       # before the 2025 spread reduction
NEW = date(2026, 11, 23)      # phase 1 in force


@pytest.mark.parametrize("text", ["700", "0700", "00700", "0700.HK", "700.hk", "hk.700", "HK.00700", " HK.00700 "])
def test_every_hong_kong_form_is_one_symbol(text):
    assert str(parse_symbol(text)) == "HK.00700"
    assert parse_symbol(text).short == "00700"


@pytest.mark.parametrize("text", ["AAPL", "aapl", "US.AAPL", "us.aapl"])
def test_every_us_form_is_one_symbol(text):
    assert str(parse_symbol(text)) == "US.AAPL"


@pytest.mark.parametrize("text", ["", "HK.", "123456", "HK.1234567", "AAPL.HK", "US.700", "TOOLONGTICKER", "00000", "$AAPL", "HK 700"])
def test_unknown_forms_are_refused_with_the_accepted_forms(text):
    with pytest.raises(SymbolError) as err:
        parse_symbol(text)
    assert "accepted forms" in str(err.value)


def test_sides_are_enums_with_explicit_mapping():
    assert PositionSide.LONG.exit_side is OrderSide.SELL
    assert PositionSide.SHORT.exit_side is OrderSide.BUY
    assert PositionSide.LONG.entry_side is OrderSide.BUY


# Every band edge of the HKEX spread table: (price at the top of a band, its tick, first price above, its tick).
OLD_EDGES = [
    ("0.25", "0.001", "0.255", "0.005"), ("0.50", "0.005", "0.51", "0.01"), ("10.00", "0.01", "10.02", "0.02"),
    ("20.00", "0.02", "20.05", "0.05"), ("100.00", "0.05", "100.1", "0.1"), ("200.00", "0.1", "200.2", "0.2"),
    ("500.00", "0.2", "500.5", "0.5"), ("1000.00", "0.5", "1001", "1"), ("2000", "1", "2002", "2"), ("5000", "2", "5005", "5"),
]


@pytest.mark.parametrize("top, tick, above, tick_above", OLD_EDGES)
def test_hkex_band_edges_before_the_reduction(top, tick, above, tick_above):
    assert tick_size(Market.HK, Decimal(top), OLD) == Decimal(tick)
    assert tick_size(Market.HK, Decimal(above), OLD) == Decimal(tick_above)


@pytest.mark.parametrize("price, tick", [("10.00", "0.01"), ("10.01", "0.01"), ("20.00", "0.01"), ("20.02", "0.02"),
                                         ("50.00", "0.02"), ("50.05", "0.05"), ("9.99", "0.01")])
def test_hkex_phase1_bands(price, tick):
    assert tick_size(Market.HK, Decimal(price), NEW) == Decimal(tick)


def test_phase2_band_change_is_date_driven():
    phase2 = date(2027, 6, 1)
    assert tick_size(Market.HK, Decimal("5"), date(2027, 5, 31), phase2) == Decimal("0.01")
    assert tick_size(Market.HK, Decimal("5"), phase2, phase2) == Decimal("0.005")


def test_price_above_table_refused():
    with pytest.raises(ValueError):
        tick_size(Market.HK, Decimal("10000"), NEW)


def test_float_noise_from_real_data_rounds_to_the_tick():
    assert round_to_tick(Market.HK, 85.4000015258789, OLD) == Decimal("85.40")
    assert round_to_tick(Market.HK, 84.80000305175781, OLD) == Decimal("84.80")
    assert round_to_tick(Market.US, 9.050000190734863, NEW) == Decimal("9.05")
    assert is_on_tick(Market.HK, round_to_tick(Market.HK, 85.4000015258789, OLD), OLD)


def test_directional_rounding_for_limit_prices():
    assert round_to_tick(Market.HK, Decimal("85.43"), OLD, Rounding.DOWN) == Decimal("85.40")
    assert round_to_tick(Market.HK, Decimal("85.43"), OLD, Rounding.UP) == Decimal("85.45")
    assert round_to_tick(Market.HK, Decimal("85.45"), OLD, Rounding.UP) == Decimal("85.45")


def test_rounding_across_a_band_edge_lands_on_the_coarser_grid():
    # 20.01 rounded up is 20.02 on the 10-20 grid, but 20.02 is in the 20-100 band (tick 0.05 in 2022).
    assert round_to_tick(Market.HK, Decimal("20.01"), OLD, Rounding.UP) == Decimal("20.05")


def test_us_ticks():
    assert tick_size(Market.US, Decimal("1.00"), NEW) == Decimal("0.01")
    assert tick_size(Market.US, Decimal("0.9999"), NEW) == Decimal("0.0001")
    assert round_to_tick(Market.US, Decimal("0.12345"), NEW) == Decimal("0.1235")


def test_sizing_refuses_a_lot_above_the_cap_with_the_reason():
    # The original bought 2,000 shares of PICC at 15.84 (HKD 31,680) against a HKD 10,000 cap.
    sizing = size_by_lot(Decimal("10000"), Decimal("15.84"), 2000, "HKD")
    assert not sizing.ok and sizing.quantity == 0
    assert "31,680.00 HKD" in sizing.refused_reason and "10,000.00" in sizing.refused_reason


def test_sizing_with_a_500_share_lot_rounds_down_to_whole_lots():
    sizing = size_by_lot(Decimal("10000"), Decimal("4.12"), 500, "HKD")
    assert sizing.ok
    # one lot = 500 x 4.12 = 2,060; floor(10,000 / 2,060) = 4 lots
    assert sizing.quantity == 2000 and sizing.lots == 4
    assert sizing.position_value == Decimal("8240.00")


def test_sizing_exact_cap_and_single_lot():
    assert size_by_lot(Decimal("10000"), Decimal("100"), 100).quantity == 100
    assert size_by_lot(Decimal("9999.99"), Decimal("100"), 100).ok is False


def test_lot_multiple_check():
    assert check_lot_multiple(500, 500) is None
    assert "multiple of the board lot 500" in check_lot_multiple(750, 500)
    assert "positive" in check_lot_multiple(0, 100)
