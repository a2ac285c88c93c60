"""A submit whose reply is lost after fal queued the job (a reset, a read timeout, a proxy's 504),
with every webhook dropped: fal's request history settles it and fal runs the job once.

The ground truth is the emulator's own record of what it queued (`SubmitHarness.fal_jobs_for`).
The media drop is sent with a presigned S3 URL (SigV4, signed anew on every attempt), so the
request found in the history is matched by the object it names, not by the signature.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from falflow.jobs import JobState
from tests.integration.submit.conftest import SubmitHarness

ROUTES = {"upscale/": {"model": "fal-ai/clarity-upscaler", "input": {"image_url": "{file_url}"}}}
MESSAGE = {"job_id": "lost-reply", "model": "fal-ai/flux/dev", "input": {"prompt": "a reply lost"}}


@pytest.fixture
def submit_env() -> dict[str, str]:
    return {"ROUTES": json.dumps(ROUTES), "FAL_READ_TIMEOUT_S": "1"}


LOST_REPLIES: dict[str, dict[str, Any]] = {
    "reset after queueing": {"rate_reset_after": 1.0},
    "read timeout": {"rate_timeout": 1.0, "timeout_hold_s": 1.5},  # the client gives up after 1 s
    "proxy 504 after queueing": {"rate_proxy_504_after": 1.0},
}


@pytest.mark.parametrize("fault", LOST_REPLIES.values(), ids=LOST_REPLIES.keys())
def test_a_lost_reply_with_its_webhook_dropped_gives_exactly_one_fal_submission(
    submit: SubmitHarness, fault: dict[str, Any]
) -> None:
    # Both first submits lose their reply, and fal's webhooks never arrive.
    submit.fal.control.set_faults(submit={**fault, "max_faults": 2}, webhook={"drop_rate": 1.0})
    records = [submit.put("upscale/lost.png", b"\x89PNG lost", "image/png"), submit.record(MESSAGE)]

    delivery = submit.deliver(records)

    assert delivery.left == []
    assert delivery.rounds == 2  # the redelivery after the grace finds the requests, sends nothing
    jobs = submit.jobs()
    assert len(jobs) == 2
    for job in jobs:
        (fal_job,) = submit.fal_jobs_for(job.job_id)  # exactly one fal submission
        assert (job.state, job.request_id) == (JobState.SUBMITTED, fal_job.request_id)
        assert [entry.action for entry in job.trail] == ["submit_ambiguous", "found_in_request_history"]
        assert job.cancel_url is not None
        assert job.cancel_url.endswith(f"/requests/{fal_job.request_id}/cancel")
        assert job.duplicate_requests == []
    assert submit.dead_letters() == []


def test_an_ingress_5xx_with_fals_not_received_evidence_is_resent_at_once(submit: SubmitHarness) -> None:
    # nginx's 503 page without x-fal-request-id: fal's own client's evidence of "not received".
    submit.fal.control.set_faults(submit={"rate_503": 1.0, "max_faults": 1})

    delivery = submit.deliver([submit.record(MESSAGE)])

    assert delivery.rounds == 1  # no grace, no history: sent again within the same delivery
    sent = [request for request in submit.fal.control.requests() if request.group == "submit"]
    assert [request.fault for request in sent] == ["503", None]
    (fal_job,) = submit.fal_jobs_for(MESSAGE["job_id"])
    job = submit.job(MESSAGE["job_id"])
    assert (job.state, job.request_id) == (JobState.SUBMITTED, fal_job.request_id)
    assert job.trail == []
