"""Dead-lettering with a reason: on a message's last receive the function sends it to the DLQ itself,
with the error as message attributes, and the batch counts the record as handled; SQS's own redrive
stays the backstop for a crash. Why: docs/adr/0010-messages-are-dead-lettered-with-their-reason.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic_settings import BaseSettings, SettingsConfigDict

from falflow.failures import report_failure

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
    *,
    path: str,
) -> Callable[[SQSRecord], T | None]:
    """Wrap a record handler: a failure on the last receive goes to the DLQ with its reason.

    Earlier failures re-raise so the batch reports the record and SQS retries it after the
    visibility timeout. Either way the failure is reported once (`falflow.failures`).
    """

    def handle_record(record: SQSRecord) -> T | None:
        try:
            return handle(record)
        except Exception as error:
            last = policy.is_last_attempt(record)
            if last:
                dead_letter(sqs(), policy, record, type(error).__name__, str(error))
            report_failure(
                path,
                error,
                job_id=job_id_of(record, error),
                dead_lettered=last,
                message_id=record.message_id,
                receive_count=record.attributes.approximate_receive_count,
            )
            if not last:
                raise
            if on_dead_letter is not None:
                on_dead_letter(record, error)
            return None

    return handle_record


def job_id_of(record: SQSRecord, error: BaseException) -> str | None:
    """The job a failed record was about: the error's own, else a ``job_id`` field of a JSON body
    (an outputs message, a job message naming its id); None when neither says."""
    job_id = getattr(error, "job_id", None)
    if isinstance(job_id, str):
        return job_id
    try:
        body = json.loads(record.body)
    except ValueError:
        return None
    value = body.get("job_id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None
