"""Real fal, not only our emulator's defaults: private outputs, Store-IO and payload deletion on
the local stack, over loopback HTTP (docs/fal-contract.md §4).

With the emulated account's default ACL ``forbid`` (an anonymous read answers 403) or ``hide``
(404, as if missing), every job must still COMPLETE with its outputs in S3: the store reads fal's
private files through ``POST /v1/storage/files/sign``."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from falflow.jobs import JobState
from falflow_tools.emulator import RunningEmulator
from falflow_tools.emulator.media import render_png
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.submit import drop_file, job_message, send_message
from falflow_tools.ops.target import Target
from tests.e2e.conftest import read_events, wait_for_job

pytestmark = pytest.mark.e2e


@pytest.fixture
def fal(stack: LocalStack) -> Iterator[RunningEmulator]:
    assert stack.emulator is not None
    yield stack.emulator
    set_account_default(stack.emulator, None)  # the stack is shared: back to fal's public default


def set_account_default(fal: RunningEmulator, decision: str | None) -> None:
    body = {"initial_acl": {"default": decision}} if decision else {}
    response = httpx.put(
        f"{fal.urls.api_url}/storage/settings", json=body, headers={"Authorization": f"Key {fal.api_key}"}
    )
    response.raise_for_status()


def s3_body(stack: LocalStack, key: str) -> bytes:
    found = stack.s3().get_object(Bucket=stack.outputs()["OutputBucketName"], Key=key)
    body: bytes = found["Body"].read()
    return body


@pytest.mark.parametrize(("decision", "anonymous_status"), [("forbid", 403), ("hide", 404)])
def test_with_private_outputs_by_default_every_job_still_completes_with_its_outputs_in_s3(
    stack: LocalStack, target: Target, fal: RunningEmulator, decision: str, anonymous_status: int
) -> None:
    set_account_default(fal, decision)

    sent = send_message(
        target, job_message("fal-ai/flux/dev", {"prompt": f"{decision} lighthouses", "num_images": 2})
    )
    dropped = drop_file(
        target, render_png(32, 32, 1), key=f"upscale/e2e/{decision}.png", content_type="image/png"
    )
    jobs = [wait_for_job(target, sent.job_id), wait_for_job(target, dropped.job_id)]

    assert [job.state for job in jobs] == [JobState.COMPLETED, JobState.COMPLETED]
    assert [len(job.outputs) for job in jobs] == [2, 1]
    for key in (key for job in jobs for key in job.outputs):
        assert s3_body(stack, key).startswith(b"\x89PNG\r\n\x1a\n")
    # fal's copies really were private: an anonymous read is refused as the ACL says.
    request_ids = {job.request_id for job in jobs}
    files = [
        f"{fal.urls.cdn_url}/files/{served.request_id}/{served.name}"
        for served in fal.control.served_files()
        if served.request_id in request_ids
    ]
    assert len(files) == 2 + 1
    assert {httpx.get(url).status_code for url in files} == {anonymous_status}
    for job in jobs:
        (event,) = read_events(stack, job.job_id)
        assert event["detail-type"] == "Job Completed"


def test_a_job_that_asks_fal_to_keep_nothing_completes_and_fal_forgets_it(
    stack: LocalStack, target: Target, fal: RunningEmulator
) -> None:
    message = job_message("fal-ai/flux/dev", {"prompt": "forget me"}, job_id="e2e-forgettable")
    message.update({"store_io": False, "private_outputs": True, "delete_payloads": True})

    job = wait_for_job(target, send_message(target, message).job_id)

    assert job.state is JobState.COMPLETED
    assert job.store_io is False
    assert job.payloads_deleted_at is not None
    (output,) = job.outputs
    assert s3_body(stack, output).startswith(b"\x89PNG")
    (seen,) = [j for j in fal.control.jobs() if j.request_id == job.request_id]
    assert (seen.store_io, seen.payloads_deleted, seen.lifecycle["initial_acl"]["default"]) == (
        False,
        True,
        "forbid",
    )
    assert not seen.fallbacks_allowed  # falflow's default: fal may not reroute the job
