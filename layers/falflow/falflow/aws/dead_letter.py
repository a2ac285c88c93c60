"""Dead-lettering with a reason: on a message's last receive the function sends it to the DLQ itself,
with the error and the jobs it was for as message attributes, and the batch counts the record as
handled; SQS's own redrive stays the backstop for a crash. Why:
docs/adr/0010-messages-are-dead-lettered-with-their-reason.md. `SqsDeadLetterQueue` reads a DLQ back
for the reconciler's sweep (falflow.reconcile.dead_letters), which removes what a completed job left.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import ClientError
from pydantic_settings import BaseSettings, SettingsConfigDict

from falflow.failures import report_failure

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef, MessageTypeDef


# Message attribute names carried by every message falflow dead-letters itself.
ERROR_TYPE_ATTRIBUTE = "falflow-error-type"
ERROR_MESSAGE_ATTRIBUTE = "falflow-error-message"
SOURCE_QUEUE_ATTRIBUTE = "falflow-source-queue"
RECEIVE_COUNT_ATTRIBUTE = "falflow-receive-count"
# The jobs the message was for, as a JSON list; absent when the dead-letterer could not say which
# (a body that names no job) or the message is not theirs (a reused job_id: job_id_conflict).
JOB_IDS_ATTRIBUTE = "falflow-job-ids"
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
    sqs: SQSClient,
    policy: DeadLetterPolicy,
    record: SQSRecord,
    error_type: str,
    reason: str,
    *,
    job_ids: Sequence[str] = (),
) -> None:
    """Send `record` to the DLQ with why it failed (a type and a message; never a traceback or
    secret) and the jobs it was for. A handler may also call it at once for a message that can never
    succeed."""
    attributes: dict[str, MessageAttributeValueTypeDef] = {
        ERROR_TYPE_ATTRIBUTE: {"DataType": "String", "StringValue": error_type},
        ERROR_MESSAGE_ATTRIBUTE: {"DataType": "String", "StringValue": (reason or "-")[:_MAX_REASON_CHARS]},
        SOURCE_QUEUE_ATTRIBUTE: {"DataType": "String", "StringValue": record.event_source_arn or "-"},
        RECEIVE_COUNT_ATTRIBUTE: {
            "DataType": "Number",
            "StringValue": record.attributes.approximate_receive_count or "1",
        },
    }
    if job_ids:
        attributes[JOB_IDS_ATTRIBUTE] = {"DataType": "String", "StringValue": json.dumps(list(job_ids))}
    sqs.send_message(QueueUrl=policy.dlq_url, MessageBody=record.body, MessageAttributes=attributes)


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
                dead_letter(
                    sqs(), policy, record, type(error).__name__, str(error), job_ids=job_ids_of(record, error)
                )
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


def job_ids_of(record: SQSRecord, error: BaseException) -> tuple[str, ...]:
    """Every job a failed record was for: the error's ``job_ids`` when it knows them all (a message
    carrying several jobs), else `job_id_of`'s one, else none."""
    job_ids = getattr(error, "job_ids", None)
    if isinstance(job_ids, tuple) and job_ids and all(isinstance(j, str) for j in job_ids):
        return job_ids
    job_id = job_id_of(record, error)
    return (job_id,) if job_id else ()


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


# ------------------------------------------------------------------------------- reading a DLQ


def receive_each_once(
    sqs: SQSClient, queue_url: str, *, limit: int, visibility_s: int
) -> list[MessageTypeDef]:
    """Up to `limit` messages of a queue, each once, hidden for `visibility_s` so that the reader
    does not see one twice; whatever the reader does not delete it should make visible again
    (`make_visible`)."""
    seen: dict[str, MessageTypeDef] = {}
    while len(seen) < limit:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, limit - len(seen)),
            VisibilityTimeout=visibility_s,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            break
        for message in batch:
            seen.setdefault(message["MessageId"], message)
    return list(seen.values())


