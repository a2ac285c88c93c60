"""submit_job: one source in, at most one fal queue submission per job out.

The job is created ACCEPTED (or REJECTED) before fal hears of it, holding the submit lease; a
redelivery sends only if it takes the lease (`claim_submit_lease`); fal's answer moves the job to
SUBMITTED (`record_submission`), or binds the request id when the webhook came first. A failure is
classified: refused (FAILED, message consumed), certainly not accepted (lease released, message
retried), or ambiguous — the reply was lost — when the job keeps its lease for a grace before
anyone sends again; then fal's request history is asked first, and a request found there carrying
this job's input is bound instead of sending again (other such requests are cancelled). Why:
docs/adr/0003-an-ambiguous-submit-is-resolved-before-any-resend.md,
docs/adr/0004-a-lease-holds-a-job-for-one-worker.md and
docs/adr/0017-a-lost-submit-reply-is-looked-up-in-fals-request-history.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final, NoReturn

from aws_lambda_powertools import Logger

from falflow.catalogue import ModelCatalogue
from falflow.fal.errors import (
    FalAccountLockedError,
    FalAuthError,
    FalError,
    FalNotFoundError,
    FalRateLimitedError,
    FalRequestTimeoutError,
    FalServerError,
    FalTransportError,
    FalValidationError,
)
from falflow.fal.platform import RequestHistoryItem
from falflow.fal.ports import FalQueue, FalRequestHistory
from falflow.fal.queue import OutputLifecycle, Submission
from falflow.jobs import (
    Job,
    JobCost,
    JobError,
    JobState,
    JobStore,
    RequestUrls,
    TrailEntry,
    isoformat,
    utcnow,
)
from falflow.jobs.requests import JobRequests
from falflow.spend.estimate import Estimator
from falflow.spend.gate import Admission, SpendGate, Verdict
from falflow.submit.files import CheckedInputs, InputFiles
from falflow.submit.objects import InputArchive
from falflow.submit.plan import JobIdentity, JobPlan, Planner, PlanRejectedError
from falflow.submit.request import FalDefaults, JobRequest, RequestRejectedError, fal_options
from falflow.submit.sources import JobSource
from falflow.webhook.token import WebhookTokens, job_webhook_url

logger = Logger(child=True)

ACTOR: Final = "submit"
MAX_METADATA_BYTES: Final = 16 * 1024


class SubmitOutcome(StrEnum):
    SUBMITTED = "submitted"  # sent to fal now; the job holds fal's request id
    DUPLICATE = "duplicate"  # the job was already sent, ended, or is another delivery's: nothing sent
    REJECTED = "rejected"  # the request can never succeed: REJECTED, fal never heard of it
    FAILED = "failed"  # fal refused it: FAILED with fal's reason
    SUPERSEDED = "superseded"  # sent, but an earlier request of the job had been bound: ours cancelled
    FOUND = "found"  # an earlier request of the job was found in fal's request history: bound, not resent
    IGNORED = "ignored"  # not a job at all (a folder marker)
    CONFLICT = "job_id_conflict"  # another request under an existing job's id: refused, job unchanged
    HELD = "held"  # over a budget, or fal's account is locked: HELD with the reason, released later
    CANCELLED = "cancelled"  # a line of a batch cancelled before it was sent: CANCELLED, never sent


@dataclass(frozen=True)
class SubmitResult:
    job_id: str | None
    outcome: SubmitOutcome
    # Whether this call created the job record (counts each job once in the metrics).
    created: bool = False
    request_id: str | None = None
    fal_latency_s: float | None = None
    error: JobError | None = None


JOB_ID_CONFLICT: Final = "job_id_conflict"


class SubmitRetryLaterError(Exception):
    """Not now: the message goes back to the queue. ``ambiguous`` when fal may already have it;
    ``held`` when the job record itself holds the work (a live submit lease, after which the
    reconciler re-drives the job), so the message is not needed to finish the job. ``not_before``:
    when the job can next be tried (its hold ends), if that is known."""

    def __init__(
        self,
        job_id: str,
        reason: str,
        *,
        ambiguous: bool = False,
        held: bool = False,
        not_before: datetime | None = None,
    ) -> None:
        super().__init__(f"job {job_id}: {reason}")
        self.job_id = job_id
        self.reason = reason
        self.ambiguous = ambiguous
        self.held = held or ambiguous
        self.not_before = not_before
        # Every job of the message it stops (its DLQ entry names them: falflow.aws.dead_letter).
        self.job_ids: tuple[str, ...] = (job_id,)


class FalFailure(StrEnum):
    REFUSED = "refused"  # fal will never take this job as sent
    NOT_ACCEPTED = "not_accepted"  # fal certainly did not queue it; sending again is safe
    AMBIGUOUS = "ambiguous"  # fal may have queued it


def classify_submit_error(error: FalError) -> FalFailure:
    if isinstance(error, FalTransportError):
        return FalFailure.AMBIGUOUS if error.ambiguous else FalFailure.NOT_ACCEPTED
    if isinstance(error, FalRateLimitedError):
        return FalFailure.NOT_ACCEPTED
    # A wrong or revoked key fails every job alike: keep them for the DLQ, not as FAILED records.
    if isinstance(error, FalAuthError):
        return FalFailure.NOT_ACCEPTED
    if isinstance(error, FalServerError):
        # Only fal's own evidence (nginx's page, no request id) says the ingress kept it.
        return FalFailure.NOT_ACCEPTED if error.not_received else FalFailure.AMBIGUOUS
    if error.retryable:  # 408/409 and whatever else fal may still have taken in
        return FalFailure.AMBIGUOUS
    return FalFailure.REFUSED


def refusal_error(error: FalError) -> JobError:
    """The FAILED record's error: our classification, fal's message, fal's detail whole."""
    if isinstance(error, FalValidationError):
        kind = "fal_validation_error"
    elif isinstance(error, FalNotFoundError):
        kind = "unknown_model"
    elif isinstance(error, FalRequestTimeoutError):
        kind = "fal_start_timeout"
    else:
        kind = "fal_refused"
    return JobError(type=kind, message=error.message, detail=error.detail)


