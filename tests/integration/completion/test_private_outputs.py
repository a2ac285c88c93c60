"""Private outputs through the real webhook and store handlers (moto + the fal emulator): with the
fal account's default ACL ``forbid`` (anonymous reads answer 403) or ``hide`` (404), every job
still completes with its outputs in S3, read through fal's signed URLs (docs/fal-contract.md §4).
The same promise on the whole local stack is tests/e2e/test_private_outputs.py."""

from __future__ import annotations

import httpx
import pytest

from falflow.jobs import JobState
from falflow_tools.emulator import RunningEmulator
from tests.fixtures.completion import CompletionStackFactory
from tests.fixtures.fal_emulator import WebhookSink
from tests.integration.completion.helpers import EXPECTED_OUTPUTS, MODELS, send


@pytest.mark.parametrize(("decision", "anonymous_status"), [("forbid", 403), ("hide", 404)])
def test_every_job_completes_with_its_outputs_in_s3_when_fals_copies_are_private(
    completion_stack: CompletionStackFactory,
    fal_emulator: RunningEmulator,
    webhook_sink: WebhookSink,
    decision: str,
    anonymous_status: int,
) -> None:
    httpx.put(
        f"{fal_emulator.urls.api_url}/storage/settings",
        json={"initial_acl": {"default": decision}},
        headers={"Authorization": f"Key {fal_emulator.api_key}"},
    ).raise_for_status()
    stack = completion_stack(fal=fal_emulator)
    sent = [
        send(stack, fal_emulator, f"{decision}-{n}", model, model_input, webhook_base=webhook_sink.url)
        for n, (model, model_input) in enumerate(MODELS.items())
    ]

    for raw in webhook_sink.wait_for(len(sent)):
        job_id = raw.path.split("job_id=", 1)[1]
        assert stack.deliver(raw.body, raw.headers, job_id, base64_body=True) == 200
    while records := stack.outputs_messages(max_messages=5):
        assert stack.store(records) == []

    for job in sent:
        record = stack.job(job.job_id)
        assert record.state is JobState.COMPLETED, (job.job_id, record.error)
        assert len(record.outputs) == EXPECTED_OUTPUTS[job.model]
        for key in record.outputs:
            assert len(stack.s3_object(key)["body"]) > 0
        (view,) = [j for j in fal_emulator.control.jobs() if j.request_id == job.submission.request_id]
        assert view.lifecycle["initial_acl"]["default"] == decision
    signed_reads = [r for r in fal_emulator.control.requests() if r.path.endswith("/storage/files/sign")]
    assert len(signed_reads) == sum(EXPECTED_OUTPUTS[job.model] for job in sent)
    # fal's copies really are private: an anonymous read gets what the ACL says.
    anonymous = httpx.get(
        f"{fal_emulator.urls.cdn_url}/files/{sent[0].submission.request_id}/image-0.png"
    ).status_code
    assert anonymous == anonymous_status
