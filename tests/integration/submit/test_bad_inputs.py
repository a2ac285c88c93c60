"""A table of bad inputs, all in the same batches as good ones: each ends as a clear REJECTED (never
sent) or FAILED (fal refused it) record, the message is consumed, the other records are unaffected.

The model catalogue is loaded (as the collect function writes it), so unknown and deprecated
models are refused before fal; a model the catalogue lists but fal does not have gets fal's 404.
This fal validates inputs when they are submitted (the emulator only does when a job runs), so a
422 comes back on the submit itself.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from falflow.aws.clients import aws_client
from falflow.aws.s3 import S3ObjectRef
from falflow.catalogue import CATALOGUE_PK, SNAPSHOT_SK
from falflow.jobs import JobState, isoformat, utcnow
from falflow.submit.sources import ObjectCreated, message_job_id, object_job_id
from falflow_tools.emulator import FalEmulator, RunningEmulator
from falflow_tools.emulator.app import build_app
from falflow_tools.emulator.catalogue import ModelError
from tests.integration.submit.conftest import SAMPLES, SubmitHarness, sample

ROUTES = {
    "upscale/": {"model": "fal-ai/clarity-upscaler", "input": {"image_url": "{file_url}"}, "max_bytes": 1000},
}
CATALOGUE = {
    "fal-ai/flux/dev": "active",
    "fal-ai/clarity-upscaler": "active",
    "fal-ai/fast-sdxl": "deprecated",
    "fal-ai/ghost": "active",  # listed, but fal has no such app any more
}
FLUX = {"model": "fal-ai/flux/dev", "input": {"prompt": "a good one"}}


class ValidatesOnSubmit:
    """In front of the emulator: a queue submit whose input the model refuses is answered 422 with
    the model's own detail, before it is queued."""

    def __init__(self, app: ASGIApp, emulator: FalEmulator) -> None:
        self._app = app
        self._emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/queue/"):
            await self._app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        model = self._emulator.catalogue.get(scope["path"].removeprefix("/queue/"))
        if model is not None:
            try:
                model.validate_input(json.loads(body))
            except ModelError as error:
                await _json(send, 422, {"detail": error.detail})
                return
        await self._app(scope, _replay(body), send)


