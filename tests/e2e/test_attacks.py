"""The attack matrix and the bad-input matrix, end to end on the local stack: each attempt is
refused with a reason a person can read, and nothing is written where it should not be.

Deliveries go over HTTP through the front door, signed (when they should verify) with the
emulator's own key, exactly as fal signs: so what is refused is refused for what it claims, not
for a bad signature.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from falflow.aws.s3 import S3ObjectRef
from falflow.jobs import FINAL_STATES, Job, JobState, utcnow
from falflow.submit.sources import ObjectCreated, message_job_id, object_job_id
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.submit import drop_file, job_message, send_message
from falflow_tools.ops.target import Target
from tests.e2e.conftest import wait_for_job
from tests.fakes.webhook_events import WEBHOOK_PATH, WebhookSigner, delivery

pytestmark = pytest.mark.e2e

FLUX = "fal-ai/flux/dev"


def fal_signer(stack: LocalStack) -> WebhookSigner:
    """fal's signer: the emulator's current key and account."""
    assert stack.emulator is not None
    key = stack.emulator.emulator.keys.current
    return WebhookSigner(key.private_key, key.kid, user_id=stack.emulator.user_id)


def webhook_url(stack: LocalStack, job_id: str | None = None) -> str:
    """The webhook URL for `job_id` as an outsider can write it (no more than the job id)."""
    url = f"{stack.front_door.url}{WEBHOOK_PATH}"
    return f"{url}?job_id={job_id}" if job_id is not None else url


def url_fal_was_given(stack: LocalStack, job: Job) -> str:
    """The webhook URL the submit gave fal for this job's request (whatever it carries)."""
    assert stack.emulator is not None
    (fal_job,) = [j for j in stack.emulator.control.jobs() if j.request_id == job.request_id]
    assert fal_job.webhook_url is not None
    return fal_job.webhook_url


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    response = httpx.post(
        url, content=body, headers={"content-type": "application/json", **headers}, timeout=30
    )
    return response.status_code


def bucket_keys(stack: LocalStack, prefix: str) -> list[str]:
    found = stack.s3().list_objects_v2(Bucket=stack.outputs()["OutputBucketName"], Prefix=prefix)
    return [obj["Key"] for obj in found.get("Contents", [])]


def waiting_job(stack: LocalStack, target: Target, fal_faults: Callable[..., Any], tag: str) -> Job:
    """A job fal finished but whose webhook never came: SUBMITTED, with its request id."""
    assert stack.emulator is not None
    fal_faults(webhook={"drop_rate": 1.0})
    sent = send_message(target, job_message(FLUX, {"prompt": tag}, job_id=tag))
    job = wait_for_job(target, sent.job_id, {JobState.SUBMITTED, JobState.IN_PROGRESS})
    stack.emulator.control.wait_idle(timeout_s=30)
    return job


def unchanged(target: Target, before: Job) -> bool:
    after = target.job_store().get(before.job_id)
    assert after is not None
    return (
        after.state == before.state
        and after.request_id == before.request_id
        and after.completion_key is None
        and after.outputs == []
    )


# ---------------------------------------------------------------------------------- deliveries


def _headers(stack: LocalStack, body: bytes, request_id: str, **changes: Any) -> dict[str, str]:
    signer = changes.pop("signer", None) or fal_signer(stack)
    headers = signer.headers(body, request_id, timestamp=int(time.time()) + changes.pop("offset", 0))
    for name in changes.pop("drop", ()):
        del headers[name]
    return headers


FORGED: dict[str, Callable[[LocalStack, bytes, str], tuple[bytes, dict[str, str]]]] = {
    "forged signature": lambda s, b, r: (
        b,
        {**_headers(s, b, r), "X-Fal-Webhook-Signature": "ab" * 64},
    ),
    "other key": lambda s, b, r: (b, _headers(s, b, r, signer=WebhookSigner.generate())),
    "tampered body": lambda s, b, r: (b.replace(b"image-0", b"image-9"), _headers(s, b, r)),
    "stale timestamp": lambda s, b, r: (b, _headers(s, b, r, offset=-600)),
    "future timestamp": lambda s, b, r: (b, _headers(s, b, r, offset=600)),
    "missing signature": lambda s, b, r: (b, _headers(s, b, r, drop=["X-Fal-Webhook-Signature"])),
    "missing timestamp": lambda s, b, r: (b, _headers(s, b, r, drop=["X-Fal-Webhook-Timestamp"])),
    "missing request id": lambda s, b, r: (b, _headers(s, b, r, drop=["X-Fal-Webhook-Request-Id"])),
    "missing user id": lambda s, b, r: (b, _headers(s, b, r, drop=["X-Fal-Webhook-User-Id"])),
}


