"""The webhook function (real handler, moto's server): the signature matrix — only deliveries
that verify change state — and the committed sample events."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from falflow.aws.clients import aws_client
from falflow.jobs import Job, JobState, utcnow
from tests.fakes.webhook_events import (
    EVENTS_DIR,
    WebhookSigner,
    delivery,
    event_body,
    http_api_event,
    resign_event,
)
from tests.fixtures.completion import CompletionStack, CompletionStackFactory

BODY = delivery("req-1", payload={"images": [{"url": "https://v3.fal.media/files/a/b.png"}]})


@pytest.fixture
def stack(completion_stack: CompletionStackFactory) -> CompletionStack:
    stack = completion_stack(functions=("WebhookFunction",))
    stack.jobs.create(
        Job.new("job-1", source="sqs:m", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
    )
    stack.jobs.bind_request("job-1", "req-1")
    stack.jobs.confirm_submission("job-1", "req-1", now=utcnow())
    return stack


def nothing_changed(stack: CompletionStack) -> bool:
    job = stack.job("job-1")
    return (
        job.state is JobState.SUBMITTED
        and job.completion_key is None
        and stack.keys("inbox/") == []
        and stack.queue_depth("OutputsQueue") == 0
    )


def recorded_once(stack: CompletionStack) -> bool:
    job = stack.job("job-1")
    return (
        job.state is JobState.STORING
        and job.completion_enqueued_at is not None
        and stack.keys("inbox/") == ["inbox/job-1/req-1.json"]
        and stack.queue_depth("OutputsQueue") == 1
    )


Case = Callable[[CompletionStack], dict]


def signed(stack: CompletionStack, *, signer: WebhookSigner | None = None, offset: int = 0, **kwargs) -> dict:
    headers = (signer or stack.signer).headers(BODY, "req-1", timestamp=int(time.time()) + offset)
    return http_api_event(BODY, headers, job_id="job-1", token=stack.token_for("job-1"), **kwargs)


def tampered(stack: CompletionStack) -> dict:
    event = signed(stack)
    event["body"] = event["body"].replace("b.png", "c.png")
    return event


def without(header: str) -> Case:
    def build(stack: CompletionStack) -> dict:
        event = signed(stack)
        del event["headers"][header]
        return event

    return build


REFUSED: dict[str, Case] = {
    "tampered body": tampered,
    "wrong key": lambda s: signed(s, signer=WebhookSigner.generate()),
    "stale timestamp": lambda s: signed(s, offset=-301),
    "future timestamp": lambda s: signed(s, offset=301),
    "missing request id": without("x-fal-webhook-request-id"),
    "missing user id": without("x-fal-webhook-user-id"),
    "missing timestamp": without("x-fal-webhook-timestamp"),
    "missing signature": without("x-fal-webhook-signature"),
}


def test_deliveries_that_do_not_verify_get_401_and_change_nothing(stack: CompletionStack) -> None:
    for name, case in REFUSED.items():  # one stack for the whole matrix: each case must leave it as it was
        response = stack.deliver_event(case(stack))
        assert response["statusCode"] == 401, name
        assert nothing_changed(stack), name
    assert stack.deliver_event(signed(stack))["statusCode"] == 200  # the same stack takes a valid one
    assert recorded_once(stack)


ACCEPTED: dict[str, Case] = {
    "valid": signed,
    "base64-encoded body": lambda s: signed(s, base64_body=True),
    "mixed-case headers": lambda s: signed(s, lower_case_headers=False),
}


@pytest.mark.parametrize("case", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_deliveries_that_verify_are_recorded_once(stack: CompletionStack, case: Case) -> None:
    event = case(stack)
    assert stack.deliver_event(event)["statusCode"] == 200
    assert stack.deliver_event(case(stack))["statusCode"] == 200  # a redelivery
    assert recorded_once(stack)
    stored = stack.s3_object("inbox/job-1/req-1.json")
    assert stored["body"] == BODY == event_body(event)  # the exact bytes fal signed


def test_an_unknown_key_id_verifies_once_the_rotated_jwks_is_fetched_again(stack: CompletionStack) -> None:
    assert stack.deliver(BODY, stack.signer.headers(BODY, "req-1"), "job-2") == 404  # keys now cached
    rotated = WebhookSigner.generate()
    stack.jwks.jwks = {"keys": [rotated.jwk(), stack.signer.jwk()]}  # fal publishes a new key
    fetches = stack.jwks.fetches

    assert stack.deliver(BODY, rotated.headers(BODY, "req-1"), "job-1") == 200

    assert stack.jwks.fetches == fetches + 1
    assert recorded_once(stack)


def test_unknown_jobs_and_malformed_deliveries_are_refused_without_writes(stack: CompletionStack) -> None:
    headers = stack.signer.headers(BODY, "req-1")
    assert stack.deliver(BODY, headers, "no-such-job") == 404
    assert stack.deliver(BODY, headers, None) == 400
    other = delivery("req-9", payload={})
    assert stack.deliver(other, stack.signer.headers(other, "req-1"), "job-1") == 400
    assert nothing_changed(stack)


def test_the_committed_sample_events_verify_with_the_committed_test_key(
    completion_stack: CompletionStackFactory,
) -> None:
    stack = completion_stack(functions=("WebhookFunction",))
    committed = WebhookSigner.committed()
    stack.jwks.jwks = json.loads((EVENTS_DIR / "jwks.json").read_text())
    for name, state in (("ok.json", "OK"), ("error.json", "ERROR"), ("payload_error.json", "OK")):
        event = json.loads((EVENTS_DIR / name).read_text())
        job_id = event["queryStringParameters"]["job_id"]
        request_id = event["headers"]["x-fal-webhook-request-id"]
        stack.jobs.create(
            Job.new(job_id, source="sqs:m", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
        )
        assert json.loads(event_body(event))["status"] == state

        # as committed: signed long ago, so refused; re-signed now (same bytes): recorded
        assert stack.deliver_event(event)["statusCode"] == 401
        assert stack.deliver_event(resign_event(event, committed))["statusCode"] == 403  # no token
        tokened = resign_event(event, committed, token=stack.token_for(job_id))
        assert stack.deliver_event(tokened)["statusCode"] == 200
        assert stack.job(job_id).request_id == request_id
        assert stack.job(job_id).state is JobState.STORING
        # the samples share one job id: start the next one from a fresh record
        aws_client("dynamodb").delete_item(
            TableName=stack.stack.tables["JobsTable"], Key={"job_id": {"S": job_id}}
        )


def test_a_delivery_posted_to_another_jobs_url_is_refused_even_as_a_flood(stack: CompletionStack) -> None:
    # J3's submit reply was lost: no request id yet, which a cross-job delivery used to bind.
    stack.jobs.create(
        Job.new("job-3", source="sqs:m3", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
    )
    item_key = {"job_id": {"S": "job-3"}}
    table = stack.stack.tables["JobsTable"]
    before = aws_client("dynamodb").get_item(TableName=table, Key=item_key, ConsistentRead=True)["Item"]
    headers = stack.signer.headers(BODY, "req-1")  # J1's delivery, validly signed by fal

    assert stack.deliver(BODY, headers, "job-3", token="") == 403
    j1_token = stack.token_for("job-1")  # J1's URL, as fal (or anyone J1's account) saw it
    answers = {stack.deliver(BODY, headers, "job-3", token=j1_token) for _ in range(1000)}

    assert answers == {403}
    after = aws_client("dynamodb").get_item(TableName=table, Key=item_key, ConsistentRead=True)["Item"]
    assert after == before  # not one attribute, not one trail entry more
    assert nothing_changed(stack)
    assert stack.deliver_event(signed(stack))["statusCode"] == 200  # J1's own URL still works
    assert recorded_once(stack)
