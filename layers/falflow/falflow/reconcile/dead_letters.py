"""The dead-letter sweep: no message of a job that completed stays in a DLQ.

A message is dead-lettered while its job still needs it; the job may complete afterwards anyway
(the reconciler polls fal, takes a dead store run's lease over, a webhook arrives). Its DLQ entry
then only trips the DLQ alarm. Each reconcile run reads a bounded number of messages of every DLQ
and deletes those whose jobs are all COMPLETED or CANCELLED, noting it on each job. A queue may also
have its messages that SQS moved unstarted handed back (`unstarted`): the outputs DLQ's, of a job
still STORING that no store run took, are handed to the store again (the reconciler's
`hand_over_untaken`) and deleted. Every other message is made visible again at once, for operators
(`falflow dlq list`). A message that names no job (a body that says none, a reused job id) is always
left. Why: docs/adr/0019-dead-letters-of-completed-jobs-are-removed-by-the-reconciler.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from aws_lambda_powertools import Logger

from falflow.aws.dead_letter import DeadLetterMessage
from falflow.failures import report_failure
from falflow.jobs import Job, JobState, JobStore, TrailEntry, isoformat

logger = Logger(child=True)

REMOVED_ACTION: Final = "dead_letter_removed"
# States in which a job needs none of its messages again (FAILED and REJECTED ones stay: an
# operator may want to redrive them).
DONE_STATES: Final = frozenset({JobState.COMPLETED, JobState.CANCELLED})


class DeadLetterQueue(Protocol):
    """A DLQ: messages received are hidden until deleted or released (falflow.aws.dead_letter)."""

    name: str

    def receive(self, limit: int) -> list[DeadLetterMessage]: ...

    def delete(self, message: DeadLetterMessage) -> None: ...

    def release(self, messages: Sequence[DeadLetterMessage]) -> None: ...


@dataclass
class SweepReport:
    removed: Counter[str] = field(default_factory=Counter)  # by queue name
    kept: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"dead_letters_removed": dict(self.removed), "dead_letters_kept": dict(self.kept)}


# Given the one job of a message SQS moved unstarted, and the message's body: whether the job was
# handed on (then the message is deleted).
HandBack = Callable[[Job, str, datetime], bool]


class DeadLetterSweep:
    def __init__(
        self,
        jobs: JobStore,
        queues: Sequence[DeadLetterQueue],
        *,
        limit: int,
        actor: str,
        unstarted: Mapping[str, HandBack] | None = None,
    ) -> None:
        self._jobs = jobs
        self._queues = queues
        self._limit = limit  # messages read per queue and run; the next run reads on
        self._actor = actor
        self._unstarted = unstarted or {}  # by queue name

    def sweep(self, now: datetime) -> SweepReport:
        report = SweepReport()
        for queue in self._queues:
            try:
                messages = queue.receive(self._limit)
            except Exception as error:  # noqa: BLE001 - one DLQ's trouble must not stop the other's sweep
                report_failure(self._actor, error, job_id=None, queue=queue.name)
                continue
            kept = [m for m in messages if not self._removed(queue, m, now)]
            queue.release(kept)
            report.removed[queue.name] += len(messages) - len(kept)
            report.kept[queue.name] += len(kept)
        logger.info("dead-letter sweep done", removed=dict(report.removed), kept=dict(report.kept))
        return report

    def _removed(self, queue: DeadLetterQueue, message: DeadLetterMessage, now: datetime) -> bool:
        """Delete `message` if every job it names is done, or its job was handed on; whether it was."""
        try:
            done = self._done_jobs(message)
            if done is None:
                return self._handed_back(queue, message, now)
            queue.delete(message)
        except Exception as error:  # noqa: BLE001 - left for the next run, which looks again
            report_failure(self._actor, error, job_id=None, message_id=message.message_id, queue=queue.name)
            return False
        for job in done:
            try:
                self._note(job, queue.name, message.message_id, now)
            except Exception as error:  # noqa: BLE001 - the message is gone either way; the log says so
                report_failure(self._actor, error, job_id=job.job_id, message_id=message.message_id)
        return True

    def _handed_back(self, queue: DeadLetterQueue, message: DeadLetterMessage, now: datetime) -> bool:
        """A message SQS moved unstarted, of one job, handed on by the queue's `unstarted`: deleted."""
        hand_back = self._unstarted.get(queue.name)
        job_ids = set(message.job_ids)
        if hand_back is None or not message.moved_by_sqs or len(job_ids) != 1:
            return False
        job = self._jobs.get(job_ids.pop())
        if job is None or not hand_back(job, message.body, now):
            return False
        queue.delete(message)
        return True

    def _done_jobs(self, message: DeadLetterMessage) -> list[Job] | None:
        """The message's jobs, if it names any and every one is done; else None."""
        if not message.job_ids:
            return None
        jobs = [self._jobs.get(job_id) for job_id in dict.fromkeys(message.job_ids)]
        done = [job for job in jobs if job is not None and job.state in DONE_STATES]
        return done if len(done) == len(jobs) else None

    def _note(self, job: Job, queue: str, message_id: str, now: datetime) -> None:
        reason = (
            f"dead letter removed: job {job.state.value.lower()}; message {message_id} waited in the "
            f"{queue} DLQ, and the job needs it no more"
        )
        self._jobs.add_trail(
            job.job_id, TrailEntry(at=isoformat(now), actor=self._actor, action=REMOVED_ACTION, reason=reason)
        )
