"""The completion hand-off: the one door through which fal's answer for a job enters falflow.

The webhook (a verified delivery) and the reconciler (a result it polled) both call
`CompletionHandoff.record`: bind the request id (the first wins; another's completion is kept in the
inbox, never stored), write the raw completion to the inbox, record it once (`record_completion`,
STORING), and have only that writer send the outputs message (`mark_handed_over`); a duplicate
hands over again only after ``handoff_grace``. Why:
docs/adr/0005-fal-answers-enter-through-one-completion-handoff.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from aws_lambda_powertools import Logger

from falflow.completion.keys import inbox_key
from falflow.completion.messages import CompletionSource, OutputsMessage
from falflow.completion.ports import Inbox, OutputsQueue
from falflow.jobs import Job, JobState, JobStore, TrailEntry, isoformat

logger = Logger(child=True)

# Longer than the webhook function's timeout: by then a first writer has sent or has died.
DEFAULT_HANDOFF_GRACE = timedelta(seconds=60)


class HandoffOutcome(StrEnum):
    RECORDED = "recorded"  # the job's completion, recorded now and handed to the store
    DUPLICATE = "duplicate"  # recorded before: nothing new
    HANDED_OVER_AGAIN = "handed_over_again"  # recorded before, but the hand-off had been lost
    FOREIGN_REQUEST = "foreign_request"  # another request id than the job's: kept aside, not stored
    AFTER_FINAL = "after_final"  # the job had already ended without this completion
    UNKNOWN_JOB = "unknown_job"  # no such job: nothing written

    @property
    def recorded(self) -> bool:
        """Whether the completion is now durably on our side (what a 200 to fal promises)."""
        return self is not HandoffOutcome.UNKNOWN_JOB


@dataclass(frozen=True)
class HandoffResult:
    outcome: HandoffOutcome
    job: Job | None


class CompletionHandoff:
    def __init__(
        self,
        jobs: JobStore,
        inbox: Inbox,
        queue: OutputsQueue,
        *,
        handoff_grace: timedelta = DEFAULT_HANDOFF_GRACE,
    ) -> None:
        self._jobs = jobs
        self._inbox = inbox
        self._queue = queue
        self._handoff_grace = handoff_grace

    def record(
        self,
        job_id: str,
        request_id: str,
        raw: bytes,
        *,
        source: CompletionSource,
        now: datetime,
        metadata: Mapping[str, str] | None = None,
    ) -> HandoffResult:
        """Record fal's completion ``raw`` (the exact bytes fal sent, or the reconciler's own) for
        ``request_id`` of job ``job_id``."""
        bound = self._jobs.bind_request(job_id, request_id)
        job = bound.job
        if job is None:
            return HandoffResult(HandoffOutcome.UNKNOWN_JOB, None)
        key = inbox_key(job_id, request_id, source)
        if not bound.bound:
            self._inbox.put(key, raw, {**(metadata or {}), "source": source})
            self._jobs.add_trail(
                job_id,
                TrailEntry(
                    at=isoformat(now),
                    actor=source,
                    action="ignored_foreign_request",
                    reason=f"completion for request {request_id}, but the job's request is "
                    f"{bound.conflicting_request_id}; kept at {key}, not stored",
                ),
            )
            return HandoffResult(HandoffOutcome.FOREIGN_REQUEST, job)

        if job.completion_key is None:
            self._inbox.put(key, raw, {**(metadata or {}), "source": source})
            recorded = self._jobs.record_completion(
                job_id, request_id, completion_key=key, source=source, now=now
            )
            if recorded is not None:
                self._hand_over(recorded, now)
                return HandoffResult(HandoffOutcome.RECORDED, recorded)
            job = self._jobs.get(job_id) or job

        if job.completion_key is None:
            # Ended without a completion (given up, cancelled): keep what fal sent, change nothing.
            self._jobs.add_trail(
                job_id,
                TrailEntry(
                    at=isoformat(now),
                    actor=source,
                    action="completion_after_final",
                    reason=f"job already {job.state.value}; completion kept at {key}, not stored",
                ),
            )
            return HandoffResult(HandoffOutcome.AFTER_FINAL, job)
        if self.resume_handoff(job, now):
            return HandoffResult(HandoffOutcome.HANDED_OVER_AGAIN, job)
        return HandoffResult(HandoffOutcome.DUPLICATE, job)

    def note_non_terminal(
        self, job_id: str, request_id: str, status: str, *, source: CompletionSource, now: datetime
    ) -> Job | None:
        """A delivery that is not a completion: noted on the job's trail, nothing else changes.
        None when there is no such job."""
        job = self._jobs.get(job_id)
        if job is None:
            return None
        self._jobs.add_trail(
            job_id,
            TrailEntry(
                at=isoformat(now),
                actor=source,
                action="non_terminal_delivery",
                reason=f"fal sent status {status[:64]!r} for request {request_id}; not a completion",
            ),
        )
        return job

    def resume_handoff(self, job: Job, now: datetime) -> bool:
        """Send the outputs message again if a recorded completion was never handed over (the
        recorder died between its write and the send) and ``handoff_grace`` has passed."""
        if job.is_final or job.completion_key is None or job.completion_enqueued_at is not None:
            return False
        recorded_at = job.state_times.get(JobState.STORING.value)
        if recorded_at is not None and datetime.fromisoformat(recorded_at) > now - self._handoff_grace:
            return False  # the first recorder may still be about to send
        logger.warning("completion was never handed to the store; handing it over again", job_id=job.job_id)
        self._hand_over(job, now)
        return True

    def take_over_store(self, job: Job, now: datetime) -> bool:
        """Hand ``job`` to the store again because the run holding its store lease died (the lease
        ran out unfinished); True if this call took the lease over. The message goes first: a crash
        before the write leaves the expired lease for the next reconcile run."""
        lease = job.store_lease_until
        if job.is_final or job.completion_key is None or lease is None or lease > isoformat(now):
            return False
        logger.warning("a store run died holding the job; handing it to the store again", job_id=job.job_id)
        self._send(job, now)
        return self._jobs.take_over_store_lease(job.job_id, expired_until=lease, now=now) is not None

    def take_over_handoff(self, job: Job, now: datetime) -> bool:
        """Hand ``job`` to the store again because no store run took its outputs message (SQS moved
        it to the DLQ unstarted: the reconciler's dead-letter sweep found it there); True if this
        call noted the new hand-off."""
        handed_over_at = job.completion_enqueued_at
        if job.is_final or job.completion_key is None or handed_over_at is None or job.store_lease_until:
            return False
        logger.warning(
            "no store run took the job's outputs message; handing it over again", job_id=job.job_id
        )
        self._send(job, now)
        return self._jobs.take_over_handoff(job.job_id, handed_over_at=handed_over_at, now=now) is not None

    def _hand_over(self, job: Job, now: datetime) -> None:
        assert job.completion_key is not None
        self._send(job, now)
        self._jobs.mark_handed_over(job.job_id, job.completion_key, now=now)

    def _send(self, job: Job, now: datetime) -> None:
        assert job.completion_key is not None
        assert job.request_id is not None
        self._queue.send(
            OutputsMessage(
                job_id=job.job_id,
                request_id=job.request_id,
                completion_key=job.completion_key,
                source="reconcile" if job.completion_source == "reconcile" else "webhook",
                handed_over_at=isoformat(now),  # what the write after the send notes
            )
        )
