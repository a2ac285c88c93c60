"""The end of a job: its final state, and the one EventBridge event that announces it.

The final write (``JobStore.complete``, ``fail`` or ``fail_unanswered``) is a forward-only
conditional write, so it happens once. The event is published once too, although no write can
cover both EventBridge and DynamoDB: a publisher first claims the event
(``JobStore.claim_event``, until now + the receipt window), then publishes it, then marks it
published. A process killed between the publish and the mark leaves the claim, and the event's
own receipt settles it: falflow's rule sends each of its events to the receipts queue, whose
reader (falflow.reconcile.receipts) marks the job published. A retry that finds a live claim
publishes nothing and comes back when the claim has run out: by then either the receipt marked the
job (the event went out) or nothing did (it did not), and the retry claims and publishes. Why:
docs/adr/0029-a-completion-event-is-published-once-and-confirmed-by-its-receipt.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import Field

from falflow.aws.clients import aws_client
from falflow.aws.events import EventBridgePublisher
from falflow.completion.ports import EventPublisher
from falflow.jobs import Job, JobError, JobState, JobStore, TrailEntry, isoformat
from falflow.observability import JobMetrics
from falflow.settings import EventBusSettings, MetricSettings

logger = Logger(child=True)
metrics = Metrics()

# How long a claimed event may take to come back as a receipt and be marked: EventBridge's
# delivery to the receipts queue, and the schedule of the reconciler that reads it (5 minutes).
DEFAULT_RECEIPT_WINDOW_S: Final = 900.0

JOB_COMPLETED = "Job Completed"
JOB_FAILED = "Job Failed"


# The final states whose end a completion event announces.
ANNOUNCED_STATES: Final = (JobState.COMPLETED, JobState.FAILED)


def completion_event(job: Job, bucket: str) -> tuple[str, dict[str, Any]]:
    """``(detail-type, detail)`` of the event for a finished job."""
    detail: dict[str, Any] = {
        "job_id": job.job_id,
        "model": job.model,
        "status": job.state.value,
        "request_id": job.request_id,
        "source": job.source,
        "bucket": bucket,
        "outputs": list(job.outputs),
        "result_key": job.result_key,
        "metadata": job.metadata,
        # The endpoint fal says ran it; differs from "model" after one of fal's model fallbacks.
        "served_from": job.served_from,
    }
    if job.error is not None:
        detail["error"] = {"type": job.error.type, "message": job.error.message}
    return (JOB_COMPLETED if job.state is JobState.COMPLETED else JOB_FAILED), detail


class EventReceiptPendingError(Exception):
    """The job's event may be out already (another publisher's claim is live); try after `until`,
    when its receipt has marked the job or the claim has run out."""

    def __init__(self, job_id: str, until: datetime) -> None:
        super().__init__(
            f"job {job_id}: its completion event may have been published; "
            f"waiting for its receipt until {isoformat(until)}"
        )
        self.job_id = job_id
        self.until = until


class Finaliser:
    def __init__(
        self,
        jobs: JobStore,
        events: EventPublisher,
        bucket: str,
        job_metrics: JobMetrics | None = None,
        *,
        receipt_window: timedelta = timedelta(seconds=DEFAULT_RECEIPT_WINDOW_S),
    ) -> None:
        self._jobs = jobs
        self._events = events
        self._job_metrics = job_metrics or JobMetrics()
        self._bucket = bucket
        self._receipt_window = receipt_window

    def complete(
        self,
        job: Job,
        *,
        outputs: Sequence[str],
        result_key: str,
        timings: Mapping[str, Any],
        now: datetime,
        served_from: str | None = None,
        payloads_deleted_at: str | None = None,
    ) -> Job:
        done = self._jobs.complete(
            job.job_id,
            request_id=job.request_id or None,
            outputs=outputs,
            result_key=result_key,
            timings=timings,
            now=now,
            served_from=served_from,
            payloads_deleted_at=payloads_deleted_at,
        )
        if done is None:
            return self._current(job)
        metrics.add_metric(name="JobsCompleted", unit=MetricUnit.Count, value=1)
        self._finished(done, now)
        logger.info("job completed", job_id=job.job_id, outputs=len(outputs))
        return done

    def fail(
        self,
        job: Job,
        error: JobError,
        *,
        now: datetime,
        actor: str,
        unanswered: bool = False,
    ) -> Job | None:
        """Mark the job FAILED — if ``unanswered``, only while no completion of fal's is recorded;
        returns the job if this call made it final."""
        fail = self._jobs.fail_unanswered if unanswered else self._jobs.fail
        failed = fail(job.job_id, error, now=now)
        if failed is None:
            return None
        self._jobs.add_trail(
            job.job_id, TrailEntry(at=isoformat(now), actor=actor, action="failed", reason=error.message)
        )
        metrics.add_metric(name="JobsFailed", unit=MetricUnit.Count, value=1)
        self._finished(failed, now)
        logger.warning("job failed", job_id=job.job_id, error_type=error.type)
        return failed

    def _finished(self, job: Job, now: datetime) -> None:
        self._job_metrics.job_finished(
            job.model, (now - datetime.fromisoformat(job.created_at)).total_seconds()
        )

    def announce(self, job: Job, now: datetime) -> bool:
        """Publish the job's completion event unless it was published already; whether this call
        did. Raises `EventReceiptPendingError` while another publisher's claim is live."""
        if not job.is_final or job.event_published_at is not None:
            return False
        claimed = self._jobs.claim_event(job.job_id, now=now, until=now + self._receipt_window)
        if claimed is None:
            current = self._current(job)
            if current.event_published_at is not None or current.event_claimed_until is None:
                return False
            raise EventReceiptPendingError(job.job_id, datetime.fromisoformat(current.event_claimed_until))
        detail_type, detail = completion_event(claimed, self._bucket)
        self._events.publish(detail_type, detail)
        self._jobs.mark_event_published(job.job_id, now=now)
        return True

    def _current(self, job: Job) -> Job:
        return self._jobs.get(job.job_id) or job


class FinaliserSettings(MetricSettings, EventBusSettings):
    """What every writer of a job's end (store, reconciler) needs: where its event goes and the
    bucket the event names."""

    output_bucket: Annotated[str, Field(min_length=1)]
    event_receipt_window_seconds: Annotated[float, Field(gt=0)] = DEFAULT_RECEIPT_WINDOW_S

    def finaliser(self, jobs: JobStore) -> Finaliser:
        return Finaliser(
            jobs,
            EventBridgePublisher(aws_client("events"), self.event_bus_name),
            self.output_bucket,
            self.job_metrics(),
            receipt_window=timedelta(seconds=self.event_receipt_window_seconds),
        )
