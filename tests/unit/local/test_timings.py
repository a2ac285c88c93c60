"""The local stack's short visibility timeouts keep template.yaml's ratios to timeouts and leases."""

from __future__ import annotations

import pytest

from falflow_tools.local.timings import MIN_LOCAL_TIMEOUT_S, scaled_timings, template_consumers
from falflow_tools.template import load_template

CONSUMERS = {c.function: c for c in template_consumers(load_template())}
LEASED = {"SubmitFunction": "SUBMIT_LEASE_SECONDS", "StoreFunction": "STORE_LEASE_SECONDS"}


def test_the_template_is_read_for_every_queue_driven_function() -> None:
    assert set(CONSUMERS) == {"SubmitFunction", "StoreFunction"}
    store = CONSUMERS["StoreFunction"]
    assert (store.queue, store.visibility_s, store.timeout_s) == ("OutputsQueue", 5400, 900.0)
    assert store.lease == ("STORE_LEASE_SECONDS", 960.0)
    submit = CONSUMERS["SubmitFunction"]
    assert (submit.queue, submit.visibility_s, submit.timeout_s) == ("IntakeQueue", 360, 60.0)
    assert submit.lease == ("SUBMIT_LEASE_SECONDS", 120.0)


@pytest.mark.parametrize("visibility_s", [2, 4, 10, 30], ids=["e2e", "reliability", "demo", "local up"])
@pytest.mark.parametrize("function", sorted(LEASED))
def test_local_durations_keep_the_templates_ratios(visibility_s: int, function: str) -> None:
    timings = scaled_timings(CONSUMERS.values(), visibility_s)
    intake, template = CONSUMERS["SubmitFunction"], CONSUMERS[function]
    local = timings[function]
    local_lease = float(local.environment[LEASED[function]])
    _, template_lease = template.lease or ("", 0.0)

    assert timings["SubmitFunction"].visibility_s == visibility_s
    # between queues
    assert local.visibility_s / visibility_s == template.visibility_s / intake.visibility_s
    # the function's timeout : lease, as in the template, always: a live worker keeps its lease
    assert local_lease / local.timeout_s == pytest.approx(template_lease / template.timeout_s, rel=1e-3)
    assert MIN_LOCAL_TIMEOUT_S <= local.timeout_s < local_lease
    in_ratio_timeout = template.timeout_s * local.visibility_s / template.visibility_s
    if in_ratio_timeout < MIN_LOCAL_TIMEOUT_S:  # the floor holds it, the lease rises with it
        assert local.timeout_s == MIN_LOCAL_TIMEOUT_S
    else:
        # visibility : timeout as well, and what that is for: a killed run's lease is over before
        # its message comes back, so the redelivery takes the job over
        assert local.timeout_s == pytest.approx(in_ratio_timeout)
        assert local_lease < local.visibility_s


@pytest.mark.parametrize(
    ("visibility_s", "submit", "store"),
    [
        # the floor holds the submit's timeout (60 s : 360 s would be 0.33 s); its lease rises with it
        (2, (2, 5.0, "10.000"), (30, 5.0, "5.333")),
        (30, (30, 5.0, "10.000"), (450, 75.0, "80.000")),  # 360 : 60 : 120 exactly
        (360, (360, 60.0, "120.000"), (5400, 900.0, "960.000")),  # the template's own
    ],
    ids=["e2e", "local up", "template"],
)
def test_the_local_figures(
    visibility_s: int, submit: tuple[int, float, str], store: tuple[int, float, str]
) -> None:
    timings = scaled_timings(CONSUMERS.values(), visibility_s)
    for function, (visibility, timeout, lease) in {"SubmitFunction": submit, "StoreFunction": store}.items():
        local = timings[function]
        assert (local.visibility_s, local.timeout_s, dict(local.environment)) == (
            visibility,
            pytest.approx(timeout),
            {LEASED[function]: lease},
        )
