"""Faults injected at fal's queue (429, 500, 503, read timeouts, connection resets): nothing is lost.

Every job ends SUBMITTED or its message waits in the intake DLQ with its reason; the redelivery of
failed records is driven like SQS does it (receive count + 1, after the visibility timeout). fal's
webhooks are recorded through the real completion hand-off between redeliveries, so the ambiguity
rule is tested with what binds a request id in production: a reply lost to a timeout is not
resent when fal's webhook arrives within the grace period.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from falflow.aws.dead_letter import ERROR_MESSAGE_ATTRIBUTE, ERROR_TYPE_ATTRIBUTE
from falflow.completion.handoff import CompletionHandoff, HandoffOutcome, HandoffResult
from falflow.completion.messages import OutputsMessage
from falflow.jobs import JobState, utcnow
from tests.integration.submit.conftest import GRACE_S, Delivery, SubmitHarness

JOBS = 6
GRACE_WAIT_S = GRACE_S + 0.2  # the visibility timeout here: longer than the ambiguity grace


@pytest.fixture
def submit_env() -> dict[str, str]:
    # One attempt per submit: every fault reaches the submit path instead of being absorbed by the
    # fal client's own retries (those are the client's tests).
    return {"FAL_MAX_ATTEMPTS": "1", "FAL_READ_TIMEOUT_S": "1", "SUBMIT_RETRY_BASE_SECONDS": "1"}


@dataclass
class Completions:
    """fal's webhooks, as the sink received them, recorded through the completion hand-off."""

    submit: SubmitHarness
    inbox: dict[str, bytes] = field(default_factory=dict)
    handed_over: list[OutputsMessage] = field(default_factory=list)
    results: list[HandoffResult] = field(default_factory=list)
    _seen: int = 0

    def put(self, key: str, body: bytes, metadata: Any) -> None:
        self.inbox[key] = body

    def get(self, key: str) -> bytes:
        return self.inbox[key]

    def send(self, message: OutputsMessage) -> None:
        self.handed_over.append(message)

    def record_new(self) -> None:
        handoff = CompletionHandoff(self.submit.store, self, self)
        for hook in self.submit.sink.received[self._seen :]:
            job_id = parse_qs(urlsplit(hook.path).query)["job_id"][0]
            result = handoff.record(
                job_id, hook.json()["request_id"], hook.body, source="webhook", now=utcnow()
            )
            self.results.append(result)
        self._seen = len(self.submit.sink.received)

    def settle(self) -> None:
        self.submit.fal.control.wait_idle(timeout_s=10)
        self.record_new()


def _messages(count: int) -> list[dict[str, Any]]:
    return [
        {"model": "fal-ai/flux/dev", "input": {"prompt": f"job {n}"}, "job_id": f"fault-{n}"}
        for n in range(count)
    ]


def _deliver(submit: SubmitHarness, bodies: list[dict[str, Any]], between: Callable[[], None]) -> Delivery:
    delivery = Delivery()
    pending = [submit.record(body) for body in bodies]
    for receive in range(1, 6):  # MAX_RECEIVES in template.yaml
        for record in pending:
            record["attributes"]["ApproximateReceiveCount"] = str(receive)
        response = submit.invoke(pending)
        delivery.responses.append(response)
        failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
        pending = [record for record in pending if record["messageId"] in failed]
        if not pending:
            break
        between()
    delivery.left = pending
    return delivery


FAULTS: dict[str, dict[str, Any]] = {
    "429": {"rate_429": 0.6},
    "500": {"rate_500": 0.6},
    "503": {"rate_503": 0.6},
    "timeout": {"rate_timeout": 0.6, "timeout_hold_s": 1.5},  # the client gives up after 1 s
    "reset": {"rate_reset": 0.6},
    "all at once": {
        "rate_429": 0.15,
        "rate_500": 0.15,
        "rate_503": 0.15,
        "rate_timeout": 0.15,
        "rate_reset": 0.15,
        "timeout_hold_s": 1.5,
    },
}


@pytest.mark.parametrize("faults", FAULTS.values(), ids=FAULTS.keys())
def test_faults_at_fal_lose_nothing_and_submit_each_job_once(
    submit: SubmitHarness, faults: dict[str, Any]
) -> None:
    submit.fal.control.set_faults(seed=11, submit={**faults, "max_faults": 8})
    completions = Completions(submit)
    bodies = _messages(JOBS)

    def between_receives() -> None:
        time.sleep(GRACE_WAIT_S)
        completions.settle()

    delivery = _deliver(submit, bodies, between_receives)
    completions.settle()

    assert delivery.left == []
    assert len(delivery.responses) > 1, "no fault reached the submit path"
    assert submit.dead_letters() == []  # 8 faults spread over 6 jobs and 5 receives: all get through
    for body in bodies:
        job = submit.job(body["job_id"])
        assert job.state in (JobState.SUBMITTED, JobState.STORING), job
        (fal_job,) = submit.fal_jobs_for(job.job_id)  # exactly one fal submission
        assert fal_job.request_id == job.request_id
    assert not any(r.outcome is HandoffOutcome.FOREIGN_REQUEST for r in completions.results)


