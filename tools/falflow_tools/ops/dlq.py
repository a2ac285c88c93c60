"""Dead-letter queues: what sits in them and why, and sending it back to be processed again.

The DLQs are the stack outputs named `…DLQUrl` (IntakeDLQUrl, OutputsDLQUrl). A message falflow
dead-lettered itself carries its reason (`falflow.aws.dead_letter`); one SQS moved after a crash or
timeout carries none. Redrive sends a message back to the queue it came from and deletes it here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from falflow.aws.dead_letter import (
    ERROR_MESSAGE_ATTRIBUTE,
    ERROR_TYPE_ATTRIBUTE,
    JOB_IDS_ATTRIBUTE,
    RECEIVE_COUNT_ATTRIBUTE,
    SOURCE_QUEUE_ATTRIBUTE,
    make_visible,
    receive_each_once,
    string_attribute,
)
from falflow_tools.ops.target import OpsError, Target

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef, MessageTypeDef

_DLQ_SUFFIX = "DLQUrl"
# Attributes that describe a dead-lettering; they are not sent back with the message.
_REASON_ATTRIBUTES = {
    ERROR_TYPE_ATTRIBUTE,
    ERROR_MESSAGE_ATTRIBUTE,
    SOURCE_QUEUE_ATTRIBUTE,
    RECEIVE_COUNT_ATTRIBUTE,
    JOB_IDS_ATTRIBUTE,
}
# Long enough to read every message once without seeing one twice; made visible again after.
_PEEK_VISIBILITY_S = 20
_MAX_MESSAGES = 1000


def dead_letter_queues(target: Target) -> dict[str, str]:
    """Short name ("intake", "outputs") → DLQ URL, from the stack's outputs."""
    return {
        name.removesuffix(_DLQ_SUFFIX).lower(): url
        for name, url in target.outputs.items()
        if name.endswith(_DLQ_SUFFIX) and url
    }


def _queue_url(target: Target, queue: str) -> str:
    queues = dead_letter_queues(target)
    if queue not in queues:
        raise OpsError(f"no dead-letter queue {queue!r}; {target.name} has: {', '.join(sorted(queues))}")
    return queues[queue]


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    message_id: str
    body: str
    sent_at: str
    receive_count: int
    error_type: str | None
    error_message: str | None
    source_queue_arn: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    receipt_handle: str = ""

    @property
    def reason(self) -> str:
        if self.error_type:
            return f"{self.error_type}: {self.error_message or ''}".rstrip(": ")
        return "no reason recorded (moved by SQS after repeated failed receives: a crash or timeout?)"

    def to_json(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "message_id": self.message_id,
            "sent_at": self.sent_at,
            "receive_count": self.receive_count,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "source_queue_arn": self.source_queue_arn,
            "body": self.body,
        }


def _dead_letter(queue: str, message: MessageTypeDef) -> DeadLetter:
    sent_ms = int(message.get("Attributes", {}).get("SentTimestamp", "0"))
    counted = string_attribute(message, RECEIVE_COUNT_ATTRIBUTE)
    return DeadLetter(
        queue=queue,
        message_id=message["MessageId"],
        body=message.get("Body", ""),
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC).isoformat(timespec="seconds"),
        receive_count=int(counted)
        if counted
        else int(message.get("Attributes", {}).get("ApproximateReceiveCount", "0")),
        error_type=string_attribute(message, ERROR_TYPE_ATTRIBUTE),
        error_message=string_attribute(message, ERROR_MESSAGE_ATTRIBUTE),
        source_queue_arn=string_attribute(message, SOURCE_QUEUE_ATTRIBUTE),
        attributes=dict(message.get("MessageAttributes", {})),
        receipt_handle=message["ReceiptHandle"],
    )


def _peek(target: Target, queue: str, url: str, limit: int) -> list[DeadLetter]:
    """Read up to `limit` messages, each once, holding them invisible until the caller is done."""
    messages = receive_each_once(target.sqs(), url, limit=limit, visibility_s=_PEEK_VISIBILITY_S)
    return [_dead_letter(queue, message) for message in messages]


def _release(target: Target, url: str, letters: Iterable[DeadLetter]) -> None:
    """Make peeked messages visible again at once (listing must not hide them for long)."""
    make_visible(target.sqs(), url, (letter.receipt_handle for letter in letters))


def list_dead_letters(target: Target, queues: Sequence[str] = (), *, limit: int = 100) -> list[DeadLetter]:
    """Messages in the named DLQs (all of them by default), oldest first."""
    names = list(queues) or sorted(dead_letter_queues(target))
    letters: list[DeadLetter] = []
    for name in names:
        url = _queue_url(target, name)
        peeked = _peek(target, name, url, limit)
        _release(target, url, peeked)
        letters.extend(peeked)
    return sorted(letters, key=lambda letter: letter.sent_at)


@dataclass(frozen=True)
class Redriven:
    queue: str
    message_id: str
    new_message_id: str
    to_queue_url: str


def _source_queue_url(target: Target, dlq_url: str, letter: DeadLetter) -> str:
    sqs = target.sqs()
    if letter.source_queue_arn and letter.source_queue_arn != "-":
        name = letter.source_queue_arn.rsplit(":", 1)[-1]
        with contextlib.suppress(ClientError):
            return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    sources = sqs.list_dead_letter_source_queues(QueueUrl=dlq_url).get("queueUrls", [])
    if len(sources) != 1:
        raise OpsError(f"cannot tell which queue message {letter.message_id} came from")
    return sources[0]


def _attributes_to_send(letter: DeadLetter) -> dict[str, MessageAttributeValueTypeDef]:
    kept: dict[str, MessageAttributeValueTypeDef] = {}
    for name, value in letter.attributes.items():
        if name in _REASON_ATTRIBUTES:
            continue
        attribute: dict[str, Any] = {"DataType": value["DataType"]}
        for key in ("StringValue", "BinaryValue"):
            if key in value:
                attribute[key] = value[key]
        kept[name] = attribute  # type: ignore[assignment]
    return kept


def redrive(
    target: Target, queue: str, *, message_ids: Sequence[str] = (), limit: int = _MAX_MESSAGES
) -> list[Redriven]:
    """Send messages of one DLQ back to their source queue (all of them unless ids are given)."""
    url = _queue_url(target, queue)
    sqs = target.sqs()
    peeked = _peek(target, queue, url, limit)
    chosen = [letter for letter in peeked if not message_ids or letter.message_id in message_ids]
    missing = set(message_ids) - {letter.message_id for letter in chosen}
    _release(target, url, [letter for letter in peeked if letter not in chosen])
    if missing:
        _release(target, url, chosen)
        raise OpsError(f"not in the {queue} DLQ: {', '.join(sorted(missing))}")
    done: list[Redriven] = []
    for letter in chosen:
        destination = _source_queue_url(target, url, letter)
        attributes = _attributes_to_send(letter)
        sent = sqs.send_message(
            QueueUrl=destination,
            MessageBody=letter.body,
            **({"MessageAttributes": attributes} if attributes else {}),  # type: ignore[arg-type]
        )
        # Deleted only after the copy is safely on its way: a crash in between duplicates, never loses.
        sqs.delete_message(QueueUrl=url, ReceiptHandle=letter.receipt_handle)
        done.append(Redriven(queue, letter.message_id, sent["MessageId"], destination))
    return done


def find_dead_letter(target: Target, message_id: str) -> tuple[str, DeadLetter] | None:
    """The DLQ holding a message with this id, if any."""
    for letter in list_dead_letters(target, limit=_MAX_MESSAGES):
        if letter.message_id == message_id:
            return letter.queue, letter
    return None
