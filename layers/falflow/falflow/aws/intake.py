"""SQS adapter of the intake queue as the reconciler, the release of held jobs (a job's message sent
again: `falflow.spend.release.IntakeQueue`) and a batch's fan-out (falflow.submit.batches) send to it."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from falflow.aws.clients import aws_client

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


_SQS_BATCH: Final = 10  # SendMessageBatch's most entries
_SENDERS: Final = 8


class SqsIntakeQueue:
    def __init__(self, queue_url: str, sqs: SQSClient | None = None) -> None:
        self._queue_url = queue_url
        self._sqs = sqs  # None: the container's client, built on first use

    def send(self, body: str) -> None:
        (self._sqs or aws_client("sqs")).send_message(QueueUrl=self._queue_url, MessageBody=body)

    def send_many(self, bodies: Sequence[str]) -> None:
        """Send every body, ten to a SendMessageBatch call, the calls on a few threads; raise if any
        message was not taken (the caller sends them all again: each is a job's, deduplicated by
        its job id)."""
        sqs = self._sqs or aws_client("sqs")
        groups = [bodies[start : start + _SQS_BATCH] for start in range(0, len(bodies), _SQS_BATCH)]

        def send(group: Sequence[str]) -> int:
            response = sqs.send_message_batch(
                QueueUrl=self._queue_url,
                Entries=[{"Id": str(index), "MessageBody": body} for index, body in enumerate(group)],
            )
            return len(response.get("Failed", []))

        with ThreadPoolExecutor(max_workers=_SENDERS) as pool:
            failed = sum(pool.map(send, groups))
        if failed:
            raise IntakeSendError(f"the intake queue did not take {failed} of {len(bodies)} messages")


class IntakeSendError(RuntimeError):
    pass