def _awaits_submit(job: Job) -> bool:
    return job.state is JobState.ACCEPTED and job.request_id is None


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True)
class SubmitConfig:
    webhook_url: str
    ambiguous_grace: timedelta
    # A live worker's hold on a job it sends (SUBMIT_LEASE_SECONDS: falflow.submit.settings).
    worker_lease: timedelta
    max_inline_input_bytes: int
    fal_defaults: FalDefaults = field(default_factory=FalDefaults)

    @property
    def submit_lease(self) -> timedelta:
        """How long a worker holds a job it sends: its own lifetime at least, and the grace, since
        a worker that dies mid-submit leaves the same doubt as a lost reply."""
        return max(self.worker_lease, self.ambiguous_grace)


class SubmitService:
    def __init__(
        self,
        *,
        store: JobStore,
        fal: FalQueue,
        planner: Planner,
        files: InputFiles,
        config: SubmitConfig,
        tokens: WebhookTokens,
        archive: InputArchive | None = None,
        catalogue: ModelCatalogue | None = None,
        history: FalRequestHistory | None = None,
        estimator: Estimator | None = None,
        gate: SpendGate | None = None,
        batch_cancelled: Callable[[str], bool] | None = None,
        clock: Callable[[], datetime] = utcnow,
        timer: Callable[[], float] = time.monotonic,
        correlate: Callable[[str], None] = lambda job_id: None,
    ) -> None:
        self._store = store
        self._fal = fal
        self._planner = planner
        self._files = files
        self._config = config
        self._tokens = tokens
        self._archive = archive
        self._catalogue = catalogue
        # Spend control (falflow.spend): each job's estimate, and the budget check before fal.
        self._estimator = estimator
        self._gate = gate
        # Whether a batch was cancelled (falflow.submit.batches): its lines not yet sent are not sent.
        self._batch_cancelled = batch_cancelled
        # Without a history every resend after an ambiguous submit falls back to the grace rule alone.
        self._requests = JobRequests(store, fal, history, actor=ACTOR, clock=clock)
        self._clock = clock
        self._timer = timer
        # Called with the job id as soon as it is known (the edge makes it the log correlation id).
        self._correlate = correlate

    # ------------------------------------------------------------------------------ the flow

    def submit_job(self, source: JobSource) -> SubmitResult:
        """Turn one source into (at most) one fal submission; see the module docstring.

        Raises `SubmitRetryLaterError` (or an AWS error) when the source must be tried again.
        """
        try:
            plan = self._planner.plan(source)
        except PlanRejectedError as rejected:
            self._correlate(rejected.identity.job_id)
            return self._reject_new(rejected.identity, rejected.error, model=rejected.model)
        if plan is None:
            return SubmitResult(None, SubmitOutcome.IGNORED)
        self._correlate(plan.job_id)

        try:
            checked = self._check(plan)
            accepted = self._accepted_job(checked)
        except RequestRejectedError as rejected:
            return self._reject_new(plan.identity, rejected.error, model=plan.request.model, plan=plan)

        # Created with this worker's submit lease: the common path costs one write before fal.
        job, created = self._store.create(accepted)
        if created:
            logger.info("job accepted", job_id=job.job_id, model=job.model, source_kind=job.source_kind)
            return self._send_leased(checked, job, created=True)
        differences = _differences(job, plan.request, checked.record_input)
        if differences:
            return self._conflict(job, plan.identity, f"a different {', '.join(differences)}")
        if not _awaits_submit(job):
            return self._duplicate(job)
        return self._claim_and_send(checked, previous=job)

    def _check(self, plan: JobPlan) -> CheckedInputs:
        """Everything that can reject a valid request before fal is asked."""
        request = plan.request
        if self._catalogue is not None and self._catalogue.is_loaded():
            status = self._catalogue.status(request.model)
            # Private apps are not in fal's public catalogue: judge only owners it lists.
            if status is None and self._catalogue.lists_owner_of(request.model):
                raise RequestRejectedError(
                    "unknown_model", f"fal's model catalogue does not list {request.model!r}"
                )
            if status == "deprecated":
                raise RequestRejectedError(
                    "deprecated_model", f"{request.model!r} is deprecated in fal's model catalogue"
                )
        if _json_size(request.metadata) > MAX_METADATA_BYTES:
            raise RequestRejectedError(
                "metadata_too_large", f"metadata may take at most {MAX_METADATA_BYTES} bytes as JSON"
            )
        return self._files.check(plan)

    def _claim_and_send(self, checked: CheckedInputs, *, previous: Job) -> SubmitResult:
        """Send an accepted job that an earlier delivery recorded, if its lease can be had."""
        job_id = checked.plan.job_id
        claimed = self._store.claim_submit_lease(job_id, now=self._clock(), lease=self._config.submit_lease)
        if claimed is None:
            return self._not_claimed(job_id)
        # A lease left behind (not released) or a recorded ambiguity: an earlier attempt may have
        # reached fal, and its grace passed without a webhook binding it.
        earlier = None
        if claimed.submit_ambiguous_at is not None or previous.submit_lease_until is not None:
            earlier = (
                f"its reply was lost at {claimed.submit_ambiguous_at}"
                if claimed.submit_ambiguous_at
                else f"its worker stopped without an outcome (lease until {previous.submit_lease_until})"
            )
        return self._send_leased(checked, claimed, created=False, earlier=earlier)

    def _send_leased(
        self, checked: CheckedInputs, job: Job, *, created: bool, earlier: str | None = None
    ) -> SubmitResult:
        """Send a job this worker holds the submit lease of; whatever happens, settle the lease.
        ``earlier`` says why an earlier attempt may have reached fal (look for it before sending)."""
        lease = job.submit_lease_until
        try:
            if job.batch is not None and self._batch_cancelled and self._batch_cancelled(job.batch.name):
                return self._cancel_for_batch(job, job.batch.name, created=created)
            if self._gate is not None:
                verdict = self._gate.admit(job, self._clock())
                if verdict.admission is not Admission.ADMITTED:
                    return self._not_sent(job.job_id, verdict, created=created)
            return self._send(checked, job, created=created, earlier=earlier)
        except SubmitRetryLaterError as retry:
            if not retry.ambiguous:
                self._release(job.job_id, lease)
            raise
        except RequestRejectedError as rejected:  # a file vanished since it was checked
            return self._reject_leased(checked.plan, rejected.error, created=created)
        except Exception:
            self._release(job.job_id, lease)
            raise

    def _send(self, checked: CheckedInputs, job: Job, *, created: bool, earlier: str | None) -> SubmitResult:
        plan, request = checked.plan, checked.plan.request
        job_id = plan.job_id
        fal_input = self._files.resolve(checked)
        if earlier is not None:
            found = self._find_earlier(job, fal_input)
            if isinstance(found, SubmitResult):
                return found
            self._trail(
                job_id,
                "resubmit",
                f"attempt {job.attempts}: an earlier submit may have reached fal ({earlier}), no webhook "
                f"bound it within the grace period, and {found}",
            )
            logger.warning("sending a job again after its grace period", job_id=job_id, attempts=job.attempts)
        started = self._timer()
        try:
            submission = self._fal.submit(
                request.model,
                fal_input,
                # The job's own URL: its id, and the token that binds fal's delivery to it.
                webhook_url=job_webhook_url(self._config.webhook_url, job_id, self._tokens.token_for(job_id)),
                priority=request.priority,
                start_timeout=request.start_timeout,
                store_io=None if job.store_io else False,
                # Resolved when the job was recorded, so every send of the job asks the same.
                lifecycle=OutputLifecycle(
                    initial_acl="forbid" if job.private_outputs else None,
                    expiration_duration_seconds=job.output_expiry_seconds,
                ),
                allow_fallbacks=job.allow_fallbacks,
            )
        except FalError as error:
            return self._fal_failed(job, error, created=created)
        latency = self._timer() - started
        try:
            return self._record_submission(job_id, submission, latency, created=created)
        except SubmitRetryLaterError:
            raise
        except Exception as error:
            # fal has the job: the lease must hold (no resend) until its webhook binds the request.
            logger.exception(
                "fal queued the job but recording its request failed",
                job_id=job_id,
                request_id=submission.request_id,
            )
            raise SubmitRetryLaterError(
                job_id,
                f"fal queued request {submission.request_id} but recording it failed "
                f"({type(error).__name__}); its webhook binds it, or a delivery after the lease sends "
                "the job again",
                ambiguous=True,
            ) from error

    # ----------------------------------------------------------- fal's request history (ADR 0017)

    def _find_earlier(self, job: Job, fal_input: dict[str, Any]) -> SubmitResult | str:
        """Bind an earlier request of this job that fal's request history shows (its input is the
        one we send) and cancel any other; the outcome, or why the job must be sent again."""
        if not job.store_io:
            return "fal keeps no payloads of this job (X-Fal-Store-IO: 0), so the grace rule alone decides"
        if not self._requests.has_history:
            return "no request history is configured, so the grace rule alone decides"
        # Every earlier attempt of this job was sent at least a grace ago (its lease had to expire
        # first), so a request sent within the last half grace is another job's (same input).
        sent_before = self._clock() - min(self._config.ambiguous_grace, self._config.worker_lease) / 2
        try:
            matches = self._requests.with_input(job, fal_input, sent_before=sent_before)
        except FalError as error:
            reason = f"fal's request history could not be read ({error.message}); not sent again"
            self._trail(job.job_id, "request_history_unavailable", reason)
            raise SubmitRetryLaterError(job.job_id, reason, ambiguous=True) from error
        bound = next((found for item in matches if (found := self._adopt(job, item))), None)
        if bound is None:
            return "fal's request history shows no request with this job's input"
        for item in matches:
            if item.request_id != bound:
                self._requests.cancel(job, item.request_id, bound_id=bound)
        self._trail(
            job.job_id,
            "found_in_request_history",
            f"request {bound} (of {len(matches)} in fal's request history with this job's input) bound; "
            "not sent again",
        )
        logger.info("earlier request found in fal's request history", job_id=job.job_id, request_id=bound)
        return SubmitResult(job.job_id, SubmitOutcome.FOUND, request_id=bound)

    def _adopt(self, job: Job, item: RequestHistoryItem) -> str | None:
        """Bind ``item``'s request to the job: its id, or the id a webhook bound meanwhile; None
        when another job holds it."""
        assert job.model is not None
        urls = self._fal.urls_for(job.model, item.request_id)
        request_urls = RequestUrls(
            status_url=urls.status_url, response_url=urls.response_url, cancel_url=urls.cancel_url
        )
        if self._store.record_submission(job.job_id, item.request_id, request_urls, now=self._clock()):
            return item.request_id
        current = self._store.get(job.job_id)
        if current is None or current.request_id is None:
            return None  # claimed by another job of the same input: try the next
        self._store.confirm_submission(job.job_id, current.request_id, now=self._clock())
        return current.request_id

    def _record_submission(
        self, job_id: str, submission: Submission, latency: float, *, created: bool
    ) -> SubmitResult:
        request_id = submission.request_id
        urls = RequestUrls(
            status_url=submission.status_url,
            response_url=submission.response_url,
            cancel_url=submission.cancel_url,
            gateway_request_id=submission.gateway_request_id or request_id,
        )
        # The common case in one conditional write: still ACCEPTED and no request id bound yet.
        advanced = self._store.record_submission(job_id, request_id, urls, now=self._clock())
        webhook_first = advanced is None
        if webhook_first:
            # fal's webhook was recorded first: bind our id (refused if it bound another one), and
            # never move the job back from where the completion path has taken it.
            bound = self._store.bind_request(job_id, request_id, urls=urls)
            if not bound.bound and bound.conflicting_request_id is None:
                self._request_taken(job_id, request_id)
            if not bound.bound:
                assert bound.job is not None
                assert bound.conflicting_request_id is not None
                self._requests.cancel(
                    bound.job,
                    request_id,
                    bound_id=bound.conflicting_request_id,
                    cancel_url=submission.cancel_url,
                )
                return SubmitResult(
                    job_id,
                    SubmitOutcome.SUPERSEDED,
                    created=created,
                    request_id=request_id,
                    fal_latency_s=latency,
                )
            self._store.confirm_submission(job_id, request_id, now=self._clock())
        logger.info(
            "job submitted to fal",
            job_id=job_id,
            request_id=request_id,
            fal_latency_ms=round(latency * 1000),
            webhook_first=webhook_first,
        )
        return SubmitResult(
            job_id, SubmitOutcome.SUBMITTED, created=created, request_id=request_id, fal_latency_s=latency
        )

    # ------------------------------------------------------------------------ the failure paths

    def _fal_failed(self, job: Job, error: FalError, *, created: bool) -> SubmitResult:
        job_id = job.job_id
        if isinstance(error, FalAccountLockedError) and self._gate is not None:
            verdict = self._gate.hold_for_lock(job, error.lock_reason, self._clock())
            return self._not_sent(job_id, verdict, created=created)
        failure = classify_submit_error(error)
        if failure is FalFailure.REFUSED:
            job_error = refusal_error(error)
            failed = self._store.fail_before_submit(job_id, job_error, now=self._clock())
            self._refund(failed)
            logger.warning(
                "fal refused the job",
                job_id=job_id,
                error_type=job_error.type,
                status=error.status,
                recorded=failed is not None,
            )
            return SubmitResult(job_id, SubmitOutcome.FAILED, created=created, error=job_error)
        if failure is FalFailure.NOT_ACCEPTED:
            raise SubmitRetryLaterError(job_id, f"fal did not take the job: {error.message}") from error
        hold_until = self._clock() + self._config.ambiguous_grace
        try:
            self._mark_ambiguous(job_id, error, hold_until)
        except Exception:  # the claim's lease (at least the grace) still holds the job
            logger.exception("could not record the ambiguous submit", job_id=job_id)
        raise SubmitRetryLaterError(
            job_id,
            f"fal may have queued the job but its reply was lost ({error.message}); not resent "
            f"before {self._config.ambiguous_grace.total_seconds():g} s have passed",
            ambiguous=True,
            not_before=hold_until,
        ) from error

    def _mark_ambiguous(self, job_id: str, error: FalError, hold_until: datetime) -> None:
        self._store.record_ambiguous_submit(job_id, now=self._clock(), hold_until=hold_until)
        self._trail(job_id, "submit_ambiguous", error.message)
        logger.warning("submit reply lost: holding the job for fal's webhook", job_id=job_id)

    def _release(self, job_id: str, lease: str | None) -> None:
        """Let the next delivery send the job at once (best effort: the lease also expires)."""
        if lease is None:  # nothing held, nothing to release
            return
        try:
            self._store.release_submit_lease(job_id, held_until=lease)
        except Exception:  # the original failure is what matters; the lease expires anyway
            logger.exception("could not release the submit lease", job_id=job_id)

    def _not_sent(self, job_id: str, verdict: Verdict, *, created: bool) -> SubmitResult:
        """Spend control kept the job back: HELD (its message is done), or the job changed under
        this worker, which then no longer holds it."""
        if verdict.admission is Admission.HELD:
            return SubmitResult(job_id, SubmitOutcome.HELD, created=created)
        return self._not_claimed(job_id)

    def _not_claimed(self, job_id: str) -> SubmitResult:
        current = self._store.get(job_id)
        if current is None or not _awaits_submit(current):
            return self._duplicate(current) if current else SubmitResult(job_id, SubmitOutcome.DUPLICATE)
        why = (
            f"an earlier submit at {current.submit_ambiguous_at} may have reached fal; waiting for its "
            f"webhook until {current.submit_lease_until}"
            if current.submit_ambiguous_at
            else f"another worker is sending it (lease until {current.submit_lease_until})"
        )
        lease = current.submit_lease_until
        raise SubmitRetryLaterError(
            job_id,
            why,
            ambiguous=current.submit_ambiguous_at is not None,
            held=True,
            not_before=datetime.fromisoformat(lease) if lease else None,
        )

    def _request_taken(self, job_id: str, request_id: str) -> NoReturn:
        """fal queued our request, but another job of the same input bound it from fal's request
        history first: this job waits, like after a lost reply, for a request of its own."""
        holder = self._store.request_holder(request_id)
        now = self._clock()
        hold_until = now + self._config.ambiguous_grace
        self._store.record_ambiguous_submit(job_id, now=now, hold_until=hold_until)
        reason = f"request {request_id} was bound by job {holder} (same input) before this job recorded it"
        self._trail(job_id, "request_taken", reason)
        raise SubmitRetryLaterError(job_id, reason, ambiguous=True, not_before=hold_until)

    # ------------------------------------------------------------------------------ rejections

    def _reject_new(
        self, identity: JobIdentity, error: JobError, *, model: str | None = None, plan: JobPlan | None = None
    ) -> SubmitResult:
        job = Job.new(
            identity.job_id,
            source=identity.source,
            source_kind=identity.source_kind,
            now=self._clock(),
            state=JobState.REJECTED,
            model=model,
            error=error,
            **(_job_fields(plan.request, self._config.fal_defaults) if plan else {}),
        )
        stored, created = self._store.create(job)
        if created:
            logger.warning("job rejected", job_id=job.job_id, error_type=error.type, reason=error.message)
            return SubmitResult(job.job_id, SubmitOutcome.REJECTED, created=True, error=error)
        if _conflicting_rejection(stored, identity, error, plan):
            return self._conflict(
                stored, identity, f"a request that is rejected ({error.type}: {error.message})"
            )
        if plan is None or not _awaits_submit(stored):
            return self._duplicate(stored)
        # Accepted by an earlier delivery and never sent (its file has gone since): end it, but
        # only under the submit lease so that a worker sending it right now is not overtaken.
        lease = self._config.submit_lease
        if self._store.claim_submit_lease(plan.job_id, now=self._clock(), lease=lease) is None:
            return self._not_claimed(plan.job_id)
        return self._reject_leased(plan, error, created=False)

    def _reject_leased(self, plan: JobPlan, error: JobError, *, created: bool) -> SubmitResult:
        rejected = self._store.reject(plan.job_id, error, now=self._clock())
        self._refund(rejected)
        if rejected is None:
            current = self._store.get(plan.job_id)
            return self._duplicate(current) if current else SubmitResult(plan.job_id, SubmitOutcome.DUPLICATE)
        logger.warning("job rejected", job_id=plan.job_id, error_type=error.type, reason=error.message)
        return SubmitResult(plan.job_id, SubmitOutcome.REJECTED, created=created, error=error)

    def _conflict(self, job: Job, identity: JobIdentity, what: str) -> SubmitResult:
        """Another request under this job's id: never run, never dropped silently — noted on the job
        (once per source), and the message goes to the DLQ with reason ``job_id_conflict``."""
        reason = f"{identity.source} reuses job_id {job.job_id!r} with {what}; refused, the job is unchanged"
        self._trail(job.job_id, JOB_ID_CONFLICT, reason)
        logger.warning("job id reused for different work: refused", job_id=job.job_id, source=identity.source)
        return SubmitResult(
            job.job_id, SubmitOutcome.CONFLICT, error=JobError(type=JOB_ID_CONFLICT, message=reason)
        )

    def _duplicate(self, job: Job) -> SubmitResult:
        logger.info("duplicate delivery: nothing sent", job_id=job.job_id, state=job.state.value)
        return SubmitResult(job.job_id, SubmitOutcome.DUPLICATE, request_id=job.request_id)

    # ---------------------------------------------------------------------------------- records

    def _accepted_job(self, checked: CheckedInputs) -> Job:
        plan = checked.plan
        identity = plan.identity
        record_input: dict[str, Any] | None = checked.record_input
        input_ref = None
        if _json_size(record_input) > self._config.max_inline_input_bytes:
            input_ref = self._keep_large_input(plan, checked.record_input)
            record_input = None
        now = self._clock()
        return Job.new(
            identity.job_id,
            source=identity.source,
            source_kind=identity.source_kind,
            now=now,
            model=plan.request.model,
            input=record_input,
            input_ref=input_ref,
            # Created holding the submit lease, as `claim_submit_lease` would have given it.
            submit_lease_until=isoformat(now + self._config.submit_lease),
            attempts=1,
            route=plan.route_prefix,
            estimate=self._estimate(plan.request.model, checked.record_input),
            **_job_fields(plan.request, self._config.fal_defaults),
        )

    def _keep_large_input(self, plan: JobPlan, record_input: dict[str, Any]) -> str:
        if plan.document is not None:
            return plan.document.uri  # the request already lives in S3, version-pinned
        if self._archive is None:
            raise RequestRejectedError(
                "input_too_large",
                f"the input is larger than {self._config.max_inline_input_bytes} bytes and no bucket "
                "is configured to keep large inputs",
            )
        return self._archive.keep(plan.job_id, record_input)

    def _estimate(self, model: str, record_input: dict[str, Any] | None) -> JobCost | None:
        return self._estimator.estimate(model, record_input) if self._estimator is not None else None

    def _cancel_for_batch(self, job: Job, batch: str, *, created: bool) -> SubmitResult:
        cancelled = self._store.cancel_unsubmitted(job.job_id, now=self._clock())
        if cancelled is None:
            self._release(job.job_id, job.submit_lease_until)
            return self._duplicate(job)
        self._trail(job.job_id, "batch_cancelled", f"batch {batch} was cancelled before this line was sent")
        logger.info("batch line cancelled before it was sent", job_id=job.job_id, batch=batch)
        return SubmitResult(job.job_id, SubmitOutcome.CANCELLED, created=created)

    def _refund(self, job: Job | None) -> None:
        """A job that ended before fal ran it gives back its reservation."""
        if job is not None and job.reservation is not None and self._gate is not None:
            self._gate.refund(job, self._clock())

    def _trail(self, job_id: str, action: str, reason: str) -> None:
        self._store.add_trail(
            job_id, TrailEntry(at=isoformat(self._clock()), actor=ACTOR, action=action, reason=reason)
        )


