"""The end of a job: its final state, and the one EventBridge event that announces it.

The final write (``JobStore.complete``, ``fail`` or ``fail_unanswered``) is a forward-only
conditional write, so it happens once. The event is published only by whoever holds the job (the
store's lease, or the writer that made the job final) and marked with ``event_published_at``
(``JobStore.mark_event_published``); a retry after a crash between the publish and the mark may
publish again (at-least-once), but a run finding the mark publishes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import Field

from falflow.aws.clients import aws_client
from falflow.aws.events import EventBridgePublisher
from falflow.completion.ports import EventPublisher
from falflow.jobs import Job, JobError, JobState, JobStore, TrailEntry, isoformat
from falflow.observability import JobMetrics
from falflow.settings import MetricSettings

logger = Logger(child=True)
metrics = Metrics()

JOB_COMPLETED = "Job Completed"
JOB_FAILED = "Job Failed"


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


class Finaliser:
    def __init__(
        self, jobs: JobStore, events: EventPublisher, bucket: str, job_metrics: JobMetrics | None = None
    ) -> None:
        self._jobs = jobs
        self._events = events
        self._job_metrics = job_metrics or JobMetrics()
        self._bucket = bucket

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
        """Publish the job's completion event unless it was published already."""
        if not job.is_final or job.event_published_at is not None:
            return False
        detail_type, detail = completion_event(job, self._bucket)
        self._events.publish(detail_type, detail)
        self._jobs.mark_event_published(job.job_id, now=now)
        return True

    def _current(self, job: Job) -> Job:
        return self._jobs.get(job.job_id) or job


class FinaliserSettings(MetricSettings):
    """What every writer of a job's end (store, reconciler) needs: where its event goes and the
    bucket the event names."""

    output_bucket: Annotated[str, Field(min_length=1)]
    event_bus_name: Annotated[str, Field(min_length=1)] = "default"

    def finaliser(self, jobs: JobStore) -> Finaliser:
        return Finaliser(
            jobs,
            EventBridgePublisher(aws_client("events"), self.event_bus_name),
            self.output_bucket,
            self.job_metrics(),
        )
