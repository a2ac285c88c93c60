"""The local stack's short visibility timeouts keep template.yaml's ratios to timeouts and leases."""

from __future__ import annotations

import pytest

from falflow_tools.local.timings import scaled_timings, template_consumers
from falflow_tools.template import load_template

CONSUMERS = {c.function: c for c in template_consumers(load_template())}


def test_the_template_is_read_for_every_queue_driven_function() -> None:
    assert set(CONSUMERS) == {"SubmitFunction", "StoreFunction"}
    store = CONSUMERS["StoreFunction"]
    assert (store.queue, store.visibility_s, store.timeout_s) == ("OutputsQueue", 5400, 900.0)
    assert store.lease == ("STORE_LEASE_SECONDS", 960.0)
    assert CONSUMERS["SubmitFunction"].lease is None


@pytest.mark.parametrize("visibility_s", [2, 10, 30], ids=["e2e", "demo", "local up"])
def test_local_durations_keep_the_templates_ratios(visibility_s: int) -> None:
    timings = scaled_timings(CONSUMERS.values(), visibility_s)
    intake, outputs = CONSUMERS["SubmitFunction"], CONSUMERS["StoreFunction"]
    local_store = timings["StoreFunction"]
    local_lease = float(local_store.environment["STORE_LEASE_SECONDS"])
    _, template_lease = outputs.lease or ("", 0.0)

    assert timings["SubmitFunction"].visibility_s == visibility_s
    # between queues
    assert local_store.visibility_s / visibility_s == outputs.visibility_s / intake.visibility_s
    # the store's visibility : timeout : lease, as in the template
    assert local_store.visibility_s / local_store.timeout_s == pytest.approx(
        outputs.visibility_s / outputs.timeout_s
    )
    assert local_lease / local_store.timeout_s == pytest.approx(template_lease / outputs.timeout_s, rel=1e-3)
    # what those ratios are for: a live run keeps its lease, a killed run's lease is over before
    # its message comes back, so the redelivery takes the job over
    assert local_store.timeout_s < local_lease < local_store.visibility_s


def test_without_a_short_visibility_nothing_is_scaled() -> None:
    timings = scaled_timings(CONSUMERS.values(), 360)
    assert timings["StoreFunction"].visibility_s == 5400
    assert timings["StoreFunction"].timeout_s == 900.0
    assert timings["StoreFunction"].environment == {"STORE_LEASE_SECONDS": "960.000"}
