"""The Lambda edge: intake messages to sources, and a batch through SubmitApp (partial failures,
concurrency, dead-lettering, metrics, logs) with the domain on in-memory fakes."""

from __future__ import annotations

import copy
import io
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from falflow.aws.dead_letter import (
    ERROR_MESSAGE_ATTRIBUTE,
    ERROR_TYPE_ATTRIBUTE,
    JOB_IDS_ATTRIBUTE,
    DeadLetterPolicy,
)
from falflow.aws.s3 import S3ObjectRef
from falflow.fal import FalRateLimitedError, FalTransportError
from falflow.jobs import JobState
from falflow.submit import service as service_module
from falflow.submit.app import SubmitApp, correlate_logs, metrics, sources_from_body
from falflow.submit.sources import JobMessage, ObjectCreated
from tests.unit.submit.conftest import Harness
from tests.unit.submit.fakes import Lost

EVENTS = Path(__file__).resolve().parents[3] / "events" / "submit"
FLUX = {"model": "fal-ai/flux/dev", "input": {"prompt": "a private prompt"}}


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def body_of(name: str) -> str:
    body: str = sample(name)["Records"][0]["body"]
    return body


def s3_body(key: str, *, event_name: str = "ObjectCreated:Put", version_id: str | None = None) -> str:
    notification = json.loads(body_of("sqs-s3-put.json"))
    record = notification["Records"][0]
    record["eventName"] = event_name
    record["s3"]["object"]["key"] = key
    if version_id:
        record["s3"]["object"]["versionId"] = version_id
    return json.dumps(notification)


# ------------------------------------------------------------------------------- parsing


def test_the_sam_s3_put_sample_becomes_one_object_with_its_key_decoded() -> None:
    (source,) = sources_from_body(body_of("sqs-s3-put.json"), message_id="m")
    assert source == ObjectCreated(
        object=S3ObjectRef("falflow-inputbucket", "upscale/holiday photo (1).png"),
        etag="0123456789abcdef0123456789abcdef",
        size=1024,
    )


def test_s3_key_encoding_is_undone_and_the_version_id_kept() -> None:
    # S3 encodes a space as "+" and a plus as "%2B".
    (source,) = sources_from_body(s3_body("upscale/a+b%2Bc%C3%A9.png", version_id="3HL4kqtJ"), message_id="m")
    assert isinstance(source, ObjectCreated)
    assert source.object == S3ObjectRef("falflow-inputbucket", "upscale/a b+cé.png", "3HL4kqtJ")


def test_s3_test_events_and_other_s3_events_carry_no_job() -> None:
    assert sources_from_body(body_of("sqs-s3-test-event.json"), message_id="m") == []
    assert (
        sources_from_body(s3_body("upscale/a.png", event_name="ObjectRemoved:Delete"), message_id="m") == []
    )


@pytest.mark.parametrize(
    "name", ["sqs-job-message.json", "sqs-bad-message.json"], ids=["job message", "malformed message"]
)
def test_anything_else_is_a_job_message_for_the_domain_to_judge(name: str) -> None:
    body = body_of(name)
    assert sources_from_body(body, message_id="m-9") == [JobMessage(body=body, message_id="m-9")]


def test_records_that_are_not_s3_are_a_job_message() -> None:
    body = json.dumps({"Records": [{"eventSource": "aws:sns", "eventName": "x", "s3": {}}]})
    assert sources_from_body(body, message_id="m") == [JobMessage(body=body, message_id="m")]


# ------------------------------------------------------------------------------ the batch


@dataclass
class FakeSqs:
    sent: list[dict[str, Any]] = field(default_factory=list)
    visibility: dict[str, int] = field(default_factory=dict)  # by receipt handle

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {"MessageId": "dlq-1"}

    def change_message_visibility(self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int) -> None:
        self.visibility[ReceiptHandle] = VisibilityTimeout


@dataclass
class Batch:
    harness: Harness
    sqs: FakeSqs
    app: SubmitApp


@pytest.fixture
def batch(harness: Harness) -> Batch:
    sqs = FakeSqs()
    app = SubmitApp(
        harness.service,
        store=harness.store,
        dead_letter=DeadLetterPolicy(dlq_url="https://sqs.local/dlq", max_receives=3),
        concurrency=10,
        sqs=lambda: sqs,
    )
    metrics.clear_metrics()
    return Batch(harness, sqs, app)


