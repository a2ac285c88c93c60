"""The reconcile function's dead-letter sweep (real handler, moto's server): an outputs message
dead-lettered for a job that the reconciler's store takeover later completes is removed from the
outputs DLQ, as is an intake entry of that job; every message whose job still needs it, or that
names no job, stays visible for operators."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from falflow.aws.clients import aws_client
from falflow.aws.dead_letter import DeadLetterPolicy, dead_letter
from falflow.completion.messages import OutputsMessage
from falflow.jobs import JobState, utcnow
from falflow.reconcile.dead_letters import REMOVED_ACTION
from falflow_tools.local.sqs_source import sqs_record
from tests.fakes.webhook_events import delivery
from tests.fixtures.completion import CompletionStack, CompletionStackFactory
from tests.integration.completion.helpers import accept


def _dead_lettered_on_the_store_path(stack: CompletionStack, job_id: str) -> bytes:
    """A completion whose store run fails on its last receive (its inbox object is gone): the
    outputs message is in the DLQ, the job STORING. Returns the inbox object, to put back."""
    accept(stack, job_id, "fal-ai/flux/dev")
    body = delivery(f"req-{job_id}", payload={"seed": 1})
    assert stack.deliver(body, stack.signer.headers(body, f"req-{job_id}"), job_id) == 200
    (record,) = stack.outputs_messages()
    completion_key = stack.job(job_id).completion_key
    assert completion_key is not None
    inbox = stack.s3_object(completion_key)["body"]
    aws_client("s3").delete_object(Bucket=stack.bucket, Key=completion_key)
    record["attributes"]["ApproximateReceiveCount"] = "5"
    assert stack.store([record]) == []
    assert stack.job(job_id).state is JobState.STORING
    return inbox


def _intake_entry(stack: CompletionStack, body: dict[str, Any], **kwargs: Any) -> None:
    """An intake message dead-lettered the way the submit does it."""
    sqs, intake = aws_client("sqs"), stack.stack.queue("IntakeQueue")
    sqs.send_message(QueueUrl=intake.url, MessageBody=json.dumps(body))
    # The queue also holds S3's test event of the bucket's notification setup: take our own.
    (message,) = (
        m
        for m in sqs.receive_message(
            QueueUrl=intake.url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=0,
            MessageSystemAttributeNames=["All"],
        )["Messages"]
        if m["Body"] == json.dumps(body)
    )
    record = SQSRecord(sqs_record(message, queue_arn=intake.arn, region=stack.stack.region))
    policy = DeadLetterPolicy(stack.stack.queue("IntakeDLQ").url, 5)
    dead_letter(sqs, policy, record, "SubmitRetryLaterError", "fal did not answer", **kwargs)
    sqs.delete_message(QueueUrl=intake.url, ReceiptHandle=message["ReceiptHandle"])


def _visible(stack: CompletionStack, queue: str) -> list[dict[str, Any]]:
    """Every message a reader sees now (they are released again right after)."""
    sqs, url = aws_client("sqs"), stack.stack.queue(queue).url
    seen: dict[str, dict[str, Any]] = {}
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30, MessageAttributeNames=["All"]
    ).get("Messages", []):
        seen.update({m["MessageId"]: dict(m) for m in batch})
    for message in seen.values():
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
        )
    return list(seen.values())


def _fill_the_dlqs(stack: CompletionStack) -> bytes:
    """Entries of the job "taken-over" in both DLQs, in every form, next to ones that must stay.
    Returns the job's lost inbox object."""
    inbox = _dead_lettered_on_the_store_path(stack, "taken-over")
    _dead_lettered_on_the_store_path(stack, "still-storing")  # its inbox stays lost: it needs its message
    # One SQS itself moved after crashes: no falflow attributes, only the outputs message's body.
    crashed = OutputsMessage(
        job_id="taken-over",
        request_id="req-taken-over",
        completion_key="k",
        handed_over_at=stack.job("taken-over").completion_enqueued_at,  # the hand-off it was
    )
    sqs = aws_client("sqs")
    sqs.send_message(QueueUrl=stack.stack.queue("OutputsDLQ").url, MessageBody=crashed.model_dump_json())
    message = {"model": "fal-ai/flux/dev", "input": {"prompt": "p"}, "job_id": "taken-over"}
    _intake_entry(stack, message, job_ids=["taken-over"])
    _intake_entry(stack, {**message, "seed": 2})  # a reuse of the job id: it names no job
    # SQS-moved intake message: its body alone cannot tell its job for sure, so it stays.
    sqs.send_message(QueueUrl=stack.stack.queue("IntakeDLQ").url, MessageBody=json.dumps(message))
    return inbox


