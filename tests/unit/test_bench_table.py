"""The one table `python -m bench` prints: every figure with its ratio, goal and whether it is met.
Built from given figures (the benchmarks themselves are smoke-tested elsewhere, not timed)."""

from __future__ import annotations

import pytest
from rich.console import Console

from bench.__main__ import Figure, cold_start_table, table
from bench.cold_start import FLOOR, LIBRARIES, POWERTOOLS, ColdStartResult


def _rendered(figures: list[Figure]) -> str:
    console = Console(record=True, width=200)
    console.print(table(figures, "title"))
    return console.export_text()


def test_the_table_shows_each_figure_and_says_which_goals_are_met() -> None:
    text = _rendered(
        [
            Figure("cold start: A", "120 ms", "100 ms", 1.2, "<= 1.3x", True),
            Figure("cold start: B", "150 ms", "100 ms", 1.5, "<= 1.3x", False),
            Figure("peak RSS", "180 MB", "200 MB", None, "< 256 MB", True),
            Figure("reference", "110 ms", "100 ms", 1.1, "—", None),
        ]
    )
    rows = {
        line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    }
    assert rows["cold start: A"] == ["120 ms", "100 ms", "1.20x", "<= 1.3x", "yes"]
    assert rows["cold start: B"] == ["150 ms", "100 ms", "1.50x", "<= 1.3x", "no"]
    assert rows["peak RSS"] == ["180 MB", "200 MB", "—", "< 256 MB", "yes"]
    assert rows["reference"][-1] == "—"


def test_cold_start_ratios_are_taken_on_cpu_time_against_the_floor() -> None:
    result = ColdStartResult(
        wall={FLOOR: 0.4, POWERTOOLS: 0.5, "StoreFunction": 1.2},
        cpu={FLOOR: 0.2, POWERTOOLS: 0.25, "StoreFunction": 0.3},
        rounds=3,
        layer_origin="test",
    )
    assert result.functions == ["StoreFunction"]
    assert result.ratio("StoreFunction") == pytest.approx(1.5)
    assert result.ratio("StoreFunction", cpu=False) == pytest.approx(3.0)
    assert result.ratio("StoreFunction", POWERTOOLS) == pytest.approx(1.2)
    assert "StoreFunction" in result.report()


def test_each_function_is_judged_against_the_floor_and_shown_against_its_libraries() -> None:
    result = ColdStartResult(
        wall={FLOOR: 0.2, POWERTOOLS: 0.25, LIBRARIES: 0.4, "StoreFunction": 0.5},
        cpu={FLOOR: 0.2, POWERTOOLS: 0.25, LIBRARIES: 0.4, "StoreFunction": 0.5},
        rounds=3,
        layer_origin="test",
    )
    figures = {figure.name: figure for figure in cold_start_table(result)}
    judged = figures["cold start ÷ boto3 floor: StoreFunction"]
    assert judged.ratio == pytest.approx(2.5)
    assert judged.met is False
    against_libraries = figures[f"cold start ÷ {LIBRARIES}: StoreFunction"]
    assert against_libraries.ratio == pytest.approx(1.25)
    assert against_libraries.met is None  # shown, not judged
    assert figures[f"cold start ÷ boto3 floor: {LIBRARIES} (reference)"].ratio == pytest.approx(2.0)
    assert "÷ libraries" in result.report()