def sqs_event(bodies: list[str], *, receive_count: int = 1) -> dict[str, Any]:
    template = sample("sqs-job-message.json")["Records"][0]
    records = []
    for index, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record.update(messageId=f"msg-{index}", body=body)
        record["attributes"]["ApproximateReceiveCount"] = str(receive_count)
        records.append(record)
    return {"Records": records}


def test_only_the_records_to_retry_are_reported(batch: Batch) -> None:
    batch.harness.fal.failures["fal-ai/busy"] = FalRateLimitedError("busy", status=429, retryable=True)
    event = sqs_event(
        [
            json.dumps(FLUX),
            body_of("sqs-bad-message.json"),
            json.dumps({"model": "fal-ai/busy", "input": {}}),
            body_of("sqs-s3-test-event.json"),
        ]
    )

    response = batch.app.handle(event)

    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-2"}]}
    states = sorted(job.state.value for state in JobState for job in batch.harness.store.list_by_state(state))
    assert states == ["ACCEPTED", "REJECTED", "SUBMITTED"]
    assert batch.sqs.sent == []


def test_the_records_of_a_batch_are_submitted_concurrently(batch: Batch) -> None:
    # Every submit waits until all ten are in flight: a sequential loop would break the barrier.
    batch.harness.fal.barrier = threading.Barrier(10, timeout=5)
    bodies = [json.dumps({**FLUX, "input": {"prompt": f"p{n}"}}) for n in range(10)]

    response = batch.app.handle(sqs_event(bodies))

    assert response == {"batchItemFailures": []}
    assert len(batch.harness.fal.submitted) == 10


# (Receive 3 is the last here: that one goes to the DLQ.)
@pytest.mark.parametrize(("receive_count", "backoff_s"), [(1, 30), (2, 60)])
def test_a_message_fal_did_not_take_backs_off_doubling_with_each_receive(
    batch: Batch, receive_count: int, backoff_s: int
) -> None:
    batch.harness.fal.failures["fal-ai/busy"] = FalRateLimitedError("busy", status=429, retryable=True)
    event = sqs_event([json.dumps({"model": "fal-ai/busy", "input": {}})], receive_count=receive_count)

    assert batch.app.handle(event) == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}

    (record,) = event["Records"]
    assert batch.sqs.visibility == {record["receiptHandle"]: backoff_s}


def test_a_failure_on_the_last_receive_goes_to_the_dlq_with_its_reason(batch: Batch) -> None:
    batch.harness.fal.failures["fal-ai/busy"] = FalRateLimitedError(
        "rate limited by fal (429)", status=429, retryable=True
    )
    body = json.dumps({"model": "fal-ai/busy", "input": {}, "job_id": "busy-1"})

    response = batch.app.handle(sqs_event([body], receive_count=3))

    assert response == {"batchItemFailures": []}  # consumed: it is in the DLQ now
    (sent,) = batch.sqs.sent
    assert sent["QueueUrl"] == "https://sqs.local/dlq"
    assert sent["MessageBody"] == body
    attributes = sent["MessageAttributes"]
    assert attributes[ERROR_TYPE_ATTRIBUTE]["StringValue"] == "SubmitRetryLaterError"
    assert "rate limited by fal (429)" in attributes[ERROR_MESSAGE_ATTRIBUTE]["StringValue"]
    # the job it was for: the reconciler's sweep removes the entry once the job completes
    assert json.loads(attributes[JOB_IDS_ATTRIBUTE]["StringValue"]) == ["busy-1"]
    job = batch.harness.job("busy-1")
    assert job.state is JobState.ACCEPTED
    assert job.trail[-1].action == "dead_lettered"


