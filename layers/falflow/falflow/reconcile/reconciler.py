"""The reconciler: no job depends on one webhook arriving.

Each run takes jobs waiting longer than ``reconcile_after`` (the sharded ByStateShard index) and acts
only through conditional writes: SUBMITTED / IN_PROGRESS jobs are polled at fal and a finished result
goes through the same completion hand-off as the webhook; STORING jobs whose hand-off was lost,
whose store lease outlived its worker, or whose message SQS moved to the DLQ before a store run
started it (found by the dead-letter sweep), are handed to the store again (after
``max_store_takeovers`` such takeovers the job ends FAILED); ACCEPTED jobs with no live submit
lease are sent back to the intake queue (never resubmitted from here); jobs older than
``give_up_after`` end FAILED; final jobs whose event no publisher sent are announced. Each action
leaves a trail entry. Why:
docs/adr/0012-a-reconciler-covers-lost-webhooks-and-dead-workers.md,
docs/adr/0029-a-completion-event-is-published-once-and-confirmed-by-its-receipt.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Protocol

from aws_lambda_powertools import Logger

from falflow.completion.delivery import RESULT_UNAVAILABLE, delivery_body
from falflow.completion.finalise import ANNOUNCED_STATES, EventReceiptPendingError, Finaliser
from falflow.completion.handoff import CompletionHandoff, HandoffOutcome
from falflow.completion.messages import OutputsMessage
from falflow.failures import report_failure
from falflow.fal.errors import FalError, FalNotFoundError
from falflow.fal.ports import FalQueue
from falflow.fal.queue import QueueStatus, QueueUrls
from falflow.jobs import WAITING_STATES, Job, JobError, JobState, JobStore, TrailEntry, isoformat
from falflow.jobs.intake import original_request
from falflow.jobs.requests import JobRequests

logger = Logger(child=True)

ACTOR: Final = "reconcile"
GAVE_UP = "gave_up"
STORE_ABANDONED = "store_abandoned"
TAKEOVER_ACTION = "store_taken_over"
REDRIVE_ACTION = "redriven_to_intake"


class IntakeQueue(Protocol):
    """The submit path's intake queue (the reconciler only re-sends a job's original request)."""

    def send(self, body: str) -> None: ...


class Action(StrEnum):
    WAITING = "waiting"  # fal still has it queued or running (or could not be asked this run)
    ADVANCED = "advanced"  # moved to IN_PROGRESS
    COMPLETED = "completed"  # fal finished: recorded through the completion hand-off
    ALREADY_RECORDED = "already_recorded"  # a webhook (or another run) recorded it first
    FAILED = "failed"  # fal no longer holds the request or its result
    GAVE_UP = "gave_up"
    HANDED_OVER = "handed_over"  # a recorded completion handed to the store again
    TAKEN_OVER = "taken_over"  # a dead store run's expired lease taken over: handed to the store again
    ANNOUNCED = "announced"  # a final job's completion event, which its publisher never sent, published
    REDRIVEN = "redriven"  # an ACCEPTED job's request sent to the intake queue again
    SKIPPED = "skipped"  # nothing to do, or not ours to do now
    ERROR = "error"


@dataclass
class ReconcileReport:
    actions: Counter[Action] = field(default_factory=Counter)
    stopped_early: bool = False

    @property
    def examined(self) -> int:
        return sum(self.actions.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "stopped_early": self.stopped_early,
            **{a.value: n for a, n in sorted(self.actions.items())},
        }


@dataclass(frozen=True)
class ReconcilePolicy:
    reconcile_after: timedelta = timedelta(minutes=10)
    give_up_after: timedelta = timedelta(hours=24)
    concurrency: int = 8
    # Store runs that may die holding one job before it ends FAILED (a job that kills its worker,
    # e.g. by memory, must not be handed over for ever).
    max_store_takeovers: int = 3
    # Final jobs are looked at this far back for a completion event their publisher never sent.
    late_event_lookback: timedelta = timedelta(hours=2)


class Reconciler:
    def __init__(
        self,
        jobs: JobStore,
        *,
        fal: FalQueue,
        handoff: CompletionHandoff,
        finaliser: Finaliser,
        intake_queue: IntakeQueue,
        policy: ReconcilePolicy,
        requests: JobRequests | None = None,
    ) -> None:
        self._jobs = jobs
        self._fal = fal
        self._handoff = handoff
        self._finaliser = finaliser
        self._intake_queue = intake_queue
        self._policy = policy
        # fal's request history, to find a second request of a job whose submit was ambiguous.
        self._requests = requests

    def run(self, now: datetime, *, time_left: Callable[[], float] | None = None) -> ReconcileReport:
        """One pass. ``time_left`` (seconds) stops it early, leaving the rest to the next run."""
        report = ReconcileReport()
        in_flight: set[Future[Action]] = set()
        with ThreadPoolExecutor(max_workers=self._policy.concurrency, thread_name_prefix="reconcile") as pool:
            for job in self._due(now):
                if time_left is not None and time_left() <= 0:
                    report.stopped_early = True
                    break
                if len(in_flight) >= 2 * self._policy.concurrency:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    report.actions.update(f.result() for f in done)
                in_flight.add(pool.submit(self._reconcile_one, job, now))
            report.actions.update(f.result() for f in in_flight)
        logger.info("reconcile run done", **report.as_dict())
        return report

    def _due(self, now: datetime) -> Iterator[Job]:
        cutoff = now - self._policy.reconcile_after
        for state in (JobState.STORING, *WAITING_STATES, JobState.ACCEPTED):
            yield from self._jobs.list_by_state(state, changed_before=cutoff)
        since = now - self._policy.late_event_lookback
        for state in ANNOUNCED_STATES:
            yield from self._jobs.list_unannounced(state, changed_before=cutoff, changed_after=since)

    def _reconcile_one(self, job: Job, now: datetime) -> Action:
        try:
            if job.is_final:
                return self._announce_late(job, now)
            if job.state is JobState.STORING:
                return self._resume_store(job, now)
            if now - datetime.fromisoformat(job.created_at) >= self._policy.give_up_after:
                return self._give_up(job, now)
            if job.state is JobState.ACCEPTED:
                return self._redrive(job, now)
            return self._poll(job, now)
        except Exception as error:  # noqa: BLE001 - one job's trouble must not stop the run; the next tries again
            report_failure(ACTOR, error, job_id=job.job_id)
            return Action.ERROR

    # ----------------------------------------------------------------------------------- STORING

    def _resume_store(self, job: Job, now: datetime) -> Action:
        if self._handoff.resume_handoff(job, now):
            return Action.HANDED_OVER
        lease = job.store_lease_until
        if lease is None:
            # The outputs message is on its way, or waits in a backlog; one SQS moved to the DLQ
            # unstarted is the dead-letter sweep's to find (`hand_over_untaken`).
            return Action.SKIPPED
        if lease > isoformat(now):
            return Action.SKIPPED  # a store run holds the job
        return self._take_over(
            job,
            now,
            self._handoff.take_over_store,  # refused if a redelivered message took the lease first
            last=f"the last held it until {lease}",
            why=f"the store run holding the job until {lease} stopped before finishing",
        )

    def hand_over_untaken(self, job: Job, body: str, now: datetime) -> bool:
        """The dead-letter sweep found an outputs message of `job` (its `body`) moved to the DLQ by
        SQS with no reason from the store: every run that received it stopped before starting it.
        If it is the job's latest hand-off and no store run holds or held the job, the job is handed
        to the store again, as a takeover; whether it was."""
        handed_over_at = job.completion_enqueued_at
        if job.state is not JobState.STORING or handed_over_at is None or job.store_lease_until:
            return False  # not waiting for the store, or a store run took it: its lease tells
        try:
            message = OutputsMessage.model_validate_json(body)
        except ValueError:
            return False
        if message.handed_over_at not in (None, handed_over_at):
            return False  # an earlier hand-off's: the latest is on its way
        action = self._take_over(
            job,
            now,
            self._handoff.take_over_handoff,  # refused if a store run took it meanwhile
            last=f"the last was handed over at {handed_over_at}",
            why=f"SQS moved the outputs message handed over at {handed_over_at} to the DLQ before "
            "any store run started it",
        )
        return action is Action.TAKEN_OVER

    def _take_over(
        self, job: Job, now: datetime, take: Callable[[Job, datetime], bool], *, last: str, why: str
    ) -> Action:
        """Hand a STORING job to the store again with `take`, counted, or end it FAILED once the
        takeovers are spent."""
        limit = self._policy.max_store_takeovers
        if job.store_takeovers >= limit:
            return self._abandon_store(job, now, last)
        if not take(job, now):
            return Action.SKIPPED
        self._trail(
            job,
            now,
            TAKEOVER_ACTION,
            f"{why}; handed to the store again (takeover {job.store_takeovers + 1} of {limit})",
        )
        return Action.TAKEN_OVER

    def _abandon_store(self, job: Job, now: datetime, last: str) -> Action:
        error = JobError(
            type=STORE_ABANDONED,
            message=f"{job.store_takeovers + 1} store runs stopped before finishing this job ({last}); "
            "its outputs were not stored",
            detail={"request_id": job.request_id, "completion_key": job.completion_key},
        )
        failed = self._finaliser.fail(job, error, now=now, actor=ACTOR)
        if failed is None:
            return Action.SKIPPED
        self._finaliser.announce(failed, now)
        return Action.FAILED

    def _announce_late(self, job: Job, now: datetime) -> Action:
        """A final job whose event no publisher sent (it died between the job's end and the
        publish, and nothing brings its work back, e.g. the reconciler's own): publish it now,
        through the same claim, once any earlier publisher's claim has run out."""
        try:
            announced = self._finaliser.announce(job, now)
        except EventReceiptPendingError:
            return Action.SKIPPED
        return Action.ANNOUNCED if announced else Action.SKIPPED

    # ------------------------------------------------------------------------ SUBMITTED / IN_PROGRESS

    def _urls(self, job: Job) -> QueueUrls | None:
        if job.status_url and job.response_url and job.cancel_url:
            return QueueUrls(
                status_url=job.status_url, response_url=job.response_url, cancel_url=job.cancel_url
            )
        if job.model and job.request_id:
            return self._fal.urls_for(job.model, job.request_id)
        return None

    def _poll(self, job: Job, now: datetime) -> Action:
        if job.submit_ambiguous_at is not None:
            self._cancel_duplicates(job)
        urls = self._urls(job)
        if urls is None or job.request_id is None:
            return Action.SKIPPED
        try:
            status = self._fal.status(urls.status_url)
        except FalNotFoundError:
            return self._fail(job, now, "fal no longer knows this request (status 404)")
        except FalError as error:  # the next run polls again
            report_failure(ACTOR, error, job_id=job.job_id, request_id=job.request_id)
            return Action.WAITING
        if status.status == "IN_QUEUE":
            return Action.WAITING
        if status.status == "IN_PROGRESS":
            if job.state is JobState.IN_PROGRESS:
                return Action.WAITING
            advanced = self._jobs.mark_in_progress(job.job_id, job.request_id, now=now)
            if advanced is None:
                return Action.SKIPPED
            self._trail(job, now, "advanced", "no webhook yet; fal reports IN_PROGRESS")
            return Action.ADVANCED
        # COMPLETED, successfully or not: fetch what fal holds and record it like a webhook would.
        try:
            body = self._completion_body(job.request_id, urls, status)
        except FalNotFoundError:
            return self._fail(job, now, "fal reports the request COMPLETED but no longer holds its result")
        if body is None:
            return Action.WAITING
        result = self._handoff.record(job.job_id, job.request_id, body, source=ACTOR, now=now)
        if result.outcome is not HandoffOutcome.RECORDED:
            return Action.ALREADY_RECORDED
        self._trail(
            job, now, "completion_recorded", "no webhook received; fal reports COMPLETED, result fetched"
        )
        return Action.COMPLETED

    def _cancel_duplicates(self, job: Job) -> None:
        """A duplicate request that started after the submit path last looked is cancelled now (ADR
        0017); where fal keeps no payloads there is nothing to compare."""
        if self._requests is None or not job.store_io:
            return
        try:
            self._requests.cancel_others(job)
        except FalError as error:
            logger.warning(
                "fal's request history could not be read; the next run looks again",
                job_id=job.job_id,
                error=error.message,
            )

    def _completion_body(self, request_id: str, urls: QueueUrls, status: QueueStatus) -> bytes | None:
        """A completion in the webhook's shape; None when fal could not be read this time."""
        if status.failed:
            return delivery_body(
                request_id, error=status.error or "fal reported an error", error_type=status.error_type
            )
        try:
            payload = self._fal.result(urls.response_url)
        except FalNotFoundError:
            raise
        except FalError as error:
            if error.retryable:  # the next run fetches again
                report_failure(ACTOR, error, job_id=None, request_id=request_id)
                return None
            return delivery_body(
                request_id, error=error.message, error_type=error.error_type, payload={"detail": error.detail}
            )
        return delivery_body(request_id, payload=payload)

    def _fail(self, job: Job, now: datetime, reason: str) -> Action:
        error = JobError(type=RESULT_UNAVAILABLE, message=reason, detail={"request_id": job.request_id})
        failed = self._finaliser.fail(job, error, now=now, actor=ACTOR, unanswered=True)
        if failed is None:
            return Action.SKIPPED
        self._finaliser.announce(failed, now)
        return Action.FAILED

    # ---------------------------------------------------------------------------------- give up

    def _give_up(self, job: Job, now: datetime) -> Action:
        hours = self._policy.give_up_after.total_seconds() / 3600
        error = JobError(
            type=GAVE_UP,
            message=f"no completion {hours:g} h after the job was accepted (last state {job.state.value})",
            detail={"request_id": job.request_id},
        )
        failed = self._finaliser.fail(job, error, now=now, actor=ACTOR, unanswered=True)
        if failed is None:
            return Action.SKIPPED
        urls = self._urls(job)
        if urls is not None:
            try:
                outcome = self._fal.cancel(urls.cancel_url).value
            except (FalError, ValueError) as cancel_error:
                outcome = f"cancel failed: {cancel_error}"
            self._trail(job, now, "cancel_requested", f"gave up; fal cancel: {outcome}")
        self._finaliser.announce(failed, now)
        return Action.GAVE_UP

    # ---------------------------------------------------------------------------------- ACCEPTED

    def _redrive(self, job: Job, now: datetime) -> Action:
        if job.request_id is not None:
            return Action.SKIPPED  # fal has it; the completion will tell
        if job.submit_lease_until is not None and job.submit_lease_until > isoformat(now):
            return Action.SKIPPED  # a submit is sending it, or waiting out an ambiguous reply
        last = max((t.at for t in job.trail if t.actor == ACTOR and t.action == REDRIVE_ACTION), default=None)
        if last is not None and datetime.fromisoformat(last) > now - self._policy.reconcile_after:
            return Action.SKIPPED  # re-sent recently; give the submit path time
        body = original_request(job)
        if body is None:
            self._trail(job, now, "cannot_redrive", "the job's original request cannot be rebuilt")
            return Action.SKIPPED
        self._intake_queue.send(body)
        ambiguous = (
            f"; an earlier submit was ambiguous at {job.submit_ambiguous_at}"
            if job.submit_ambiguous_at
            else ""
        )
        self._trail(
            job,
            now,
            REDRIVE_ACTION,
            f"left ACCEPTED with no live submit lease{ambiguous}; the submit path decides",
        )
        return Action.REDRIVEN

    def _trail(self, job: Job, now: datetime, action: str, reason: str) -> None:
        self._jobs.add_trail(
            job.job_id, TrailEntry(at=isoformat(now), actor=ACTOR, action=action, reason=reason)
        )
