"""The webhook receiver: the signature gate first (nothing that fails it changes anything), then
the answers fal gets for every kind of verified delivery."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import pytest

from falflow.completion.handoff import CompletionHandoff
from falflow.jobs import Job, JobState, utcnow
from falflow.webhook import receiver as receiver_module
from falflow.webhook.http_api import http_response, webhook_request
from falflow.webhook.receiver import WebhookReceiver, WebhookRequest
from falflow.webhook.token import WebhookTokens
from tests.fakes.completion import JwksServer, MemoryInbox, MemoryOutputsQueue
from tests.fakes.job_store import InMemoryJobStore
from tests.fakes.webhook_events import (
    TEST_TOKEN_KEY,
    StaticTokenKeys,
    WebhookSigner,
    delivery,
    fixed_tokens,
    http_api_event,
)

NOW = time.time()


class Harness:
    def __init__(self) -> None:
        self.signer = WebhookSigner.generate()
        self.jwks = JwksServer(self.signer.jwks())
        self.store = InMemoryJobStore()
        self.inbox = MemoryInbox()
        self.queue = MemoryOutputsQueue()
        handoff = CompletionHandoff(self.store, self.inbox, self.queue)
        self.tokens = fixed_tokens()
        self.receiver = WebhookReceiver(
            handoff, self.jwks.cache(min_refetch_interval_s=0), self.tokens, clock=lambda: NOW
        )
        self.store.create(
            Job.new("job-1", source="sqs:m", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
        )
        self.store.bind_request("job-1", "req-1")
        self.store.confirm_submission("job-1", "req-1", now=utcnow())

    def request(
        self, body: bytes, headers: dict[str, str], job_id: str | None = "job-1", token: str | None = None
    ) -> WebhookRequest:
        """A delivery to ``job_id``'s URL, with its own token unless ``token`` says otherwise."""
        if not job_id:
            return WebhookRequest(headers=headers, body=body)
        token = self.tokens.token_for(job_id) if token is None else token
        return WebhookRequest(headers=headers, body=body, query={"job_id": job_id, "token": token})

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
        harness.tokens,
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
        token=harness.tokens.token_for("job-1"),
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


# ------------------------------------------------------------------ a delivery binds to its job


def _add_unbound_job(harness: Harness, job_id: str) -> None:
    """A job whose submit reply was lost: ACCEPTED, no request id yet (what a cross-job delivery
    could bind before tokens)."""
    harness.store.create(
        Job.new(job_id, source="sqs:m3", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
    )


CROSS_JOB_TOKENS = {
    "no token": "",
    "the token of the job the delivery was for": "job-1",
    "a token of another stack": "other-stack",
    "a token that is not ASCII": "jöb-3",
}


@pytest.mark.parametrize("token_of", CROSS_JOB_TOKENS.values(), ids=CROSS_JOB_TOKENS.keys())
def test_a_validly_signed_delivery_posted_to_another_jobs_url_is_refused_and_changes_nothing(
    harness: Harness, token_of: str
) -> None:
    _add_unbound_job(harness, "job-3")
    before = harness.store.get("job-3")
    if token_of == "job-1":
        token = harness.tokens.token_for("job-1")
    elif token_of == "other-stack":
        token = WebhookTokens(StaticTokenKeys(b"another stack's secret")).token_for("job-3")
    else:
        token = token_of
    headers = harness.signer.headers(BODY, "req-1", timestamp=int(NOW))  # J1's delivery, signed by fal

    reply = harness.receiver.receive(harness.request(BODY, headers, job_id="job-3", token=token))

    assert reply.status == 403
    assert harness.store.get("job-3") == before  # no request id bound, no trail, nothing
    assert harness.unchanged()


def test_a_delivery_whose_token_was_signed_before_a_rotation_is_accepted(harness: Harness) -> None:
    issued = harness.tokens.token_for("job-1")  # the URL submit gave fal before the rotation
    rotated = StaticTokenKeys(current_key=b"the new version", previous_key=TEST_TOKEN_KEY)
    harness.receiver = WebhookReceiver(
        CompletionHandoff(harness.store, harness.inbox, harness.queue),
        harness.jwks.cache(min_refetch_interval_s=0),
        WebhookTokens(rotated),
        clock=lambda: NOW,
    )
    headers = harness.signer.headers(BODY, "req-1", timestamp=int(NOW))

    assert harness.receiver.receive(harness.request(BODY, headers, token=issued)).status == 200

    rotated.previous_key = b"the version after"  # rotated twice: the old token is no longer valid
    harness.store.create(
        Job.new("job-2", source="sqs:m2", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
    )
    stale = WebhookTokens(StaticTokenKeys()).token_for("job-2")
    assert harness.receiver.receive(harness.request(BODY, headers, job_id="job-2", token=stale)).status == 403


# ------------------------------------------------------------------------------- replay floods

REPLAYS = 1000


def test_a_replay_flood_leaves_every_record_bounded_and_every_answer_right(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Powertools flushes its metrics every 100 values, as the function's namespace would let it.
    monkeypatch.setattr(receiver_module.metrics, "namespace", "falflow-test")
    _add_unbound_job(harness, "job-3")
    own = harness.signer.headers(BODY, "req-1", timestamp=int(NOW))
    other_body = delivery("req-2", payload={})  # fal's delivery of another request of job-1
    other = harness.signer.headers(other_body, "req-2", timestamp=int(NOW))
    j1_token = harness.tokens.token_for("job-1")

    first = harness.receiver.receive(harness.request(BODY, own))
    cross_job = [
        harness.receiver.receive(harness.request(BODY, own, job_id="job-3", token=j1_token)).status
        for _ in range(REPLAYS)
    ]
    same = [harness.receiver.receive(harness.request(BODY, own)).body["outcome"] for _ in range(REPLAYS)]
    foreign = [
        harness.receiver.receive(harness.request(other_body, other)).body["outcome"] for _ in range(REPLAYS)
    ]

    assert first.body == {"outcome": "recorded"}
    assert set(cross_job) == {403}
    assert set(same) == {"duplicate"}
    assert set(foreign) == {"foreign_request"}
    job_1, job_3 = harness.store.get("job-1"), harness.store.get("job-3")
    assert job_1 is not None
    assert job_3 is not None
    assert [entry.action for entry in job_1.trail] == ["ignored_foreign_request"]  # one note, once
    assert job_1.trail_dropped == 0
    assert (job_3.request_id, job_3.trail, job_3.state) == (None, [], JobState.ACCEPTED)
    assert len(harness.queue.messages) == 1  # one hand-off to the store
    assert j1_token not in capsys.readouterr().out  # the token is never logged
