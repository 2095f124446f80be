"""The pure parts of scripts/entry_study.py (core/entry_lab.py), on hand-made numbers: the tiers read as
the rules brain reads them, the spreads of a mean, and the walk-forward choice with its minimum count."""
from __future__ import annotations

import math
from datetime import date

import pytest

from config.settings import load_profile, profile_path
from core.entry_lab import EntryLevels, EntryRow, Figure, choose_best, excess_figure, cycle_means, figure, first_tier
from runner.brains import Pass, RulesBrain

DAY = date(2019, 8, 1)


def _row(ratio, rsi, change, bullish, net=0.0, day=DAY, cycle="09:45", symbol="00700.HK") -> EntryRow:
    return EntryRow(day, cycle, symbol, ratio, change, rsi, bullish, net)


@pytest.mark.parametrize("ratio, rsi, change, bullish", [
    (1.6, 50, 0.0, True), (1.5, 50, 0.0, True), (1.6, 50, 0.0, False), (1.6, 76, 0.0, True),
    (1.4, 50, 3.5, False), (1.4, 50, 3.0, False), (1.3, 50, 3.5, False), (1.4, 79, 3.5, True),
    (1.4, 26, 3.5, False), (1.6, 29, 3.5, True), (0.9, 50, 5.0, True), (2.5, 81, 5.0, True),
    (2.5, 19, 5.0, True), (1.6, 77, 4.0, True),
])
def test_the_default_tiers_pick_what_the_rules_brain_picks_without_news(ratio, rsi, change, bullish):
    profile = load_profile(profile_path("hk"), {})
    quote = {"volume_ratio": ratio, "change_pct": change, "ask": "100.0"}
    tech = {"rsi14": rsi, "atr14": 0.5}
    patterns = [{"name": "breakout", "direction": "bullish", "confidence": 0.7, "stop": "99.0", "target": "103.0"}] if bullish else []
    choice = RulesBrain(profile).choose(quote, tech, patterns, False, DAY)
    brains_tier = None if isinstance(choice, Pass) else choice[0].tier
    tiers = [(t.tier, EntryLevels.of(t)) for t in profile.entry.tiers]
    assert first_tier(_row(ratio, rsi, change, bullish), profile.entry, tiers) == brains_tier


def test_a_mean_has_a_spread_and_entries_of_one_day_moving_together_widen_it():
    apart = figure([1.0, 3.0], ["a", "b"])
    assert (apart.n, apart.mean, apart.se) == (2, 2.0, pytest.approx(1.0))
    together = figure([1.0, 1.0, 3.0, 3.0], ["a", "a", "b", "b"])
    assert together.mean == 2.0
    assert together.se == pytest.approx(math.sqrt(4 / 3) / 2)
    assert together.se_day == pytest.approx(1.0)  # two days, not four independent entries
    assert together.se_day > together.se
    assert math.isnan(figure([1.0, 2.0], ["a", "a"]).se_day)  # one day: no spread between days to measure
    assert figure([], []).n == 0


def test_the_choice_is_the_best_mean_among_levels_with_enough_entries():
    figures = {
        "few but lucky": Figure(59, 1.50, 0.1, 0.1),
        "enough": Figure(60, -0.20, 0.1, 0.1),
        "many, worse": Figure(400, -0.30, 0.1, 0.1),
        "enough, as good": Figure(80, -0.20, 0.1, 0.1),
    }
    assert choose_best(figures, 60) == "enough"  # the first of equals, never the one under the minimum
    assert choose_best(figures, 59) == "few but lucky"
    assert choose_best(figures, 500) is None


def test_excess_takes_out_the_move_of_all_entries_at_the_same_cycle():
    rows = [_row(1, 50, 0, False, net=-1.0, cycle="09:45", symbol="A"), _row(1, 50, 0, False, net=-3.0, cycle="09:45", symbol="B"),
            _row(1, 50, 0, False, net=2.0, cycle="13:15", symbol="A"), _row(1, 50, 0, False, net=0.0, cycle="13:15", symbol="B")]
    means = cycle_means(rows)
    assert means == {(DAY, "09:45"): -2.0, (DAY, "13:15"): 1.0}
    picked = excess_figure([rows[0], rows[2]], means)
    assert picked.mean == pytest.approx(1.0)  # each beat its cycle's average by one point
