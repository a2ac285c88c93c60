"""Dead-lettering with a reason: on a message's last receive the function sends it to the DLQ itself,
with the error as message attributes, and the batch counts the record as handled; SQS's own redrive
stays the backstop for a crash. Why: docs/adr/0010-messages-are-dead-lettered-with-their-reason.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


# Message attribute names carried by every message falflow dead-letters itself.
ERROR_TYPE_ATTRIBUTE = "falflow-error-type"
ERROR_MESSAGE_ATTRIBUTE = "falflow-error-message"
SOURCE_QUEUE_ATTRIBUTE = "falflow-source-queue"
RECEIVE_COUNT_ATTRIBUTE = "falflow-receive-count"
_MAX_REASON_CHARS = 1000


class DeadLetterSettings(BaseSettings):
    """A group of the settings of a function that consumes a queue (env DLQ_URL, MAX_RECEIVES)."""

    model_config = SettingsConfigDict(extra="ignore")

    dlq_url: str
    max_receives: int = 5

    def dead_letter_policy(self) -> DeadLetterPolicy:
        return DeadLetterPolicy(dlq_url=self.dlq_url, max_receives=self.max_receives)


@dataclass(frozen=True)
class DeadLetterPolicy:
    dlq_url: str
    max_receives: int

    def is_last_attempt(self, record: SQSRecord) -> bool:
        return int(record.attributes.approximate_receive_count or 1) >= self.max_receives


def dead_letter(
    sqs: SQSClient, policy: DeadLetterPolicy, record: SQSRecord, error_type: str, reason: str
) -> None:
    """Send `record` to the DLQ with why it failed (a type and a message; never a traceback or
    secret). A handler may also call it at once for a message that can never succeed."""
    sqs.send_message(
        QueueUrl=policy.dlq_url,
        MessageBody=record.body,
        MessageAttributes={
            ERROR_TYPE_ATTRIBUTE: {"DataType": "String", "StringValue": error_type},
            ERROR_MESSAGE_ATTRIBUTE: {
                "DataType": "String",
                "StringValue": (reason or "-")[:_MAX_REASON_CHARS],
            },
            SOURCE_QUEUE_ATTRIBUTE: {"DataType": "String", "StringValue": record.event_source_arn or "-"},
            RECEIVE_COUNT_ATTRIBUTE: {
                "DataType": "Number",
                "StringValue": record.attributes.approximate_receive_count or "1",
            },
        },
    )


def with_dead_letter_reason[T](
    handle: Callable[[SQSRecord], T],
    policy: DeadLetterPolicy,
    sqs: Callable[[], SQSClient],
    on_dead_letter: Callable[[SQSRecord, BaseException], Any] | None = None,
) -> Callable[[SQSRecord], T | None]:
    """Wrap a record handler: a failure on the last receive goes to the DLQ with its reason.

    Earlier failures re-raise so the batch reports the record and SQS retries it after the
    visibility timeout.
    """

    def handle_record(record: SQSRecord) -> T | None:
        try:
            return handle(record)
        except Exception as error:
            if not policy.is_last_attempt(record):
                raise
            dead_letter(sqs(), policy, record, type(error).__name__, str(error))
            if on_dead_letter is not None:
                on_dead_letter(record, error)
            return None

    return handle_record
