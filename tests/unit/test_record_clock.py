"""A batch starts a record only while the invocation has time to finish it, and hands the rest back
to their queue (falflow.aws.batch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import ClientError

from falflow.aws.batch import NotStartedForTime, RecordClock

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_sqs import SQSClient


class Clock:
    """The invocation's deadline and a monotonic clock, moved by the test."""

    def __init__(self, timeout_s: float) -> None:
        self.now = 0.0
        self.deadline = timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self.deadline - self.now) * 1000), 0)


class Sqs:
    def __init__(self, *, send_fails: bool = False) -> None:
        self.released: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self._send_fails = send_fails

    def change_message_visibility(self, **kwargs: Any) -> None:
        self.released.append(kwargs)

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        if self._send_fails:
            raise ClientError({"Error": {"Code": "InternalError", "Message": "sqs is down"}}, "SendMessage")
        self.sent.append(kwargs)
        return {"MessageId": f"copy-{len(self.sent)}"}


def timed[T](clock: Clock, sqs: Sqs, handle: Callable[[SQSRecord], T]) -> Callable[[SQSRecord], T | None]:
    recorded = RecordClock(cast("LambdaContext", clock), now=lambda: clock.now)
    return recorded.timed(handle, lambda: cast("SQSClient", sqs))


def record(n: int) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": f"m-{n}",
            "receiptHandle": f"rh-{n}",
            "body": f'{{"job_id": "job-{n}"}}',
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:outputs",
            "attributes": {"ApproximateReceiveCount": "1"},
            "messageAttributes": {"origin": {"stringValue": "webhook", "dataType": "String"}},
        }
    )


QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/outputs"


def test_records_run_until_the_time_left_is_less_than_the_longest_took_with_its_margin() -> None:
    clock, sqs = Clock(timeout_s=10.0), Sqs()
    ran: list[str] = []

    def handle(r: SQSRecord) -> str:
        clock.now += 3.0  # each record takes 3 s: 1.5 x 3 = 4.5 s are needed to start another
        ran.append(r.message_id)
        return r.message_id

    run = timed(clock, sqs, handle)
    assert run(record(1)) == "m-1"  # 7 s left
    assert run(record(2)) == "m-2"  # 4 s left
    assert run(record(3)) is None  # not started: handed back, so the batch lets Lambda delete it

    assert ran == ["m-1", "m-2"]
    # A new message of the same body and attributes: the receive it never used is not counted
    # toward its maxReceiveCount, as a failure made visible again would be.
    assert sqs.sent == [
        {
            "QueueUrl": QUEUE_URL,
            "MessageBody": '{"job_id": "job-3"}',
            "MessageAttributes": {"origin": {"DataType": "String", "StringValue": "webhook"}},
        }
    ]
    assert sqs.released == []


def test_a_record_that_cannot_be_handed_back_is_reported_failed_and_visible_again_at_once() -> None:
    clock, sqs = Clock(timeout_s=10.0), Sqs(send_fails=True)

    def handle(r: SQSRecord) -> str:
        clock.now += 7.0
        return r.message_id

    run = timed(clock, sqs, handle)
    assert run(record(1)) == "m-1"
    with pytest.raises(NotStartedForTime, match="m-2 left for the next invocation"):
        run(record(2))
    # Visible again at once, not after the queue's visibility timeout.
    assert sqs.released == [{"QueueUrl": QUEUE_URL, "ReceiptHandle": "rh-2", "VisibilityTimeout": 0}]


def test_a_tenth_of_the_time_is_kept_back_however_quick_the_records_were() -> None:
    clock, sqs = Clock(timeout_s=100.0), Sqs()
    run = timed(clock, sqs, lambda r: r.message_id)
    clock.now = 89.0  # 11 s left: more than the 10 s kept back
    assert run(record(1)) == "m-1"
    clock.now = 90.5
    assert run(record(2)) is None
    assert len(sqs.sent) == 1


def test_the_first_record_always_starts_and_a_failing_record_still_counts_its_time() -> None:
    clock, sqs = Clock(timeout_s=10.0), Sqs()

    def fail(_: SQSRecord) -> None:
        clock.now += 6.0
        raise RuntimeError("boom")

    run = timed(clock, sqs, fail)
    with pytest.raises(RuntimeError):
        run(record(1))
    assert run(record(2)) is None  # 4 s left, a record took 6 s: handed back
    assert [r["MessageBody"] for r in sqs.sent] == ['{"job_id": "job-2"}']
