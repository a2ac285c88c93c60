"""Per-job cost: billing events win, estimates fill in, and nothing is counted twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from falflow.collect.costs import (
    billing_window,
    cost_from_billing_events,
    estimate_cost,
    estimated_units,
    needs_cost,
    settle_costs,
)
from falflow.collect.model import PriceRow
from falflow.fal.platform import BillingEvent
from falflow.jobs import Job, JobCost, JobState
from tests.fakes.job_store import InMemoryJobStore

NOW = datetime(2026, 9, 1, 12, tzinfo=UTC)
FLUX = PriceRow(endpoint_id="fal-ai/flux/dev", unit_price=0.025, unit="image", currency="USD")
KLING = PriceRow(endpoint_id="fal-ai/kling", unit_price=0.28, unit="second", currency="USD")


def _job(
    job_id: str = "job-1",
    *,
    state: JobState = JobState.COMPLETED,
    model: str = "fal-ai/flux/dev",
    request_id: str | None = "req-1",
    outputs: list[str] | None = None,
    input: dict[str, Any] | None = None,
    **fields: Any,
) -> Job:
    return Job.new(
        job_id,
        source=f"sqs:{job_id}",
        source_kind="sqs",
        now=NOW - timedelta(hours=1),
        state=state,
        model=model,
        request_id=request_id,
        outputs=outputs if outputs is not None else [f"outputs/{job_id}/image-0.png"],
        input=input if input is not None else {"prompt": "a cat"},
        **fields,
    )


def _event(
    request_id: str = "req-1", cost_total: float | None = 0.05, units: float = 2, **fields: Any
) -> BillingEvent:
    return BillingEvent(
        request_id=request_id,
        endpoint_id="fal-ai/flux/dev",
        timestamp=(NOW - timedelta(minutes=30)).isoformat(),
        output_units=units,
        unit_price=0.025,
        cost_total=cost_total,
        **fields,
    )


@pytest.mark.parametrize(
    ("unit", "outputs", "input", "units"),
    [
        ("image", ["outputs/j/a.png", "outputs/j/b.JPG", "outputs/j/result.json"], {}, 2.0),
        ("images", ["outputs/j/a.webp"], {}, 1.0),
        ("image", ["outputs/j/clip.mp4"], {}, None),
        ("video", ["outputs/j/clip.mp4", "outputs/j/thumb.png"], {}, 1.0),
        ("audio", ["outputs/j/audio.wav"], {}, 1.0),
        ("second", [], {"duration": "5"}, 5.0),
        ("seconds", [], {"seconds_total": 30}, 30.0),
        ("second", [], {"duration": True}, None),
        ("second", [], {"duration": "long"}, None),
        ("second", [], {}, None),
        ("request", [], {}, 1.0),
        ("gpu_second", ["outputs/j/a.png"], {}, None),
        ("megapixels", ["outputs/j/a.png"], {}, None),
    ],
)
def test_the_estimate_rule_reads_units_off_the_job(
    unit: str, outputs: list[str], input: dict[str, Any], units: float | None
) -> None:
    assert estimated_units(_job(outputs=outputs, input=input), unit) == units


def test_an_estimate_is_unit_price_times_units_and_says_so() -> None:
    job = _job(model="fal-ai/kling", outputs=["outputs/job-1/output.mp4"], input={"duration": "10"})
    assert estimate_cost(job, KLING) == JobCost(
        amount=2.8, currency="USD", source="estimate", unit="second", units=10.0, unit_price=0.28
    )


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED])
def test_only_completed_jobs_are_estimated(state: JobState) -> None:
    assert estimate_cost(_job(state=state), FLUX) is None


def test_a_billed_cost_is_the_events_cost_total_exactly() -> None:
    cost = cost_from_billing_events([_event(cost_total=0.07500000000000001)], FLUX)
    assert cost.amount == 0.07500000000000001
    assert (cost.source, cost.unit, cost.units, cost.unit_price) == ("billing_event", "image", 2.0, 0.025)


def test_several_events_of_one_request_add_up() -> None:
    cost = cost_from_billing_events([_event(cost_total=0.1), _event(cost_total=0.2, units=1)], FLUX)
    assert cost.amount == 0.3
    assert cost.units == 3


def test_events_without_a_total_fall_back_to_subtotal_less_discount_then_nano_usd() -> None:
    assert (
        cost_from_billing_events(
            [_event(cost_total=None, cost_subtotal=0.1, cost_discount=0.02)], None
        ).amount
        == 0.08
    )
    nano = _event(cost_total=None, cost_estimate_nano_usd=25_000_000)
    assert cost_from_billing_events([nano], None).amount == 0.025


def test_which_jobs_still_need_a_cost() -> None:
    assert needs_cost(_job())
    assert needs_cost(_job(state=JobState.FAILED))
    assert not needs_cost(_job(request_id=None))
    assert not needs_cost(_job(state=JobState.IN_PROGRESS))
    assert needs_cost(_job(cost=JobCost(amount=1, source="estimate")))
    assert not needs_cost(_job(cost=JobCost(amount=1, source="billing_event")))


def test_the_billing_window_starts_before_the_oldest_job_and_stays_within_90_days() -> None:
    start, end = billing_window([_job()], NOW)
    assert start == NOW - timedelta(hours=2)
    assert end > NOW
    old = _job("old").model_copy(update={"created_at": (NOW - timedelta(days=200)).isoformat()})
    start, end = billing_window([old], NOW)
    assert end - start <= timedelta(days=90)


def test_settling_estimates_first_then_the_billing_event_replaces_the_estimate() -> None:
    store = InMemoryJobStore()
    job, _ = store.create(_job())

    first = settle_costs(store, [job], [], {FLUX.endpoint_id: FLUX})
    stored = store.get(job.job_id)
    assert stored is not None
    assert stored.cost is not None
    assert (first.estimated, stored.cost.source, stored.cost.amount) == (1, "estimate", 0.025)

    second = settle_costs(store, [stored], [_event(cost_total=0.05)], {FLUX.endpoint_id: FLUX})
    billed = store.get(job.job_id)
    assert billed is not None
    assert billed.cost is not None
    assert (second.billed, billed.cost.source, billed.cost.amount) == (1, "billing_event", 0.05)

    # Settled: the same events again change nothing, and an estimate can no longer land.
    again = settle_costs(store, [billed], [_event(cost_total=0.05)], {FLUX.endpoint_id: FLUX})
    assert (again.billed, again.unchanged) == (0, 1)
    late_estimate = settle_costs(store, [job], [], {FLUX.endpoint_id: FLUX})  # a stale copy of the job
    assert late_estimate.estimated == 0
    final = store.get(job.job_id)
    assert final is not None
    assert final.cost == billed.cost


def test_a_billing_event_under_the_gateway_request_id_is_matched() -> None:
    store = InMemoryJobStore()
    job, _ = store.create(_job(gateway_request_id="gw-1"))
    tally = settle_costs(store, [job], [_event(request_id="gw-1")], {})
    assert tally.billed == 1
    stored = store.get(job.job_id)
    assert stored is not None
    assert stored.cost is not None
    assert stored.cost.currency == "USD"


def test_a_job_without_price_or_units_waits_for_its_billing_event() -> None:
    store = InMemoryJobStore()
    job, _ = store.create(_job(outputs=[]))
    unpriced, _ = store.create(_job("job-2", model="fal-ai/other", request_id="req-2"))
    tally = settle_costs(store, [job, unpriced], [], {FLUX.endpoint_id: FLUX})
    assert (tally.estimated, tally.waiting) == (0, 2)
    assert all(j is not None and j.cost is None for j in (store.get("job-1"), store.get("job-2")))
