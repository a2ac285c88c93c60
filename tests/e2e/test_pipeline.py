"""The whole pipeline on the local stack, over loopback HTTP: every path a job can take."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from falflow.jobs import Job, JobState, isoformat, utcnow
from falflow_tools.emulator.media import png_dimensions, render_png
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.submit import drop_file, job_message, send_message
from falflow_tools.ops.target import Target
from tests.e2e.conftest import RECONCILE_AFTER_S, read_events, wait_for_job

pytestmark = pytest.mark.e2e


def get_object(stack: LocalStack, key: str) -> tuple[bytes, str]:
    found = stack.s3().get_object(Bucket=stack.outputs()["OutputBucketName"], Key=key)
    return found["Body"].read(), found["ContentType"]


def test_an_s3_media_drop_ends_with_its_output_stored_and_announced(
    stack: LocalStack, target: Target
) -> None:
    picture = render_png(96, 64, 2)
    dropped = drop_file(target, picture, key="upscale/e2e/cat photo.png", content_type="image/png")

    job = wait_for_job(target, dropped.job_id)

    assert job.state == JobState.COMPLETED
    assert job.source_kind == "s3_media"
    assert job.model == "fal-ai/clarity-upscaler"
    assert job.source.startswith(
        f"s3://{stack.outputs()['InputBucketName']}/upscale/e2e/cat photo.png?versionId="
    )
    assert job.completion_source == "webhook"
    (output,) = job.outputs
    assert output.startswith(f"outputs/{job.job_id}/")
    data, content_type = get_object(stack, output)
    assert content_type == "image/png"
    # The emulator's upscaler doubles the picture it fetched through the presigned S3 URL.
    assert png_dimensions(data[:32]) == (192, 128)
    assert job.result_key is not None
    result = json.loads(get_object(stack, job.result_key)[0])
    assert output in json.dumps(result)
    (event,) = read_events(stack, job.job_id)
    assert event["source"] == "falflow"
    assert event["detail-type"] == "Job Completed"
    assert event["detail"]["outputs"] == [output]


def test_an_sqs_job_message_ends_completed_with_every_output(stack: LocalStack, target: Target) -> None:
    sent = send_message(
        target,
        job_message(
            "fal-ai/flux/dev",
            {"prompt": "two lighthouses", "num_images": 2},
            metadata={"order": 42},
            output_prefix="e2e/sqs",
        ),
    )

    job = wait_for_job(target, sent.job_id)

    assert job.state == JobState.COMPLETED
    assert job.source == f"sqs:{sent.reference}"
    assert len(job.outputs) == 2
    assert all(key.startswith(f"outputs/e2e/sqs/{job.job_id}/") for key in job.outputs)
    for key in job.outputs:
        data, content_type = get_object(stack, key)
        assert content_type == "image/png"
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
    (event,) = read_events(stack, job.job_id)
    assert event["detail"]["metadata"] == {"order": 42}
    assert event["detail"]["status"] == "COMPLETED"


def test_the_same_message_twice_is_one_job_and_one_fal_request(stack: LocalStack, target: Target) -> None:
    assert stack.emulator is not None
    message = job_message("fal-ai/flux/dev", {"prompt": "a duplicate delivery"}, job_id="e2e-duplicate")

    first = send_message(target, message)
    second = send_message(target, message)
    job = wait_for_job(target, first.job_id)

    assert first.job_id == second.job_id == "e2e-duplicate"
    assert job.state == JobState.COMPLETED
    time.sleep(1.0)  # let the second message pass through the submit function too
    sent_to_fal = [
        j for j in stack.emulator.control.jobs() if "job_id=e2e-duplicate" in (j.webhook_url or "")
    ]
    assert [j.request_id for j in sent_to_fal] == [job.request_id]


def test_a_job_document_dropped_under_the_jobs_prefix_is_a_job(stack: LocalStack, target: Target) -> None:
    document = {"model": "fal-ai/stable-audio", "input": {"prompt": "rain", "seconds_total": 2}}
    dropped = drop_file(target, json.dumps(document).encode(), key="jobs/e2e-rain.json")

    job = wait_for_job(target, dropped.job_id)

    assert job.state == JobState.COMPLETED
    assert job.source_kind == "s3_document"
    data, content_type = get_object(stack, job.outputs[0])
    assert content_type.startswith("audio/")
    assert data[:4] == b"RIFF"


def test_the_webhook_goes_through_the_front_door_and_only_signed_deliveries_count(
    stack: LocalStack, target: Target
) -> None:
    assert stack.emulator is not None
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "signed"}))
    job = wait_for_job(target, sent.job_id)
    assert job.request_id is not None
    deliveries = [d for d in stack.emulator.control.webhooks() if d.request_id == job.request_id]
    assert deliveries
    assert deliveries[0].url.startswith(f"{stack.front_door.url}/webhooks/fal?job_id=")
    assert deliveries[0].status_code == 200

    # A delivery with a body that is not the one signed is refused, and changes nothing.
    body = json.dumps(
        {"request_id": job.request_id, "status": "ERROR", "payload": {"detail": "forged"}}
    ).encode()
    keys, user = stack.emulator.emulator.keys, stack.emulator.user_id
    timestamp = str(int(time.time()))
    signature = keys.sign(job.request_id, user, timestamp, b'{"something": "else"}')
    headers = {
        "content-type": "application/json",
        "x-fal-webhook-request-id": job.request_id,
        "x-fal-webhook-user-id": user,
        "x-fal-webhook-timestamp": timestamp,
        "x-fal-webhook-signature": signature,
    }
    forged = httpx.post(
        stack.outputs()["WebhookUrl"], params={"job_id": job.job_id}, content=body, headers=headers
    )
    unsigned = httpx.post(stack.outputs()["WebhookUrl"], params={"job_id": job.job_id}, content=body)

    assert forged.status_code == 401
    assert unsigned.status_code in (400, 401)
    after = target.job_store().get(job.job_id)
    assert after is not None
    assert after.state == JobState.COMPLETED
    assert after.outputs == job.outputs


def test_a_validly_signed_delivery_posted_to_another_jobs_url_is_refused(
    stack: LocalStack, target: Target
) -> None:
    assert stack.emulator is not None
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "j1"}))
    j1 = wait_for_job(target, sent.job_id)
    (delivered, *_) = [d for d in stack.emulator.control.webhooks() if d.request_id == j1.request_id]
    # J3: a job whose submit reply was lost (no request id yet, held for fal's webhook), its id
    # known or guessed.
    store, now = target.job_store(), utcnow()
    held = isoformat(now + timedelta(hours=1))
    store.create(
        Job.new(
            "e2e-j3",
            source="sqs:j3",
            source_kind="sqs",
            now=now,
            model="fal-ai/flux/dev",
            submit_lease_until=held,
        )
    )
    j1_query = parse_qs(urlsplit(delivered.url).query)
    body = json.dumps({"request_id": j1.request_id, "status": "OK", "payload": {"images": []}}).encode()
    keys, user, timestamp = stack.emulator.emulator.keys, stack.emulator.user_id, str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "x-fal-webhook-request-id": str(j1.request_id),
        "x-fal-webhook-user-id": user,
        "x-fal-webhook-timestamp": timestamp,
        "x-fal-webhook-signature": keys.sign(str(j1.request_id), user, timestamp, body),
    }

    answers = [
        httpx.post(stack.outputs()["WebhookUrl"], params=params, content=body, headers=headers).status_code
        for params in ({"job_id": "e2e-j3"}, {"job_id": "e2e-j3", "token": j1_query["token"][0]})
    ]

    assert answers == [403, 403]
    j3 = store.get("e2e-j3")
    assert j3 is not None
    assert (j3.state, j3.request_id, j3.trail) == (JobState.ACCEPTED, None, [])


def test_the_reconciler_finishes_a_job_whose_webhook_never_came(
    stack: LocalStack, target: Target, fal_faults: Any
) -> None:
    assert stack.emulator is not None
    fal_faults(webhook={"drop_rate": 1.0})
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "nobody calls back"}))
    job = wait_for_job(target, sent.job_id, {JobState.SUBMITTED, JobState.IN_PROGRESS})
    assert job.request_id is not None
    deadline = time.monotonic() + 10
    while stack.emulator.control.job(job.request_id).status != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(RECONCILE_AFTER_S)  # until the job counts as silent
    assert target.job_store().get(job.job_id).state in (JobState.SUBMITTED, JobState.IN_PROGRESS)  # type: ignore[union-attr]

    run = stack.run_schedule("ReconcileFunction")

    assert run.ok, run.error
    done = wait_for_job(target, job.job_id)
    assert done.state == JobState.COMPLETED
    assert done.completion_source == "reconcile"
    assert done.outputs
    assert all(d.outcome == "dropped" for d in stack.emulator.control.job(job.request_id).deliveries)


def test_the_collect_run_prices_jobs_and_stores_usage(stack: LocalStack, target: Target) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "priced"}))
    job = wait_for_job(target, sent.job_id)
    assert job.cost is None

    run = stack.run_schedule("CollectFunction")

    assert run.ok, run.error
    priced = target.job_store().get(job.job_id)
    assert priced is not None
    assert priced.cost is not None
    assert priced.cost.source == "billing_event"
    assert priced.cost.amount > 0
    usage_table = stack.outputs()["UsageTableName"]
    items = stack.dynamodb().scan(TableName=usage_table)["Items"]
    partitions = {item["pk"]["S"].split("#", 1)[0] for item in items}
    assert {"USAGE", "PRICE", "CATALOGUE", "RUN"} <= partitions
    snapshots = stack.s3().list_objects_v2(Bucket=stack.outputs()["OutputBucketName"], Prefix="collect/")
    assert snapshots.get("KeyCount", 0) > 0


def test_a_model_fal_refuses_ends_failed_with_falls_reason(stack: LocalStack, target: Target) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "x", "num_images": 9}))

    job = wait_for_job(target, sent.job_id)

    assert job.state in (JobState.FAILED, JobState.REJECTED)
    assert job.error is not None
    assert "num_images" in json.dumps(job.error.model_dump())


def test_a_message_that_fails_every_try_lands_in_the_dlq_with_its_reason(
    stack: LocalStack, target: Target, fal_faults: Any
) -> None:
    fal_faults(submit={"rate_503": 1.0})
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "fal is down"}, job_id="e2e-dlq"))
    dlq = stack.outputs()["IntakeDLQUrl"]
    sqs = stack.sqs()
    deadline = time.monotonic() + 30
    messages: list[Any] = []
    while time.monotonic() < deadline and not messages:
        messages = sqs.receive_message(
            QueueUrl=dlq, MessageAttributeNames=["All"], WaitTimeSeconds=1, VisibilityTimeout=0
        ).get("Messages", [])

    assert messages, "the message never reached the intake DLQ"
    attributes = messages[0]["MessageAttributes"]
    assert json.loads(messages[0]["Body"])["job_id"] == sent.job_id
    assert attributes["falflow-error-type"]["StringValue"]
    assert attributes["falflow-error-message"]["StringValue"]
    job = target.job_store().get(sent.job_id)
    assert job is not None
    assert job.request_id is None  # fal never accepted it
