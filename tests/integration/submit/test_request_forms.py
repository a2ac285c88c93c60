"""Each request form ends as one fal submission with the right input and webhook, and a SUBMITTED
record — through the real handler, moto's S3/SQS/DynamoDB and the fal emulator."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import httpx

from falflow.aws.clients import aws_client
from falflow.aws.s3 import S3ObjectRef
from falflow.batches.model import BatchState
from falflow.batches.store import DynamoBatchStore
from falflow.jobs import JobState
from falflow.submit.sources import ObjectCreated, object_job_id
from tests.fixtures.completion import stack_tokens
from tests.integration.submit.conftest import EVENTS, SAMPLES, SubmitHarness, sample_body


def _webhook_query(url: str | None) -> dict[str, list[str]]:
    assert url is not None
    return parse_qs(urlsplit(url).query)


def test_a_media_drop_notified_by_s3_becomes_a_submitted_upscale(submit: SubmitHarness) -> None:
    key = "upscale/holiday photo (1)+final.png"
    put = submit.s3.put_object(
        Bucket=submit.bucket, Key=key, Body=b"\x89PNG not really", ContentType="image/png"
    )
    records = submit.notifications()  # what S3 (moto) put on the intake queue, test event included

    delivery = submit.deliver(records)

    assert delivery.responses == [{"batchItemFailures": []}]
    # The input bucket is versioned, so S3's notification names the version (moto's too, made
    # faithful by falflow_tools.local.fidelity): bucket, key and version identify the job.
    assert put["VersionId"]
    job_id = object_job_id(
        ObjectCreated(S3ObjectRef(submit.bucket, key, version_id=put["VersionId"]), etag=put["ETag"])
    )
    job = submit.job(job_id)
    assert job.state is JobState.SUBMITTED
    assert job.source == f"s3://{submit.bucket}/{key}?versionId={put['VersionId']}"
    (fal_job,) = submit.fal_jobs_for(job_id)
    assert (fal_job.request_id, fal_job.endpoint_id) == (job.request_id, "fal-ai/clarity-upscaler")
    # The job's own URL: its id and the token that binds fal's delivery to it (the stack's secret).
    token = stack_tokens(submit.stack).token_for(job_id)
    assert _webhook_query(fal_job.webhook_url) == {"job_id": [job_id], "token": [token]}
    assert fal_job.webhook_url.startswith(submit.sink.url)  # type: ignore[union-attr]
    # The input fal received: the route's template with a presigned URL fal can read the file at.
    (sent,) = [r for r in submit.fal.control.requests() if r.group == "submit"]
    image_url = sent.body["image_url"]
    assert "X-Amz-Signature=" in image_url
    assert "X-Amz-Expires=21600" in image_url
    assert httpx.get(image_url).content == b"\x89PNG not really"
    assert (
        job.status_url
        == f"{submit.fal.urls.queue_url}/fal-ai/clarity-upscaler/requests/{job.request_id}/status"
    )
    assert len(submit.jobs()) == 1  # S3's test event made no job


def test_a_job_message_from_the_events_sample_is_submitted(submit: SubmitHarness) -> None:
    message = sample_body("sqs-job-message.json")

    delivery = submit.deliver([submit.record(message)])

    assert delivery.responses == [{"batchItemFailures": []}]
    job = submit.job(message["job_id"])
    assert job.state is JobState.SUBMITTED
    assert job.metadata == message["metadata"]
    assert job.output_prefix == "orders/1234"
    (fal_job,) = submit.fal_jobs_for(message["job_id"])
    assert fal_job.request_id == job.request_id
    assert fal_job.endpoint_id == "fal-ai/flux/dev"
    (sent,) = [r for r in submit.fal.control.requests() if r.group == "submit"]
    assert sent.body == message["input"]
    assert sent.headers["x-fal-queue-priority"] == "normal"
    assert float(sent.headers["x-fal-request-timeout"]) == 600


def test_a_job_document_from_the_events_sample_is_submitted_with_its_file(submit: SubmitHarness) -> None:
    document = json.loads((SAMPLES / "job-document.json").read_text())
    assert document["files"] == {"image_url": f"s3://{submit.bucket}/uploads/product-1234.png"}
    submit.s3.put_object(Bucket=submit.bucket, Key="uploads/product-1234.png", Body=b"product")
    record = submit.put(
        "jobs/order-1234-upscale.json",
        json.dumps(document).encode(),
        "application/json",
        sample_name="sqs-s3-job-document.json",
    )

    delivery = submit.deliver([record])

    assert delivery.responses == [{"batchItemFailures": []}]
    (job,) = submit.jobs()
    assert job.state is JobState.SUBMITTED
    assert job.source_kind == "s3_document"
    (fal_job,) = submit.fal_jobs_for(job.job_id)
    (sent,) = [r for r in submit.fal.control.requests() if r.group == "submit"]
    assert {k: v for k, v in sent.body.items() if k != "image_url"} == document["input"]
    assert httpx.get(sent.body["image_url"]).content == b"product"
    assert fal_job.request_id == job.request_id


def test_every_sample_event_works_as_it_is(submit: SubmitHarness) -> None:
    """events/submit is a contract: what `sam local invoke SubmitFunction -e` would be given."""
    submit.s3.put_object(Bucket=submit.bucket, Key="upscale/holiday photo (1).png", Body=b"\x89PNG")
    submit.s3.put_object(Bucket=submit.bucket, Key="uploads/product-1234.png", Body=b"product")
    document = (SAMPLES / "job-document.json").read_bytes()
    submit.s3.put_object(Bucket=submit.bucket, Key="jobs/order-1234-upscale.json", Body=document)
    manifest = (SAMPLES / "batch-manifest.jsonl").read_bytes()
    submit.s3.put_object(Bucket=submit.bucket, Key="manifests/covers.jsonl", Body=manifest)
    names = sorted(path.name for path in EVENTS.glob("sqs-*.json"))
    assert names == [
        "sqs-bad-message.json",
        "sqs-batch-message.json",
        "sqs-job-message.json",
        "sqs-s3-job-document.json",
        "sqs-s3-put.json",
        "sqs-s3-test-event.json",
    ]

    responses = [submit.invoke(json.loads((EVENTS / name).read_text())["Records"]) for name in names]

    assert responses == [{"batchItemFailures": []}] * len(names)
    states = sorted((job.source_kind, job.state.value) for job in submit.jobs())
    assert states == [
        ("s3_document", "SUBMITTED"),
        ("s3_media", "SUBMITTED"),
        ("sqs", "REJECTED"),
        ("sqs", "SUBMITTED"),
    ]
    # The batch message fanned its manifest out: its two lines are job messages on the intake queue.
    batch = DynamoBatchStore(aws_client("dynamodb"), submit.stack.tables["BatchTable"]).get("spring-covers")
    assert batch is not None
    assert (batch.state, batch.lines, batch.sent) == (BatchState.RUNNING, 2, 2)


def test_notifications_naming_another_bucket_are_rejected_and_nothing_is_read(submit: SubmitHarness) -> None:
    # The objects exist (in moto every bucket is readable): only the bucket check keeps them out.
    foreign = "someone-elses-bucket"
    submit.s3.create_bucket(Bucket=foreign)
    document = json.dumps({"model": "fal-ai/flux/dev", "input": {"prompt": "theirs"}}).encode()
    records = []
    for key, body in (("upscale/theirs.png", b"\x89PNG theirs"), ("jobs/theirs.json", document)):
        put = submit.s3.put_object(Bucket=foreign, Key=key, Body=body)
        record = submit.s3_event_record(key, version_id=None, etag=put["ETag"].strip('"'), size=len(body))
        notification = json.loads(record["body"])
        notification["Records"][0]["s3"]["bucket"].update(name=foreign, arn=f"arn:aws:s3:::{foreign}")
        record["body"] = json.dumps(notification)
        records.append((record, S3ObjectRef(foreign, key), put["ETag"].strip('"')))

    delivery = submit.deliver([record for record, _, _ in records])

    assert delivery.responses == [{"batchItemFailures": []}]  # consumed: the record says why
    for _, ref, etag in records:
        job = submit.job(object_job_id(ObjectCreated(ref, etag=etag)))
        assert job.state is JobState.REJECTED
        assert job.error is not None
        assert job.error.type == "foreign_bucket"
        assert job.input is None  # the document was never read
    assert [r for r in submit.fal.control.requests() if r.group == "submit"] == []
    assert submit.dead_letters() == []
