"""The local stack's short visibility timeouts keep template.yaml's ratios to timeouts and leases."""

from __future__ import annotations

import math

import pytest

from falflow.completion.finalise import DEFAULT_RECEIPT_WINDOW_S
from falflow_tools.local.schedules import rate_seconds
from falflow_tools.local.timings import (
    MIN_LOCAL_TIMEOUT_S,
    receipt_window_s,
    scaled_timings,
    template_consumers,
)
from falflow_tools.template import function_specs, load_template

CONSUMERS = {c.function: c for c in template_consumers(load_template())}
LEASED = {"SubmitFunction": "SUBMIT_LEASE_SECONDS", "StoreFunction": "STORE_LEASE_SECONDS"}


def test_the_template_is_read_for_every_queue_driven_function() -> None:
    read = {f: (c.queue, c.visibility_s, c.timeout_s, c.lease) for f, c in CONSUMERS.items()}
    assert read == {
        "StoreFunction": ("OutputsQueue", 5400, 900.0, ("STORE_LEASE_SECONDS", 960.0)),
        "SubmitFunction": ("IntakeQueue", 360, 60.0, ("SUBMIT_LEASE_SECONDS", 120.0)),
    }


VISIBILITIES = pytest.mark.parametrize(
    "visibility_s", [2, 4, 10, 30], ids=["e2e", "reliability", "demo", "local up"]
)


def _local(visibility_s: int, function: str) -> tuple[float, float, int]:
    """The function's local timeout, lease and visibility."""
    local = scaled_timings(CONSUMERS.values(), visibility_s)[function]
    return local.timeout_s, float(local.environment[LEASED[function]]), local.visibility_s


@VISIBILITIES
@pytest.mark.parametrize("function", sorted(LEASED))
def test_local_durations_keep_the_templates_ratios(visibility_s: int, function: str) -> None:
    intake, template = CONSUMERS["SubmitFunction"], CONSUMERS[function]
    timeout, lease, visibility = _local(visibility_s, function)
    _, template_lease = template.lease or ("", 0.0)

    # between queues, unless the function's lease needs a longer one
    in_ratio = round(template.visibility_s * visibility_s / intake.visibility_s)
    assert visibility == max(in_ratio, math.floor(lease) + 1)
    # the function's timeout : lease, as in the template, always: a live worker keeps its lease
    assert lease / timeout == pytest.approx(template_lease / template.timeout_s, rel=1e-3)
    # the template's order: no message comes back while its run may still work (Lambda requires
    # that of an SQS event source), and one whose worker died finds that worker's lease over
    assert MIN_LOCAL_TIMEOUT_S <= timeout < lease < visibility
    assert template.timeout_s < template_lease < template.visibility_s


@VISIBILITIES
@pytest.mark.parametrize("function", sorted(LEASED))
def test_above_the_floor_the_timeout_keeps_its_ratio_to_the_visibility(
    visibility_s: int, function: str
) -> None:
    template = CONSUMERS[function]
    timeout, lease, visibility = _local(visibility_s, function)
    in_ratio_timeout = template.timeout_s * visibility / template.visibility_s
    if in_ratio_timeout < MIN_LOCAL_TIMEOUT_S:  # the floor holds it, the lease rises with it
        assert timeout == MIN_LOCAL_TIMEOUT_S
        return
    # visibility : timeout as well, and what that is for: a killed run's lease is over before its
    # message comes back, so the redelivery takes the job over
    assert (timeout, lease < visibility) == (pytest.approx(in_ratio_timeout), True)


@pytest.mark.parametrize(
    ("visibility_s", "submit", "store"),
    [
        # the floor holds the submit's timeout (60 s : 360 s would be 0.33 s); its lease and its
        # queue's visibility rise with it
        (2, (41, 20.0, "40.000"), (30, 20.0, "21.333")),
        (4, (41, 20.0, "40.000"), (60, 20.0, "21.333")),
        (30, (41, 20.0, "40.000"), (450, 75.0, "80.000")),  # the store's 360 : 900 : 960 exactly
        (360, (360, 60.0, "120.000"), (5400, 900.0, "960.000")),  # the template's own
    ],
    ids=["e2e", "reliability", "local up", "template"],
)
def test_the_local_figures(
    visibility_s: int, submit: tuple[int, float, str], store: tuple[int, float, str]
) -> None:
    timings = scaled_timings(CONSUMERS.values(), visibility_s)
    for function, (visibility, timeout, lease) in {"SubmitFunction": submit, "StoreFunction": store}.items():
        local = timings[function]
        assert (local.visibility_s, local.timeout_s, local.environment[LEASED[function]]) == (
            visibility,
            pytest.approx(timeout),
            lease,
        )


@pytest.mark.parametrize(
    ("visibility_s", "backoff"),
    [(2, "0.167"), (4, "0.333"), (30, "2.500"), (360, "30.000")],
    ids=["e2e", "reliability", "local up", "template"],
)
def test_the_submits_retry_backoff_scales_with_the_queues_not_with_the_timeout_floor(
    visibility_s: int, backoff: str
) -> None:
    # The floor is about how long a run may take; how soon fal is asked again scales like the queues.
    local = scaled_timings(CONSUMERS.values(), visibility_s)
    assert dict(local["SubmitFunction"].environment) == {
        "SUBMIT_LEASE_SECONDS": "40.000" if visibility_s < 360 else "120.000",
        "SUBMIT_RETRY_BASE_SECONDS": backoff,
    }
    assert set(local["StoreFunction"].environment) == {"STORE_LEASE_SECONDS"}


def test_the_templates_receipt_window_outlasts_the_gap_between_two_reads_of_the_receipts() -> None:
    template = load_template()
    specs = function_specs(template)
    reconcile = specs["ReconcileFunction"]
    # the schedule's default rate (ReconcileSchedule); a slower one needs a longer window
    rate = rate_seconds(template["Parameters"]["ReconcileSchedule"]["Default"])
    assert rate is not None
    needed = receipt_window_s(rate, float(reconcile.timeout))
    for logical in ("StoreFunction", "ReconcileFunction"):
        window = float(
            specs[logical].environment.get("EVENT_RECEIPT_WINDOW_SECONDS", DEFAULT_RECEIPT_WINDOW_S)
        )
        assert window >= needed
    # the local stack's 3 s interval keeps the unscaled 300 s timeout in its window (a 1,000-job
    # run, whose reconcile runs took minutes, doubled an event with the window scaled to 9 s)
    assert receipt_window_s(3, float(reconcile.timeout)) >= 3 + reconcile.timeout