def _replay(body: bytes) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _json(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def submit_fal() -> Iterator[RunningEmulator]:
    emulator = FalEmulator()
    running = RunningEmulator(emulator, app=ValidatesOnSubmit(build_app(emulator), emulator))
    yield running
    running.stop()


@pytest.fixture
def submit_env() -> dict[str, str]:
    return {"ROUTES": json.dumps(ROUTES)}


@pytest.fixture
def loaded_catalogue(submit: SubmitHarness) -> None:
    table = submit.stack.tables["UsageTable"]
    dynamodb = aws_client("dynamodb")
    for endpoint_id, status in CATALOGUE.items():
        dynamodb.put_item(
            TableName=table,
            Item={"pk": {"S": CATALOGUE_PK}, "sk": {"S": endpoint_id}, "status": {"S": status}},
        )
    dynamodb.put_item(
        TableName=table,
        Item={"pk": {"S": CATALOGUE_PK}, "sk": {"S": SNAPSHOT_SK}, "taken_at": {"S": isoformat(utcnow())}},
    )


@dataclass(frozen=True)
class Row:
    record: dict[str, Any]
    job_id: str
    state: JobState
    error_type: str | None = None
    says: str = ""


def _table(submit: SubmitHarness) -> list[Row]:
    bad_body = sample("sqs-bad-message.json")["Records"][0]["body"]
    document = json.loads((SAMPLES / "job-document.json").read_text())
    missing = {**document, "files": {"image_url": f"s3://{submit.bucket}/uploads/nowhere.png"}}

    def message(body: dict[str, Any]) -> dict[str, Any]:
        return submit.record(body)

    def dropped(key: str, size: int) -> tuple[dict[str, Any], str]:
        record = submit.put(key, b"x" * size, "image/png")
        obj = json.loads(record["body"])["Records"][0]["s3"]["object"]
        created = ObjectCreated(S3ObjectRef(submit.bucket, key, obj["versionId"]), etag=obj["eTag"])
        return record, object_job_id(created)

    unrouted, unrouted_id = dropped("misc/cat.png", 10)
    too_large, too_large_id = dropped("upscale/huge.png", 1001)
    fine_drop, fine_drop_id = dropped("upscale/small.png", 10)
    invalid = {"model": "fal-ai/flux/dev", "input": {"prompt": "x", "num_images": 99}, "job_id": "fal-422"}
    return [
        Row(message({**FLUX, "job_id": "good-1"}), "good-1", JobState.SUBMITTED),
        Row(message(bad_body), message_job_id(bad_body), JobState.REJECTED, "malformed_json", "not JSON"),
        Row(
            message({"model": "fal-ai/flux/dev", "input": "a cat", "job_id": "types"}),
            "types",
            JobState.REJECTED,
            "invalid_request",
            "input: Input should be a valid dictionary",
        ),
        Row(
            message({**FLUX, "job_id": "extra", "webhook_url": "https://x"}),
            "extra",
            JobState.REJECTED,
            "invalid_request",
            "webhook_url: Extra inputs are not permitted",
        ),
        Row(unrouted, unrouted_id, JobState.REJECTED, "unknown_route", "misc/cat.png"),
        Row(
            message({**missing, "job_id": "missing"}),
            "missing",
            JobState.REJECTED,
            "input_file_missing",
            "nowhere",
        ),
        Row(too_large, too_large_id, JobState.REJECTED, "input_file_too_large", "1001 bytes"),
        Row(
            message({"model": "fal-ai/unheard-of", "input": {}, "job_id": "unknown"}),
            "unknown",
            JobState.REJECTED,
            "unknown_model",
            "does not list 'fal-ai/unheard-of'",
        ),
        Row(
            message({"model": "fal-ai/fast-sdxl", "input": {"prompt": "x"}, "job_id": "old"}),
            "old",
            JobState.REJECTED,
            "deprecated_model",
            "deprecated",
        ),
        Row(
            message({"model": "fal-ai/ghost", "input": {}, "job_id": "ghost"}),
            "ghost",
            JobState.FAILED,
            "unknown_model",
            "404",
        ),
        Row(message(invalid), "fal-422", JobState.FAILED, "fal_validation_error", "num_images"),
        Row(fine_drop, fine_drop_id, JobState.SUBMITTED),
    ]


@pytest.mark.usefixtures("loaded_catalogue")
def test_bad_inputs_end_as_clear_records_and_leave_the_rest_of_the_batch_alone(submit: SubmitHarness) -> None:
    rows = _table(submit)
    first, second = rows[:10], rows[10:]  # SQS batches hold at most 10 messages

    responses = [submit.invoke([row.record for row in batch]) for batch in (first, second)]

    assert responses == [{"batchItemFailures": []}] * 2  # every message consumed on its first receive
    for row in rows:
        job = submit.job(row.job_id)
        assert job.state is row.state, (row.job_id, job.error)
        if row.error_type is None:
            assert job.error is None
            (fal_job,) = submit.fal_jobs_for(row.job_id)
            assert fal_job.request_id == job.request_id
            continue
        assert job.error is not None
        assert (job.error.type, row.says in job.error.message) == (row.error_type, True), job.error
        assert job.request_id is None
        assert job.expires_at is not None
    # Only the good jobs were queued by fal; the refused ones were answered and never queued.
    assert sorted(job.request_id for job in submit.fal.control.jobs()) == sorted(
        submit.job(row.job_id).request_id or "" for row in rows if row.state is JobState.SUBMITTED
    )
    refused = submit.job("fal-422").error
    assert refused is not None
    assert refused.detail == [
        {
            "loc": ["body", "num_images"],
            "msg": "input should be less than or equal to 4",
            "type": "less_than_equal",
        }
    ]