def test_a_fal_that_stays_down_sends_every_job_to_the_dlq_with_its_reason(submit: SubmitHarness) -> None:
    submit.fal.control.set_faults(submit={"rate_503": 1.0})
    bodies = _messages(3)

    delivery = _deliver(submit, bodies, lambda: None)

    assert delivery.left == []  # consumed: on the last receive each went to the DLQ itself
    assert len(delivery.responses) == 5
    dead = submit.dead_letters()
    assert sorted(json.loads(m["Body"])["job_id"] for m in dead) == [b["job_id"] for b in bodies]
    for message in dead:
        attributes = message["MessageAttributes"]
        assert attributes[ERROR_TYPE_ATTRIBUTE]["StringValue"] == "SubmitRetryLaterError"
        assert (
            "fal did not take the job: fal server error (503"
            in attributes[ERROR_MESSAGE_ATTRIBUTE]["StringValue"]
        )
    for body in bodies:
        job = submit.job(body["job_id"])
        assert job.state is JobState.ACCEPTED
        assert job.request_id is None
        assert job.submit_lease_until is None  # released: a redrive from the DLQ sends it at once
        assert job.attempts == 5
        assert job.trail[-1].action == "dead_lettered"
    assert submit.fal.control.jobs() == []


def test_a_lost_reply_whose_webhook_comes_late_is_found_in_fals_history_not_resent(
    submit: SubmitHarness,
) -> None:
    submit.fal.control.set_faults(submit={"rate_timeout": 1.0, "timeout_hold_s": 1.5, "max_faults": 1})
    completions = Completions(submit)
    (body,) = _messages(1)

    # No webhook is recorded within the grace: the redelivery asks fal's request history first.
    delivery = _deliver(submit, [body], lambda: time.sleep(GRACE_WAIT_S))
    completions.settle()  # now the webhook arrives

    assert delivery.left == []
    job = submit.job(body["job_id"])
    (fal_job,) = submit.fal_jobs_for(job.job_id)  # sent once
    assert job.request_id == fal_job.request_id
    assert [entry.action for entry in job.trail][:2] == ["submit_ambiguous", "found_in_request_history"]
    assert {r.outcome for r in completions.results} == {HandoffOutcome.RECORDED}
    assert [message.request_id for message in completions.handed_over] == [fal_job.request_id]


def _received(submit: SubmitHarness, body: dict[str, Any]) -> dict[str, Any]:
    """`body` sent to the intake queue and received from it, as Lambda's poller hands it over."""
    url = submit.stack.queue("IntakeQueue").url
    submit.sqs.purge_queue(QueueUrl=url)  # S3's test event, sent when the stack was made
    submit.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    (message,) = submit.sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    record = submit.record(message["Body"], message_id=message["MessageId"])
    record["receiptHandle"] = message["ReceiptHandle"]
    return record


def _back_within(submit: SubmitHarness, seconds: float) -> int | None:
    """The receive count of the intake message if it is visible again within `seconds`."""
    url = submit.stack.queue("IntakeQueue").url
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        messages = submit.sqs.receive_message(QueueUrl=url, AttributeNames=["All"]).get("Messages", [])
        if messages:
            return int(messages[0]["Attributes"]["ApproximateReceiveCount"])
        time.sleep(0.2)
    return None


def test_a_message_whose_job_waits_out_the_grace_comes_back_when_the_grace_ends(
    submit: SubmitHarness,
) -> None:
    # The queue's visibility is the template's 360 s: only the submit can bring it back sooner.
    submit.fal.control.set_faults(submit={"rate_timeout": 1.0, "timeout_hold_s": 1.5, "max_faults": 1})
    (body,) = _messages(1)

    response = submit.invoke([_received(submit, body)])

    assert len(response["batchItemFailures"]) == 1
    assert submit.job(body["job_id"]).submit_ambiguous_at is not None
    assert _back_within(submit, 5.0) == 2


def test_a_message_fal_did_not_take_comes_back_after_its_backoff(submit: SubmitHarness) -> None:
    # No hold of the job says when to try again: SUBMIT_RETRY_BASE_SECONDS (1 s here) at the first
    # receive, not the queue's 360 s visibility timeout.
    submit.fal.control.set_faults(submit={"rate_503": 1.0})
    (body,) = _messages(1)

    response = submit.invoke([_received(submit, body)])

    assert len(response["batchItemFailures"]) == 1
    assert _back_within(submit, 0.5) is None
    assert _back_within(submit, 5.0) == 2