def _differences(job: Job, request: JobRequest, record_input: dict[str, Any] | None) -> list[str]:
    """The request fields in which a delivery differs from the job recorded under its id (the input
    only where the record keeps it inline)."""
    compared = {"model": request.model, **_request_fields(request)}
    fields = [name for name, value in compared.items() if getattr(job, name) != value]
    if record_input is not None and job.input is not None and job.input != record_input:
        fields.append("input")
    return fields


def _request_fields(request: JobRequest) -> dict[str, Any]:
    """The request's fields the job record keeps as they were asked for."""
    return {
        "metadata": request.metadata,
        "files": request.files,
        "priority": request.priority,
        "start_timeout": request.start_timeout,
        "output_prefix": request.output_prefix,
        "batch": request.batch,
    }


def _job_fields(request: JobRequest, defaults: FalDefaults) -> dict[str, Any]:
    """What a new job record keeps of its request: its fields, and its fal options resolved."""
    return {**_request_fields(request), **fal_options(request, defaults)}


def _conflicting_rejection(stored: Job, identity: JobIdentity, error: JobError, plan: JobPlan | None) -> bool:
    """Whether a rejected delivery is another request under an existing job's id, not a redelivery:
    it came from elsewhere and neither asks for the same work nor repeats the stored rejection."""
    if stored.source == identity.source:
        return False  # the same message or object again
    if stored.state is JobState.REJECTED and stored.error is not None and stored.error.type == error.type:
        return False
    return plan is None or bool(_differences(stored, plan.request, None))
