"""Caps, windows and estimates: which caps a job counts against, when a window resets, how many
units an input asks for, and where the deploy-time caps come from."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from falflow.fal.errors import FalServerError
from falflow.fal.platform import CostEstimate, Price
from falflow.spend.caps import BudgetConfig, Caps, Window
from falflow.spend.estimate import CostEstimator, units_asked


def test_a_job_counts_against_the_stack_its_route_and_its_model_where_capped() -> None:
    config = BudgetConfig(
        stack=Caps(daily_usd=10),
        routes={"upscale/": Caps(monthly_usd=50)},
        models={"fal-ai/flux/dev": Caps(daily_usd=2, monthly_usd=20)},
    )
    caps = config.caps_for(model="fal-ai/flux/dev", route="upscale/")
    assert [cap.name for cap in caps] == [
        "daily#all",
        "monthly#route:upscale/",
        "daily#model:fal-ai/flux/dev",
        "monthly#model:fal-ai/flux/dev",
    ]
    assert [cap.name for cap in config.caps_for(model="fal-ai/other", route=None)] == ["daily#all"]
    assert BudgetConfig().caps_for(model="m", route=None) == []


@pytest.mark.parametrize(
    ("moment", "period", "window", "resets"),
    [
        (datetime(2026, 12, 2, 23, 59, tzinfo=UTC), "daily", "2026-12-02", datetime(2026, 12, 3, tzinfo=UTC)),
        (datetime(2026, 12, 31, 12, tzinfo=UTC), "monthly", "2026-12", datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2026, 2, 10, tzinfo=UTC), "monthly", "2026-02", datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_windows_are_utc_days_and_months(
    moment: datetime, period: Any, window: str, resets: datetime
) -> None:
    found = Window.containing(period, moment)
    assert found.id == window
    assert found.resets_at == resets


@pytest.mark.parametrize(
    ("unit", "fal_input", "units"),
    [
        ("image", {"num_images": 3}, 3.0),
        ("images", {}, 1.0),
        ("video", {"prompt": "x"}, 1.0),
        ("second", {"duration": "5"}, 5.0),
        ("seconds", {"seconds_total": 3}, 3.0),
        ("second", {}, None),  # the input names no length: fal's estimate per call decides
        ("request", {}, 1.0),
        ("megapixels", {"image_size": "square_hd"}, None),
    ],
)
def test_units_an_input_asks_for(unit: str, fal_input: dict[str, Any], units: float | None) -> None:
    assert units_asked(fal_input, unit) == units


class PriceList:
    def __init__(self, prices: list[Price], *, per_call: float | None = None, fail: bool = False) -> None:
        self.prices = prices
        self.per_call = per_call
        self.fail = fail
        self.calls = 0

    def pricing(self, endpoint_ids: Sequence[str]) -> list[Price]:
        self.calls += 1
        if self.fail:
            raise FalServerError("down", status=503, retryable=True)
        return [price for price in self.prices if price.endpoint_id in endpoint_ids]

    def estimate_cost(self, *, call_quantities: Any = None, unit_quantities: Any = None) -> CostEstimate:
        assert call_quantities is not None
        if self.per_call is None:
            raise FalServerError("no history", status=500, retryable=True)
        return CostEstimate(estimate_type="historical_api_price", total_cost=self.per_call, currency="USD")


def _price(unit: str, amount: float) -> Price:
    return Price(endpoint_id="fal-ai/m", unit_price=amount, unit=unit, currency="USD")


def test_an_estimate_is_unit_price_times_units_and_the_price_is_cached() -> None:
    fal = PriceList([_price("image", 0.025)])
    estimator = CostEstimator(dynamodb=None, usage_table="", fal=fal)
    first = estimator.estimate("fal-ai/m", {"num_images": 2})
    assert first is not None
    assert (first.amount, first.units, first.unit_price, first.source) == (0.05, 2.0, 0.025, "estimate")
    estimator.estimate("fal-ai/m", {"num_images": 4})
    assert fal.calls == 1


def test_a_unit_the_input_does_not_count_takes_fal_s_estimate_per_call() -> None:
    estimator = CostEstimator(
        dynamodb=None, usage_table="", fal=PriceList([_price("megapixels", 0.01)], per_call=0.04)
    )
    estimate = estimator.estimate("fal-ai/m", {"prompt": "x"})
    assert estimate is not None
    assert (estimate.amount, estimate.unit) == (0.04, "request")


def test_no_price_anywhere_is_unpriced() -> None:
    assert (
        CostEstimator(dynamodb=None, usage_table="", fal=PriceList([], fail=True)).estimate("fal-ai/m", {})
        is None
    )
    assert CostEstimator(dynamodb=None, usage_table="", fal=None).estimate("fal-ai/m", {}) is None
