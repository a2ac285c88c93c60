"""What fal may keep and do with a job (store_io, private outputs and their expiry, payload
deletion, fallbacks): a route's or a request's choice, else the stack's default; sent to fal as its
headers and kept on the job record (docs/fal-contract.md §2, §4)."""

from __future__ import annotations

import pytest

from falflow.fal.queue import OutputLifecycle
from falflow.submit.request import FalDefaults
from falflow.submit.service import SubmitOutcome
from tests.unit.submit.conftest import BUCKET, Harness, message

FAL_DEFAULT_BEHAVIOUR = {
    "store_io": True,
    "private_outputs": False,
    "output_expiry_seconds": None,
    "delete_payloads": False,
    "allow_fallbacks": False,
}


def job_options(harness: Harness, job_id: str | None) -> dict[str, object]:
    job = harness.job(job_id)
    return {name: getattr(job, name) for name in FAL_DEFAULT_BEHAVIOUR}


def test_without_a_choice_fal_keeps_payloads_and_may_not_reroute(harness: Harness) -> None:
    result = harness.service.submit_job(message({"model": "fal-ai/flux/dev", "input": {"prompt": "a"}}))

    (sent,) = harness.fal.submitted
    assert (sent.store_io, sent.allow_fallbacks) == (True, False)
    assert sent.lifecycle == OutputLifecycle()  # nothing to say: no lifecycle header
    assert job_options(harness, result.job_id) == FAL_DEFAULT_BEHAVIOUR


def test_a_route_makes_its_jobs_private_and_forgettable(harness: Harness) -> None:
    result = harness.service.submit_job(harness.drop("private/scan.png"))

    assert result.outcome is SubmitOutcome.SUBMITTED
    (sent,) = harness.fal.submitted
    assert sent.store_io is False
    assert sent.lifecycle == OutputLifecycle(initial_acl="forbid", expiration_duration_seconds=3600)
    assert sent.allow_fallbacks is True
    assert job_options(harness, result.job_id) == {
        "store_io": False,
        "private_outputs": True,
        "output_expiry_seconds": 3600,
        "delete_payloads": True,
        "allow_fallbacks": True,
    }


@pytest.mark.parametrize("request_says", [True, False])
def test_a_message_overrides_the_stack_default_either_way(request_says: bool) -> None:
    harness = Harness(fal_defaults=FalDefaults(store_io=not request_says, delete_payloads=not request_says))
    body = {
        "model": "fal-ai/flux/dev",
        "input": {"prompt": "a"},
        "store_io": request_says,
        "delete_payloads": request_says,
    }

    result = harness.service.submit_job(message(body))

    (sent,) = harness.fal.submitted
    assert sent.store_io is request_says
    job = harness.job(result.job_id)
    assert (job.store_io, job.delete_payloads) == (request_says, request_says)


def test_the_stack_default_applies_where_nobody_chose() -> None:
    harness = Harness(
        fal_defaults=FalDefaults(store_io=False, private_outputs=True, output_expiry_seconds=600)
    )

    result = harness.service.submit_job(message({"model": "fal-ai/flux/dev", "input": {"prompt": "a"}}))

    (sent,) = harness.fal.submitted
    assert sent.store_io is False
    assert sent.lifecycle == OutputLifecycle(initial_acl="forbid", expiration_duration_seconds=600)
    assert harness.job(result.job_id).private_outputs is True


@pytest.mark.parametrize("bad", [{"store_io": "no"}, {"output_expiry_seconds": 0}, {"allow_fallbacks": 1}])
def test_a_bad_option_rejects_the_job_with_its_reason(harness: Harness, bad: dict[str, object]) -> None:
    body = {"model": "fal-ai/flux/dev", "input": {"prompt": "a"}, "job_id": "bad-option", **bad}

    result = harness.service.submit_job(message(body))

    assert result.outcome is SubmitOutcome.REJECTED
    assert harness.fal.submitted == []
    job = harness.job("bad-option")
    assert job.error is not None
    assert next(iter(bad)) in job.error.message


def test_files_of_a_private_route_are_still_presigned_for_fal(harness: Harness) -> None:
    harness.service.submit_job(harness.drop("private/scan.png"))

    (sent,) = harness.fal.submitted
    assert str(sent.input["image_url"]).startswith(f"https://{BUCKET}.s3.amazonaws.com/private/scan.png")
