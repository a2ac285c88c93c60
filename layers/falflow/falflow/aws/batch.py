"""Records started only while the invocation has time to finish them.

A record cut off by the function's timeout fails in the worst way: Lambda stops the run mid-write
(outputs half copied; a completion event published but not yet marked, so the retry publishes it
again) and the whole batch comes back, finished records too. So a batch stops starting records when
the time left is less than one may take: the longest so far with a margin, and never less than a
tenth of the time the invocation started with. A record not started is handed back to its queue as
a new message and counted handled (Lambda deletes the one received): a receive it never used must not
count toward its maxReceiveCount, or a backlog that outlasts a few invocations sends work nobody
tried to the DLQ. If the copy cannot be sent, the record is reported failed and made visible again at
once, so the next invocation takes it without waiting out the queue's visibility timeout (the
outputs queue's is 90 minutes).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

logger = Logger(child=True)
T = TypeVar("T")

# Time kept back, as a part of what the invocation started with; and the margin on the longest record.
RESERVE_FRACTION = 0.1
MARGIN = 1.5


class NotStartedForTime(Exception):
    """The record was not started: the invocation had too little time left to finish it."""


class RecordClock:
    """One invocation's time, record by record."""

    def __init__(self, context: LambdaContext, *, now: Callable[[], float] = time.monotonic) -> None:
        self._context = context
        self._now = now
        self._reserve_s = self._left_s() * RESERVE_FRACTION
        self._longest_s = 0.0

    def _left_s(self) -> float:
        return self._context.get_remaining_time_in_millis() / 1000

    def has_time_for_another(self) -> bool:
        return self._left_s() > max(self._reserve_s, self._longest_s * MARGIN)

    def timed(
        self, handle: Callable[[SQSRecord], T], sqs: Callable[[], SQSClient]
    ) -> Callable[[SQSRecord], T | None]:
        """`handle`, run only while there is time for it; a record not started is handed back."""

        def handle_in_time(record: SQSRecord) -> T | None:
            if not self.has_time_for_another():
                why = f"{self._left_s():.1f} s left, a record took up to {self._longest_s:.1f} s"
                if hand_back(sqs(), record, why=why):
                    return None
                visible_after(sqs(), record, 0)
                raise NotStartedForTime(f"message {record.message_id} left for the next invocation: {why}")
            started = self._now()
            try:
                return handle(record)
            finally:
                self._longest_s = max(self._longest_s, self._now() - started)

        return handle_in_time


# SQS's longest visibility timeout.
MAX_VISIBILITY_S = 43_200


def hand_back(sqs: SQSClient, record: SQSRecord, *, why: str) -> bool:
    """Send `record` to its queue again as a new message (its body and string attributes); whether
    it was sent. The received one is then the batch's to delete."""
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        name: {"DataType": value.data_type, "StringValue": value.string_value}
        for name, value in record.message_attributes.items()
        if value.string_value is not None and value.data_type
    }
    try:
        sent = sqs.send_message(
            QueueUrl=record.queue_url, MessageBody=record.body, MessageAttributes=attributes
        )
    except (BotoCoreError, ClientError):
        return False
    logger.info(
        "record handed back to its queue for a later invocation",
        message_id=record.message_id,
        new_message_id=sent.get("MessageId"),
        why=why,
    )
    return True


def visible_after(sqs: SQSClient, record: SQSRecord, seconds: float) -> None:
    """A record this invocation reports failed comes back after `seconds`, not after the queue's
    visibility timeout; if that call fails, it comes back after the visibility timeout."""
    delay = min(MAX_VISIBILITY_S, max(0, math.ceil(seconds)))
    with contextlib.suppress(BotoCoreError, ClientError):
        sqs.change_message_visibility(
            QueueUrl=record.queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=delay
        )
    logger.info("record left for a later invocation", message_id=record.message_id, after_s=delay)