def _batches(receipt_handles: Iterable[str]) -> Iterator[list[tuple[str, str]]]:
    """The handles in SQS's batches of at most 10, each with its entry id."""
    pending = list(receipt_handles)
    for start in range(0, len(pending), 10):
        yield [(str(i), handle) for i, handle in enumerate(pending[start : start + 10])]


def make_visible(sqs: SQSClient, queue_url: str, receipt_handles: Iterable[str]) -> None:
    """Make received messages visible again at once (best effort: their visibility also ends)."""
    for batch in _batches(receipt_handles):
        with contextlib.suppress(ClientError):
            sqs.change_message_visibility_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": i, "ReceiptHandle": handle, "VisibilityTimeout": 0} for i, handle in batch],
            )


def delete_received(sqs: SQSClient, queue_url: str, receipt_handles: Iterable[str]) -> None:
    """Delete received messages."""
    for batch in _batches(receipt_handles):
        sqs.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": i, "ReceiptHandle": handle} for i, handle in batch]
        )


def string_attribute(message: MessageTypeDef, name: str) -> str | None:
    value = message.get("MessageAttributes", {}).get(name)
    return value.get("StringValue") if value else None


@dataclass(frozen=True)
class DeadLetterMessage:
    """A message read from a DLQ, and the jobs it says it was for (none: it does not say).
    `moved_by_sqs`: it carries no falflow reason, so SQS moved it itself after its last receive,
    with no run of the function having dead-lettered it (a crash, or no run started it)."""

    message_id: str
    receipt_handle: str
    job_ids: tuple[str, ...]
    moved_by_sqs: bool = False
    body: str = ""


class SqsDeadLetterQueue:
    """A DLQ as the reconciler's sweep sees it. A message falflow dead-lettered names its jobs in
    `JOB_IDS_ATTRIBUTE`; one SQS moved itself (after a crash) carries no attribute, and
    `jobs_of_body` says which jobs its body is for, if that can be told from the body alone."""

    def __init__(
        self,
        sqs: Callable[[], SQSClient],
        queue_url: str,
        *,
        name: str,
        visibility_s: int,
        jobs_of_body: Callable[[str], tuple[str, ...]] = lambda body: (),
    ) -> None:
        self.name = name
        self._sqs = sqs
        self._queue_url = queue_url
        self._visibility_s = visibility_s
        self._jobs_of_body = jobs_of_body

    def receive(self, limit: int) -> list[DeadLetterMessage]:
        messages = receive_each_once(
            self._sqs(), self._queue_url, limit=limit, visibility_s=self._visibility_s
        )
        return [
            DeadLetterMessage(
                m["MessageId"],
                m["ReceiptHandle"],
                self._job_ids(m),
                moved_by_sqs=string_attribute(m, ERROR_TYPE_ATTRIBUTE) is None,
                body=m.get("Body", ""),
            )
            for m in messages
        ]

    def _job_ids(self, message: MessageTypeDef) -> tuple[str, ...]:
        listed = string_attribute(message, JOB_IDS_ATTRIBUTE)
        if listed is not None:
            try:
                job_ids = json.loads(listed)
            except ValueError:
                return ()
            valid = isinstance(job_ids, list) and all(isinstance(j, str) for j in job_ids)
            return tuple(job_ids) if valid else ()
        if string_attribute(message, ERROR_TYPE_ATTRIBUTE) is not None:
            return ()  # falflow dead-lettered it and named no job: the message is no job's own
        return self._jobs_of_body(message.get("Body", ""))

    def delete(self, message: DeadLetterMessage) -> None:
        self._sqs().delete_message(QueueUrl=self._queue_url, ReceiptHandle=message.receipt_handle)

    def release(self, messages: Iterable[DeadLetterMessage]) -> None:
        make_visible(self._sqs(), self._queue_url, (m.receipt_handle for m in messages))
