"""Which intake messages are a batch's, and a batch message that can never run is refused with why."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from falflow.aws.s3 import S3ObjectRef
from falflow.batches.model import BatchContinuation
from falflow.submit.batches.fanout import BatchFanOut, BatchManifest, BatchRefusedError
from falflow.submit.batches.intake import BatchIntake
from falflow.submit.sources import JobMessage, ObjectCreated

BUCKET = "in-bucket"


def intake() -> BatchIntake:
    return BatchIntake(cast(BatchFanOut, None), prefix="batches/", input_bucket=BUCKET)


def message(body: Any) -> JobMessage:
    return JobMessage(body=body if isinstance(body, str) else json.dumps(body), message_id="m-1")


def test_a_jsonl_object_under_the_prefix_is_a_manifest_and_others_are_jobs() -> None:
    found = intake().batch_source(ObjectCreated(S3ObjectRef(BUCKET, "batches/a.jsonl", "v1"), etag="e"))
    assert found == BatchManifest(object=S3ObjectRef(BUCKET, "batches/a.jsonl", "v1"), etag="e")
    assert intake().batch_source(ObjectCreated(S3ObjectRef(BUCKET, "batches/a.json", "v1"))) is None
    assert intake().batch_source(ObjectCreated(S3ObjectRef(BUCKET, "upscale/a.jsonl", "v1"))) is None


def test_batch_and_continuation_messages_are_told_from_job_messages() -> None:
    uri = f"s3://{BUCKET}/x/a.jsonl?versionId=v2"
    found = intake().batch_source(message({"batch": uri, "name": "spring", "budget_usd": 2.5}))
    assert found == BatchManifest(
        object=S3ObjectRef(BUCKET, "x/a.jsonl", "v2"), name="spring", budget_usd=2.5
    )
    assert intake().batch_source(message({"batch_continue": {"name": "spring", "line": 500}})) == (
        BatchContinuation("spring", 500)
    )
    line = {"model": "fal-ai/flux/dev", "input": {}, "batch": {"name": "b", "custom_id": "c", "line": 2}}
    assert intake().batch_source(message(line)) is None  # a line's job message is a job's
    assert intake().batch_source(message("not json, says the batch word")) is None


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"batch": "s3://someone-else/a.jsonl"}, "input bucket"),
        ({"batch": f"s3://{BUCKET}/a.jsonl", "defaults": {"input": {}}}, "defaults may set"),
        ({"batch": f"s3://{BUCKET}/a.jsonl", "name": "no spaces allowed"}, "name"),
        ({"batch": f"s3://{BUCKET}/a.jsonl", "surprise": 1}, "surprise"),
        ({"batch_continue": {"name": "spring"}}, "line"),
    ],
)
def test_a_batch_message_that_cannot_run_is_refused_with_the_reason(body: dict[str, Any], why: str) -> None:
    with pytest.raises(BatchRefusedError, match=why) as refused:
        intake().batch_source(message(body))
    assert refused.value.reason == "invalid_batch_message"