def test_a_message_reusing_a_job_id_for_other_work_is_dead_lettered_at_once(batch: Batch) -> None:
    first = json.dumps({**FLUX, "job_id": "order-1"})
    reuse = json.dumps({**FLUX, "input": {"prompt": "another"}, "job_id": "order-1"})
    batch.app.handle(sqs_event([first]))

    response = batch.app.handle(sqs_event([reuse]))  # its first receive: no retries for this

    assert response == {"batchItemFailures": []}  # consumed: it is in the DLQ
    (sent,) = batch.sqs.sent
    assert sent["MessageBody"] == reuse
    assert sent["MessageAttributes"][ERROR_TYPE_ATTRIBUTE]["StringValue"] == "job_id_conflict"
    assert "order-1" in sent["MessageAttributes"][ERROR_MESSAGE_ATTRIBUTE]["StringValue"]
    # not order-1's message: it names no job, so no sweep removes it when order-1 completes
    assert JOB_IDS_ATTRIBUTE not in sent["MessageAttributes"]
    assert metrics.metric_set["JobIdConflicts"]["Value"] in (1, [1.0], 1.0)
    job = batch.harness.job("order-1")
    assert job.state is JobState.SUBMITTED
    assert job.input == {"prompt": "a private prompt"}
    assert [entry.action for entry in job.trail] == ["job_id_conflict"]
    assert len(batch.harness.fal.submitted) == 1


def test_a_last_receive_waiting_on_a_job_its_record_holds_is_consumed_not_dead_lettered(
    batch: Batch,
) -> None:
    # fal queued the job and the reply was lost: the record holds it for fal's webhook (or the
    # reconciler's re-drive), so the message's last receive must not leave it in the DLQ.
    batch.harness.fal.replies = [Lost(FalTransportError("connection reset", ambiguous=True))]
    body = json.dumps({**FLUX, "job_id": "lost-1"})
    assert batch.app.handle(sqs_event([body])) == {"batchItemFailures": [{"itemIdentifier": "msg-0"}]}

    response = batch.app.handle(sqs_event([body], receive_count=3))

    assert response == {"batchItemFailures": []}
    assert batch.sqs.sent == []
    job = batch.harness.job("lost-1")
    assert job.state is JobState.ACCEPTED
    assert job.submit_ambiguous_at is not None  # waiting, visibly, with its reason
    assert job.trail[-1].action == "message_consumed"
    assert "reconciler" in job.trail[-1].reason


def test_metrics_count_each_outcome_and_the_fal_latency(batch: Batch) -> None:
    batch.app.handle(sqs_event([json.dumps(FLUX), body_of("sqs-bad-message.json")]))
    batch.app.handle(sqs_event([json.dumps(FLUX)]))  # delivered again, later

    counted = {
        name: sum(entry["Value"]) if isinstance(entry["Value"], list) else entry["Value"]
        for name, entry in metrics.metric_set.items()
    }
    assert counted["JobsAccepted"] == 1
    assert counted["JobsSubmitted"] == 1
    assert counted["JobsRejected"] == 1
    assert counted["DuplicateDeliveries"] == 1
    assert counted["IntakeMessages"] == 3
    assert metrics.metric_set["SubmitLatency"]["Unit"] == "Milliseconds"


def test_logs_carry_the_job_id_as_correlation_id_and_no_payload(harness: Harness) -> None:
    # The service logs through a child of the function's logger; read what that logger writes.
    function_logger = Logger(service=service_module.logger.service)
    handler = function_logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    harness.correlate = correlate_logs(function_logger)
    app = SubmitApp(
        harness.service,
        store=harness.store,
        dead_letter=DeadLetterPolicy(dlq_url="https://sqs.local/dlq", max_receives=3),
        concurrency=4,
        log_keys=function_logger,
    )
    buffer = io.StringIO()
    previous = handler.setStream(buffer)
    try:
        app.handle(sqs_event([json.dumps(FLUX), json.dumps({**FLUX, "input": {"prompt": "another"}})]))
    finally:
        handler.setStream(previous)  # type: ignore[arg-type]

    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    submitted = [line for line in lines if line.get("message") == "job submitted to fal"]
    jobs = {job.job_id: job for job in harness.store.list_by_state(JobState.SUBMITTED)}
    assert len(submitted) == 2
    for line in submitted:
        assert line["correlation_id"] == line["job_id"]
        assert jobs[line["job_id"]].request_id == line["request_id"]
    assert {line["message_id"] for line in submitted} == {"msg-0", "msg-1"}
    assert "a private prompt" not in buffer.getvalue()
