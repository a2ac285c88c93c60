"""SQS adapter of the intake queue as the reconciler and the release of held jobs send to it (a job's
message sent again: `falflow.spend.release.IntakeQueue`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from falflow.aws.clients import aws_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


class SqsIntakeQueue:
    def __init__(self, queue_url: str, sqs: SQSClient | None = None) -> None:
        self._queue_url = queue_url
        self._sqs = sqs  # None: the container's client, built on first use

    def send(self, body: str) -> None:
        (self._sqs or aws_client("sqs")).send_message(QueueUrl=self._queue_url, MessageBody=body)