def _store_run_died_holding(stack: CompletionStack, job_id: str, inbox: bytes) -> None:
    """The job put right (its inbox object back), then a store run died holding its lease."""
    completion_key = stack.job(job_id).completion_key
    assert completion_key is not None
    aws_client("s3").put_object(Bucket=stack.bucket, Key=completion_key, Body=inbox)
    died = stack.jobs.take_store_lease(
        job_id, seen_until=None, now=utcnow() - timedelta(minutes=20), lease=timedelta(minutes=16)
    )
    assert died is not None


def _assert_only_the_entries_still_needed_are_left(stack: CompletionStack) -> None:
    (left,) = _visible(stack, "OutputsDLQ")
    assert json.loads(left["Body"])["job_id"] == "still-storing"
    intake_left = _visible(stack, "IntakeDLQ")
    assert sorted(json.loads(m["Body"]).get("seed", 0) for m in intake_left) == [0, 2]
    assert [m for m in intake_left if "falflow-job-ids" in m.get("MessageAttributes", {})] == []


def _assert_noted_on_the_job(stack: CompletionStack) -> None:
    notes = [t for t in stack.job("taken-over").trail if t.action == REMOVED_ACTION]
    assert len(notes) == 3
    assert {n.reason.split(";")[0] for n in notes} == {"dead letter removed: job completed"}
    assert sum("intake DLQ" in n.reason for n in notes) == 1
    assert [t for t in stack.job("still-storing").trail if t.action == REMOVED_ACTION] == []


def test_a_job_the_store_takeover_completes_leaves_nothing_in_either_dlq(
    completion_stack: CompletionStackFactory,
) -> None:
    stack = completion_stack()
    inbox = _fill_the_dlqs(stack)
    _store_run_died_holding(stack, "taken-over", inbox)

    first = stack.reconcile()  # takes the lease over; the job is not done yet, so nothing is removed
    assert first["taken_over"] == 1
    assert (first["dead_letters_removed"], first["dead_letters_kept"]) == (
        {"intake": 0, "outputs": 0},
        {"intake": 3, "outputs": 3},
    )
    assert len(_visible(stack, "OutputsDLQ")) == 3  # released at once, not hidden until a timeout
    assert stack.drain_outputs() == 1
    assert stack.job("taken-over").state is JobState.COMPLETED

    second = stack.reconcile()

    assert second["dead_letters_removed"] == {"intake": 1, "outputs": 2}
    _assert_only_the_entries_still_needed_are_left(stack)
    _assert_noted_on_the_job(stack)
    assert stack.reconcile()["dead_letters_removed"] == {"intake": 0, "outputs": 0}  # nothing twice


def test_an_outputs_message_sqs_moved_to_the_dlq_unstarted_is_handed_to_the_store_again(
    completion_stack: CompletionStackFactory,
) -> None:
    """Every store run that received it stopped before starting it; SQS's own redrive moved it on
    the receive after the last (moto's server does it as SQS does). The reconciler's sweep finds it
    without a falflow reason, hands the job to the store again and deletes the entry."""
    stack = completion_stack()
    accept(stack, "unstarted", "fal-ai/flux/dev")
    body = delivery("req-unstarted", payload={"seed": 1})
    assert stack.deliver(body, stack.signer.headers(body, "req-unstarted"), "unstarted") == 200
    sqs, outputs = aws_client("sqs"), stack.stack.queue("OutputsQueue")
    redrive = stack.stack.resolver.template["Resources"]["OutputsQueue"]["Properties"]["RedrivePolicy"]
    receives = int(redrive["maxReceiveCount"])
    for _ in range(receives):
        (received,) = sqs.receive_message(QueueUrl=outputs.url, VisibilityTimeout=0)["Messages"]
    assert sqs.receive_message(QueueUrl=outputs.url).get("Messages", []) == []  # moved
    (moved,) = _visible(stack, "OutputsDLQ")
    assert moved["Body"] == received["Body"]
    assert stack.job("unstarted").state is JobState.STORING

    swept = stack.reconcile()

    assert swept["dead_letters_removed"]["outputs"] == 1
    assert _visible(stack, "OutputsDLQ") == []
    job = stack.job("unstarted")
    assert (job.state, job.store_takeovers, job.trail[-1].action) == (JobState.STORING, 1, "store_taken_over")
    assert stack.drain_outputs() == 1
    assert stack.job("unstarted").state is JobState.COMPLETED
    # the entry is gone and the job done: a later run hands nothing back again
    assert stack.reconcile()["dead_letters_removed"] == {"intake": 0, "outputs": 0}