def test_deliveries_that_do_not_verify_are_refused_and_change_nothing(
    stack: LocalStack, target: Target, fal_faults: Callable[..., Any]
) -> None:
    job = waiting_job(stack, target, fal_faults, "attack-forged")
    assert job.request_id is not None
    body = delivery(job.request_id, payload={"images": [{"url": "https://v3.fal.media/files/x/image-0.png"}]})

    refused = {}
    for name, build in FORGED.items():
        forged_body, headers = build(stack, body, job.request_id)
        refused[name] = post(url_fal_was_given(stack, job), forged_body, headers)

    assert refused == dict.fromkeys(FORGED, 401)
    assert unchanged(target, job)
    assert bucket_keys(stack, f"inbox/{job.job_id}/") == []


def test_a_delivery_from_another_fal_account_is_refused_and_changes_nothing(
    stack: LocalStack, target: Target, fal_faults: Callable[..., Any]
) -> None:
    """fal signs every account's webhooks with the same keys: a delivery another account's request
    produced verifies, to this job's own URL (token and all), and is still not ours to take. The
    stack pins its account (FalWebhookUserIds, the e2e stack's parameters)."""
    job = waiting_job(stack, target, fal_faults, "attack-other-account")
    assert job.request_id is not None
    assert stack.emulator is not None
    body = delivery(job.request_id, payload={"images": [{"url": "https://v3.fal.media/files/x/image-0.png"}]})
    ours = fal_signer(stack)
    theirs = WebhookSigner(ours.key, ours.kid, user_id="another-fal-account")
    url = url_fal_was_given(stack, job)

    response = httpx.post(
        url,
        content=body,
        headers={"content-type": "application/json", **theirs.headers(body, job.request_id)},
    )

    assert (response.status_code, response.json()) == (
        403,
        {"message": "delivery is for another fal account"},
    )
    assert unchanged(target, job)
    assert bucket_keys(stack, f"inbox/{job.job_id}/") == []
    assert stack.config.log_dir is not None
    refusals = [
        json.loads(line)
        for line in (stack.config.log_dir / "WebhookFunction.log").read_text().splitlines()
        if "signed for another fal account" in line
    ]
    assert [(r["level"], r["request_id"]) for r in refusals] == [("WARNING", job.request_id)]
    # Refused for the account alone: the same delivery signed for ours is taken.
    assert post(url, body, ours.headers(body, job.request_id)) == 200


def test_a_delivery_for_one_job_cannot_complete_another(
    stack: LocalStack, target: Target, fal_faults: Callable[..., Any]
) -> None:
    """J1's genuine, validly signed delivery posted to J3's webhook URL, while J3 has no request id
    yet (its submit reply was lost): J3 must not be bound to J1's request or get its outputs."""
    done = send_message(target, job_message(FLUX, {"prompt": "attack-cross-j1"}, job_id="attack-cross-j1"))
    first = wait_for_job(target, done.job_id)
    assert first.request_id is not None
    assert first.state is JobState.COMPLETED
    store = target.job_store()
    # J3 as a lost submit reply leaves it: recorded, leased, no request id.
    victim = Job.new("attack-cross-j3", source="sqs:attack", source_kind="sqs", now=utcnow(), model=FLUX)
    store.create(victim)
    body = delivery(
        first.request_id, payload={"images": [{"url": "https://v3.fal.media/files/x/image-0.png"}]}
    )

    status = post(webhook_url(stack, victim.job_id), body, _headers(stack, body, first.request_id))

    assert 400 <= status < 500
    after = store.get(victim.job_id)
    assert after is not None
    assert after.request_id is None
    assert after.state is JobState.ACCEPTED
    assert bucket_keys(stack, f"inbox/{victim.job_id}/") == []
    assert bucket_keys(stack, f"outputs/{victim.job_id}/") == []


def test_a_replay_flood_to_another_job_adds_nothing_to_its_record(
    stack: LocalStack, target: Target, fal_faults: Callable[..., Any]
) -> None:
    target_job = waiting_job(stack, target, fal_faults, "attack-flood-target")
    done = send_message(target, job_message(FLUX, {"prompt": "attack-flood-src"}, job_id="attack-flood-src"))
    fal_faults()
    source = wait_for_job(target, done.job_id, FINAL_STATES, timeout_s=60)
    assert source.request_id is not None
    body = delivery(source.request_id, payload={"images": []})
    headers = _headers(stack, body, source.request_id)
    before = target.job_store().get(target_job.job_id)
    assert before is not None

    statuses = {post(webhook_url(stack, target_job.job_id), body, headers) for _ in range(60)}

    assert all(400 <= status < 500 for status in statuses), statuses
    after = target.job_store().get(target_job.job_id)
    assert after is not None
    assert after.trail == before.trail  # a replayed delivery adds nothing
    assert unchanged(target, before)


# -------------------------------------------------------------------------------- bad inputs


