"""Event receipts: each completion event falflow publishes comes back, through falflow's own rule
on the bus, as a message on the receipts queue; each reconcile run reads them and marks each job's
event published. That settles an event whose publisher was killed between the publish and its
mark: a retry waits for the receipt instead of publishing again (falflow.completion.finalise).
Why: docs/adr/0029-a-completion-event-is-published-once-and-confirmed-by-its-receipt.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from falflow.aws.dead_letter import delete_received, receive_each_once
from falflow.failures import report_failure
from falflow.jobs import JobStore

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = Logger(child=True)


def receipt_job_id(body: str) -> str | None:
    """The job a receipt (an EventBridge event, as the rule delivers it to SQS) is for."""
    try:
        event = json.loads(body)
        job_id = event["detail"]["job_id"]
    except (ValueError, KeyError, TypeError):
        return None
    return job_id if isinstance(job_id, str) else None


@dataclass
class ReceiptsReport:
    read: int = 0
    marked: int = 0  # jobs whose event this run marked published (the rest were marked already)

    def as_dict(self) -> dict[str, int]:
        return {"event_receipts_read": self.read, "event_receipts_marked": self.marked}


class EventReceipts:
    def __init__(
        self, jobs: JobStore, sqs: Callable[[], SQSClient], queue_url: str, *, limit: int, visibility_s: int
    ) -> None:
        self._jobs = jobs
        self._sqs = sqs
        self._queue_url = queue_url
        self._limit = limit  # receipts read per run; the next run reads on
        self._visibility_s = visibility_s  # a receipt not deleted comes back after this

    def settle(self, now: datetime, actor: str) -> ReceiptsReport:
        report = ReceiptsReport()
        messages = receive_each_once(
            self._sqs(), self._queue_url, limit=self._limit, visibility_s=self._visibility_s
        )
        done: list[str] = []
        for message in messages:
            job_id = receipt_job_id(message.get("Body", ""))
            try:
                if job_id is not None and self._jobs.mark_event_published(job_id, now=now) is not None:
                    report.marked += 1
            except Exception as error:  # noqa: BLE001 - left on the queue for the next run
                report_failure(actor, error, job_id=job_id, message_id=message["MessageId"])
                continue
            done.append(message["ReceiptHandle"])
        delete_received(self._sqs(), self._queue_url, done)
        report.read = len(messages)
        logger.info("event receipts read", read=report.read, marked=report.marked)
        return report
