"""The webhook receiver: the signature gate first (nothing that fails it changes anything), then
the answers fal gets for every kind of verified delivery."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest

from falflow.completion.handoff import CompletionHandoff
from falflow.jobs import Job, JobState, utcnow
from falflow.webhook.http_api import http_response, webhook_request
from falflow.webhook.receiver import WebhookReceiver, WebhookRequest
from tests.fakes.completion import JwksServer, MemoryInbox, MemoryOutputsQueue
from tests.fakes.job_store import InMemoryJobStore
from tests.fakes.webhook_events import WebhookSigner, delivery, http_api_event

NOW = time.time()


class Harness:
    def __init__(self) -> None:
        self.signer = WebhookSigner.generate()
        self.jwks = JwksServer(self.signer.jwks())
        self.store = InMemoryJobStore()
        self.inbox = MemoryInbox()
        self.queue = MemoryOutputsQueue()
        handoff = CompletionHandoff(self.store, self.inbox, self.queue)
        self.receiver = WebhookReceiver(handoff, self.jwks.cache(min_refetch_interval_s=0), clock=lambda: NOW)
        self.store.create(
            Job.new("job-1", source="sqs:m", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
        )
        self.store.bind_request("job-1", "req-1")
        self.store.confirm_submission("job-1", "req-1", now=utcnow())

    def request(self, body: bytes, headers: dict[str, str], job_id: str | None = "job-1") -> WebhookRequest:
        return WebhookRequest(headers=headers, body=body, query={"job_id": job_id} if job_id else {})

    def unchanged(self) -> bool:
        job = self.store.get("job-1")
        assert job is not None
        return job.state is JobState.SUBMITTED and not self.inbox.objects and not self.queue.messages


@pytest.fixture
def harness() -> Harness:
    return Harness()


BODY = delivery("req-1", payload={"images": [{"url": "https://v3.fal.media/files/a/b.png"}]})


def _tampered(h: Harness) -> tuple[bytes, dict[str, str]]:
    return BODY.replace(b"b.png", b"c.png"), h.signer.headers(BODY, "req-1", timestamp=int(NOW))


def _wrong_key(h: Harness) -> tuple[bytes, dict[str, str]]:
    return BODY, WebhookSigner.generate().headers(BODY, "req-1", timestamp=int(NOW))


def _stale(h: Harness) -> tuple[bytes, dict[str, str]]:
    return BODY, h.signer.headers(BODY, "req-1", timestamp=int(NOW) - 301)


def _future(h: Harness) -> tuple[bytes, dict[str, str]]:
    return BODY, h.signer.headers(BODY, "req-1", timestamp=int(NOW) + 301)


def _other_request_id_header(h: Harness) -> tuple[bytes, dict[str, str]]:
    headers = h.signer.headers(BODY, "req-1", timestamp=int(NOW))
    return BODY, {**headers, "X-Fal-Webhook-Request-Id": "req-9"}


def _without(header: str) -> Callable[[Harness], tuple[bytes, dict[str, str]]]:
    def build(h: Harness) -> tuple[bytes, dict[str, str]]:
        headers = h.signer.headers(BODY, "req-1", timestamp=int(NOW))
        return BODY, {k: v for k, v in headers.items() if k != header}

    return build


REFUSED = {
    "tampered body": _tampered,
    "wrong key": _wrong_key,
    "stale timestamp": _stale,
    "future timestamp": _future,
    "signed for another request id": _other_request_id_header,
    **{
        f"missing {name}": _without(name)
        for name in (
            "X-Fal-Webhook-Request-Id",
            "X-Fal-Webhook-User-Id",
            "X-Fal-Webhook-Timestamp",
            "X-Fal-Webhook-Signature",
        )
    },
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_anything_that_does_not_verify_is_refused_and_changes_nothing(harness: Harness, case) -> None:
    body, headers = case(harness)
    reply = harness.receiver.receive(harness.request(body, headers))
    assert reply.status == 401
    assert harness.unchanged()


def test_within_the_tolerance_either_way_verifies(harness: Harness) -> None:
    for offset in (-299, 299):
        headers = harness.signer.headers(BODY, "req-1", timestamp=int(NOW) + offset)
        assert harness.receiver.receive(harness.request(BODY, headers)).status == 200


def test_a_rotated_key_verifies_after_one_refetch(harness: Harness) -> None:
    harness.receiver.receive(harness.request(BODY, harness.signer.headers(BODY, "req-1", timestamp=int(NOW))))
    fetches = harness.jwks.fetches
    rotated = WebhookSigner.generate()
    harness.jwks.jwks = rotated.jwks()  # fal rotated: our cache still holds the old key

    reply = harness.receiver.receive(
        harness.request(BODY, rotated.headers(BODY, "req-1", timestamp=int(NOW)))
    )

    assert reply.status == 200
    assert harness.jwks.fetches == fetches + 1


def test_unavailable_jwks_asks_fal_to_retry(harness: Harness) -> None:
    harness.jwks.fail = True
    reply = harness.receiver.receive(
        harness.request(BODY, harness.signer.headers(BODY, "req-1", timestamp=int(NOW)))
    )
    assert reply.status == 503
    assert harness.unchanged()


def test_verified_deliveries_get_the_right_answers(harness: Harness) -> None:
    def send(body: bytes, request_id: str, job_id: str | None = "job-1") -> int:
        headers = harness.signer.headers(body, request_id, timestamp=int(NOW))
        return harness.receiver.receive(harness.request(body, headers, job_id)).status

    assert send(BODY, "req-1", job_id=None) == 400
    assert send(b"not json", "req-1") == 400
    assert send(delivery("req-2", payload={}), "req-1") == 400  # body and signed id disagree
    assert send(delivery("req-1", payload={}), "req-1", job_id="no-such-job") == 404
    assert harness.unchanged()
    assert (
        send(
            delivery("req-1", status="ERROR", error="Invalid status code: 422", payload={"detail": []}),
            "req-1",
        )
        == 200
    )
    assert send(BODY, "req-1") == 200  # a duplicate (even with another body) is answered 200
    assert send(delivery("req-2", payload={}), "req-2") == 200  # another request id: kept aside
    assert len(harness.queue.messages) == 1


def test_a_delivery_signed_for_another_fal_account_is_refused_when_accounts_are_pinned(
    harness: Harness,
) -> None:
    harness.receiver = WebhookReceiver(
        CompletionHandoff(harness.store, harness.inbox, harness.queue),
        harness.jwks.cache(min_refetch_interval_s=0),
        allowed_user_ids={"our-account"},
        clock=lambda: NOW,
    )
    foreign = harness.signer.headers(BODY, "req-1", timestamp=int(NOW))  # validly signed by fal
    assert harness.receiver.receive(harness.request(BODY, foreign)).status == 403
    assert harness.unchanged()

    ours = WebhookSigner(harness.signer.key, harness.signer.kid, user_id="our-account")
    assert (
        harness.receiver.receive(
            harness.request(BODY, ours.headers(BODY, "req-1", timestamp=int(NOW)))
        ).status
        == 200
    )


@pytest.mark.parametrize("base64_body", [False, True], ids=["text body", "base64 body"])
@pytest.mark.parametrize("lower_case", [True, False], ids=["lower-case headers", "mixed-case headers"])
def test_api_gateway_events_are_verified_over_the_exact_bytes(
    harness: Harness, base64_body: bool, lower_case: bool
) -> None:
    # Whitespace and key order that re-serialising would change: only the raw bytes verify.
    body = b'{ "status":"OK",  "request_id":"req-1", "payload": {"seed": 1.50} }'
    event = http_api_event(
        body,
        harness.signer.headers(body, "req-1", timestamp=int(NOW)),
        job_id="job-1",
        base64_body=base64_body,
        lower_case_headers=lower_case,
    )
    reply = harness.receiver.receive(webhook_request(event))
    assert reply.status == 200
    assert next(iter(harness.inbox.objects.values())) == body
    assert http_response(reply)["statusCode"] == 200


def test_a_body_marked_base64_that_is_not_is_refused() -> None:
    event = {"body": "%%%not base64%%%", "isBase64Encoded": True, "headers": {}}
    with pytest.raises(ValueError, match="base64"):
        webhook_request(event)
    assert base64.b64encode(b"x")  # keeps the import honest


@pytest.mark.parametrize("status", ["IN_PROGRESS", "QUEUED", "SOMETHING_NEW"])
def test_a_signed_delivery_that_is_not_a_completion_is_answered_2xx_and_noted(
    harness: Harness, status: str
) -> None:
    body = delivery("req-1", status=status, payload=None)
    headers = harness.signer.headers(body, "req-1", timestamp=int(NOW))

    reply = harness.receiver.receive(harness.request(body, headers))

    assert reply.status == 200  # a 4xx would only make fal send it again, 10 times over 2 hours
    assert harness.unchanged()  # not recorded as the job's completion, nothing handed to the store
    job = harness.store.get("job-1")
    assert job is not None
    assert [(t.action, status in t.reason) for t in job.trail] == [("non_terminal_delivery", True)]


def test_a_non_terminal_delivery_for_an_unknown_job_changes_nothing(harness: Harness) -> None:
    body = delivery("req-1", status="IN_PROGRESS")
    headers = harness.signer.headers(body, "req-1", timestamp=int(NOW))

    assert harness.receiver.receive(harness.request(body, headers, "no-such-job")).status == 404
    assert harness.unchanged()
