"""An SQS event source mapping, as Lambda runs one: long polling, batches, partial batch failures.

Per batch: receive until `BatchSize` messages are in hand or `MaximumBatchingWindowInSeconds` has
passed since the first one, invoke the function with Lambda's SQS event, then delete what
succeeded. With `ReportBatchItemFailures` only the records the function names in
`batchItemFailures` stay on the queue; without it (or when the invocation fails, or the response
cannot be understood) the whole batch stays. Messages left on the queue reappear after the
queue's visibility timeout with a higher `ApproximateReceiveCount`, and SQS itself (moto) moves them
to the dead-letter queue after `maxReceiveCount` receives.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from falflow_tools.local.workers import InvocationResult

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.type_defs import MessageAttributeValueOutputTypeDef, MessageTypeDef

log = logging.getLogger("falflow.local")

# Lambda's poller asks SQS for at most 10 messages per ReceiveMessage call.
_MAX_PER_RECEIVE = 10


@dataclass(frozen=True)
class SqsSourceSettings:
    """An `SQS` event of a function in template.yaml, with the queue it reads."""

    function: str
    queue_url: str
    queue_arn: str
    batch_size: int = 10
    batching_window_s: float = 0.0
    report_batch_item_failures: bool = False
    region: str = "us-east-1"

    @classmethod
    def from_event(
        cls, function: str, properties: Mapping[str, Any], *, queue_url: str, queue_arn: str, region: str
    ) -> SqsSourceSettings:
        return cls(
            function=function,
            queue_url=queue_url,
            queue_arn=queue_arn,
            batch_size=int(properties.get("BatchSize", 10)),
            batching_window_s=float(properties.get("MaximumBatchingWindowInSeconds", 0)),
            report_batch_item_failures=(
                "ReportBatchItemFailures" in properties.get("FunctionResponseTypes", [])
            ),
            region=region,
        )


def _attribute(value: MessageAttributeValueOutputTypeDef) -> dict[str, Any]:
    """A message attribute as Lambda's SQS event spells it (camelCase, list fields present)."""
    converted: dict[str, Any] = {
        "stringListValues": list(value.get("StringListValues", [])),
        "binaryListValues": [],
        "dataType": value["DataType"],
    }
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    return converted


def sqs_record(message: MessageTypeDef, *, queue_arn: str, region: str) -> dict[str, Any]:
    """One record of Lambda's SQS event for a received message."""
    body = message.get("Body", "")
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": body,
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: _attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody")
        or hashlib.md5(body.encode(), usedforsecurity=False).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def failed_message_ids(
    result: InvocationResult, batch: Sequence[Mapping[str, Any]], *, partial: bool
) -> set[str]:
    """Which records of `batch` stay on the queue after the invocation, by Lambda's rules."""
    everything = {record["messageId"] for record in batch}
    if not result.ok:
        return everything
    if not partial:
        return set()
    payload = result.payload
    if payload is None or (isinstance(payload, dict) and not payload.get("batchItemFailures")):
        return set()  # null, {} and an empty list all mean "every record succeeded"
    if not isinstance(payload, dict) or not isinstance(payload["batchItemFailures"], list):
        return everything
    failed: set[str] = set()
    for item in payload["batchItemFailures"]:
        identifier = item.get("itemIdentifier") if isinstance(item, dict) else None
        # An empty, missing or unknown identifier makes Lambda treat the whole batch as failed.
        if not identifier or identifier not in everything:
            return everything
        failed.add(identifier)
    return failed


@dataclass
class SourceStats:
    batches: int = 0
    received: int = 0
    deleted: int = 0
    failed: int = 0


class SqsEventSource:
    """Polls one queue for one function until stopped (one thread per unit of concurrency)."""

    def __init__(
        self,
        settings: SqsSourceSettings,
        invoke: Callable[[dict[str, Any]], InvocationResult],
        sqs: SQSClient,
        *,
        poll_wait_s: int = 1,
        on_batch: Callable[[SqsSourceSettings, InvocationResult, int, int], None] | None = None,
    ) -> None:
        self.settings = settings
        self._invoke = invoke
        self._sqs = sqs
        # Lambda long-polls for 20 s; a shorter wait keeps Ctrl-C quick and costs nothing on loopback.
        self._poll_wait_s = poll_wait_s
        self._on_batch = on_batch
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.stats = SourceStats()
        self._stats_lock = threading.Lock()

    def start(self, concurrency: int = 1) -> None:
        for index in range(concurrency):
            thread = threading.Thread(
                target=self._run, name=f"sqs-{self.settings.function}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def request_stop(self) -> None:
        """Stop polling after the current receive (see `stop`)."""
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the stack keeps running; the error is reported and polling resumes
                if self._stop.is_set():
                    return
                log.exception("polling %s for %s failed", self.settings.queue_url, self.settings.function)
                self._stop.wait(1.0)

    def _receive(self, count: int, wait_s: int) -> list[MessageTypeDef]:
        response = self._sqs.receive_message(
            QueueUrl=self.settings.queue_url,
            MaxNumberOfMessages=min(count, _MAX_PER_RECEIVE),
            WaitTimeSeconds=wait_s,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return list(response.get("Messages", []))

    def gather(self) -> list[MessageTypeDef]:
        """One batch: the first messages by long polling, then more until full or the window closes."""
        settings = self.settings
        batch = self._receive(settings.batch_size, self._poll_wait_s)
        if not batch:
            return []
        window_ends = time.monotonic() + settings.batching_window_s
        while len(batch) < settings.batch_size and not self._stop.is_set():
            left = window_ends - time.monotonic()
            if left <= 0:
                break
            more = self._receive(settings.batch_size - len(batch), 0)
            if more:
                batch.extend(more)
            else:
                self._stop.wait(min(left, 0.1))
        return batch

    def poll_once(self) -> int:
        """Receive one batch and deliver it; returns how many messages it held."""
        messages = self.gather()
        if not messages:
            return 0
        settings = self.settings
        records = [sqs_record(m, queue_arn=settings.queue_arn, region=settings.region) for m in messages]
        result = self._invoke({"Records": records})
        failed = failed_message_ids(result, records, partial=settings.report_batch_item_failures)
        done = [record for record in records if record["messageId"] not in failed]
        for start in range(0, len(done), _MAX_PER_RECEIVE):
            chunk = done[start : start + _MAX_PER_RECEIVE]
            response = self._sqs.delete_message_batch(
                QueueUrl=settings.queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": record["receiptHandle"]}
                    for index, record in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                log.warning("could not delete from %s: %s", settings.queue_url, failure.get("Message"))
        with self._stats_lock:
            self.stats.batches += 1
            self.stats.received += len(records)
            self.stats.deleted += len(done)
            self.stats.failed += len(failed)
        if not result.ok:
            log.warning(
                "%s failed a batch of %d: %s: %s",
                settings.function,
                len(records),
                result.error and result.error["errorType"],
                result.error and result.error["errorMessage"],
            )
        if self._on_batch is not None:
            self._on_batch(settings, result, len(records), len(failed))
        return len(records)