def test_a_forged_s3_notification_for_a_foreign_bucket_is_refused_and_nothing_is_read(
    stack: LocalStack, target: Target
) -> None:
    assert stack.emulator is not None
    foreign = "someone-elses-bucket"
    s3 = stack.s3()
    s3.create_bucket(Bucket=foreign)
    s3.put_bucket_versioning(Bucket=foreign, VersioningConfiguration={"Status": "Enabled"})
    document = json.dumps({"model": FLUX, "input": {"prompt": "read from a foreign bucket"}}).encode()
    put = s3.put_object(Bucket=foreign, Key="jobs/foreign.json", Body=document)
    ref = S3ObjectRef(bucket=foreign, key="jobs/foreign.json", version_id=put.get("VersionId"))
    job_id = object_job_id(ObjectCreated(object=ref, etag=put.get("ETag"), size=len(document)))
    notification = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": foreign, "arn": f"arn:aws:s3:::{foreign}"},
                    "object": {
                        "key": ref.key,
                        "size": len(document),
                        "eTag": put["ETag"].strip('"'),
                        "versionId": ref.version_id,
                    },
                },
            }
        ]
    }
    stack.sqs().send_message(QueueUrl=target.output("IntakeQueueUrl"), MessageBody=json.dumps(notification))

    job = wait_for_job(target, job_id)

    assert job.state is JobState.REJECTED
    assert job.error is not None
    assert foreign in job.error.message
    assert job.request_id is None
    assert not [j for j in stack.emulator.control.jobs() if f"job_id={job_id}" in (j.webhook_url or "")]


BAD_MESSAGES: dict[str, str] = {
    "malformed JSON": '{"model": "fal-ai/flux/dev", "input": {',
    "not an object": '["fal-ai/flux/dev"]',
    "unknown field": json.dumps({"model": FLUX, "input": {}, "callback": "http://169.254.169.254/"}),
    "missing input": json.dumps({"model": FLUX}),
    "input of the wrong type": json.dumps({"model": FLUX, "input": "a prompt"}),
    "model with a path traversal": json.dumps({"model": "../../etc/passwd", "input": {}}),
    "output prefix with a traversal": json.dumps({"model": FLUX, "input": {}, "output_prefix": "../inbox"}),
    "file from a foreign bucket": json.dumps(
        {"model": FLUX, "input": {}, "files": {"image_url": "s3://someone-elses-bucket/cat.png"}}
    ),
    "file that is a URL (SSRF)": json.dumps(
        {"model": FLUX, "input": {}, "files": {"image_url": "http://169.254.169.254/latest/meta-data/"}}
    ),
}


def _message_job_id(body: str) -> str:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    return message_job_id(body, parsed)


def test_bad_job_messages_are_rejected_with_their_reason_and_never_reach_fal(
    stack: LocalStack, target: Target
) -> None:
    assert stack.emulator is not None
    queue = target.output("IntakeQueueUrl")
    for body in BAD_MESSAGES.values():
        stack.sqs().send_message(QueueUrl=queue, MessageBody=body)

    outcomes = {}
    for name, body in BAD_MESSAGES.items():
        job = wait_for_job(target, _message_job_id(body))
        outcomes[name] = (job.state, bool(job.error and job.error.message), job.request_id)

    assert outcomes == dict.fromkeys(BAD_MESSAGES, (JobState.REJECTED, True, None))
    sent_ids = {_message_job_id(body) for body in BAD_MESSAGES.values()}
    submitted = {j.webhook_url for j in stack.emulator.control.jobs()}
    assert not [job_id for job_id in sent_ids if any(f"job_id={job_id}" in (u or "") for u in submitted)]
    assert not [key for job_id in sent_ids for key in bucket_keys(stack, f"outputs/{job_id}/")]


def test_output_urls_fal_never_serves_are_not_fetched_and_nothing_is_stored(
    stack: LocalStack, target: Target, fal_faults: Callable[..., Any]
) -> None:
    """SSRF and traversal in a (validly signed) payload: the store fetches from fal's media hosts
    only and keeps every copy under the job's own prefix."""
    job = waiting_job(stack, target, fal_faults, "attack-ssrf")
    assert job.request_id is not None
    payload = {
        "images": [
            {
                "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                "file_name": "a.png",
            },
            {"url": "file:///etc/passwd", "file_name": "../../inbox/passwd"},
        ]
    }
    body = delivery(job.request_id, payload=payload)

    assert post(url_fal_was_given(stack, job), body, _headers(stack, body, job.request_id)) == 200
    final = wait_for_job(target, job.job_id)

    assert final.state is JobState.FAILED
    assert final.error is not None
    assert final.error.message
    assert final.outputs == []
    assert [
        key for key in bucket_keys(stack, f"outputs/{job.job_id}/") if not key.endswith("result.json")
    ] == []
    assert bucket_keys(stack, "inbox/passwd") == []
    assert bucket_keys(stack, "passwd") == []


def test_an_oversized_job_document_is_rejected_unread_and_never_reaches_fal(
    stack: LocalStack, target: Target
) -> None:
    assert stack.emulator is not None
    document = json.dumps({"model": FLUX, "input": {"prompt": "x" * (1024 * 1024)}}).encode()

    dropped = drop_file(target, document, key="jobs/attack-oversized.json")
    job = wait_for_job(target, dropped.job_id)

    assert job.state is JobState.REJECTED
    assert job.error is not None
    assert job.error.message
    assert job.input is None
    assert not [j for j in stack.emulator.control.jobs() if f"job_id={job.job_id}" in (j.webhook_url or "")]
