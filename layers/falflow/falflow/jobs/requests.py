"""A job's requests in fal's request history, and the cancelling of those it does not bind.

fal's queue takes no idempotency key, so a lost submit reply is settled by asking fal: the Platform
API's request history lists the account's requests with their input. The submit path binds one
found there instead of sending again; the submit path and the reconciler cancel any other request
carrying the job's input (claimed for the job first, so a request binds at most one job). Why:
docs/adr/0017-a-lost-submit-reply-is-looked-up-in-fals-request-history.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aws_lambda_powertools import Logger

from falflow.fal.errors import FalError
from falflow.jobs.model import Job, JobState, TrailEntry, isoformat, utcnow

if TYPE_CHECKING:
    from falflow.fal.platform import RequestHistoryItem
    from falflow.fal.ports import FalQueue, FalRequestHistory
    from falflow.jobs.store import JobStore

logger = Logger(child=True)

# How far before a job's creation its requests are looked for (clock skew between us and fal).
HISTORY_LOOKBACK: Final = timedelta(minutes=5)
CANCELLED_ACTION: Final = "duplicate_request_cancelled"
# A SigV4 presigned URL carries its credentials in X-Amz-* query parameters.
_PRESIGNED_MARKER = "X-Amz-Signature="


class JobRequests:
    def __init__(
        self,
        store: JobStore,
        fal: FalQueue,
        history: FalRequestHistory | None,
        *,
        actor: str,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._fal = fal
        self._history = history
        self._actor = actor
        self._clock = clock

    @property
    def has_history(self) -> bool:
        """Whether fal's request history can be asked (else only `cancel` is of use)."""
        return self._history is not None

    def with_input(self, job: Job, fal_input: Any, *, sent_before: datetime) -> list[RequestHistoryItem]:
        """fal's requests to the job's model, sent since it was created and before ``sent_before``,
        whose input is ``fal_input``, oldest first. Raises `FalError` when the history cannot be
        read. A request sent later cannot be one of this job's: another job's of the same input,
        whose own submit may be recording it right now, is left alone."""
        matches = [
            item
            for item in self._since_created(job)
            if _sent_before(item, sent_before) and same_fal_input(fal_input, item.json_input)
        ]
        return sorted(matches, key=lambda item: (item.sent_at, item.request_id))

    def cancel_others(self, job: Job) -> int:
        """Cancel every request besides the bound one that carries the bound request's input (a
        duplicate that started after the submit path last looked); how many were cancelled now."""
        submitted_at = job.state_times.get(JobState.SUBMITTED.value)
        if job.request_id is None or submitted_at is None:
            return 0
        items = self._since_created(job)
        bound = next((item for item in items if item.request_id == job.request_id), None)
        if bound is None or bound.json_input is None:
            return 0  # not listed yet, or no payloads kept: nothing to compare with
        # The job sends nothing once bound: a request sent after that is not one of its own.
        bound_at = datetime.fromisoformat(submitted_at)
        return sum(
            self.cancel(job, item.request_id, bound_id=job.request_id)
            for item in items
            if item.request_id != job.request_id
            and _sent_before(item, bound_at)
            and same_fal_input(bound.json_input, item.json_input)
        )

    def cancel(self, job: Job, request_id: str, *, bound_id: str, cancel_url: str | None = None) -> bool:
        """A second fal request of ``job``: claim it for the job, note it in ``duplicate_requests``
        and cancel it (through ``cancel_url``, or the one fal's URL scheme gives it). False when it
        is another job's, or was noted (and cancelled) before."""
        if self._store.record_duplicate_request(job.job_id, request_id) is None:
            return False
        try:
            assert job.model is not None
            url = cancel_url or self._fal.urls_for(job.model, request_id).cancel_url
            outcome = f"cancel: {self._fal.cancel(url).value}"
        except (FalError, ValueError) as error:
            outcome = f"cancel failed: {error}"
        self._store.add_trail(
            job.job_id,
            TrailEntry(
                at=isoformat(self._clock()),
                actor=self._actor,
                action=CANCELLED_ACTION,
                reason=f"request {request_id} is a duplicate: the job is bound to {bound_id}; {outcome}",
            ),
        )
        logger.warning(
            "duplicate fal request cancelled",
            job_id=job.job_id,
            request_id=request_id,
            bound_request_id=bound_id,
        )
        return True

    def _since_created(self, job: Job) -> list[RequestHistoryItem]:
        if job.model is None or self._history is None:
            return []
        since = datetime.fromisoformat(job.created_at) - HISTORY_LOOKBACK
        return list(self._history.iter_requests([job.model], start=since, payloads=True))


def _sent_before(item: RequestHistoryItem, moment: datetime) -> bool:
    try:
        return datetime.fromisoformat(item.sent_at) < moment
    except ValueError:
        return False  # a time we cannot read proves nothing


def same_fal_input(sent: Any, seen: Any) -> bool:
    """Whether ``seen`` (an input fal keeps) is ``sent`` (an input of ours, resolved again): equal
    JSON, where presigned S3 URLs are compared without their signature (it differs per attempt)
    and so name the same object version. A CDN upload's URL differs per upload: never equal."""
    same: bool = _comparable(sent) == _comparable(seen)
    return same


def _comparable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_comparable(item) for item in value]
    if isinstance(value, str) and _PRESIGNED_MARKER in value:
        parts = urlsplit(value)
        kept = [
            (name, item)
            for name, item in parse_qsl(parts.query, keep_blank_values=True)
            if not name.lower().startswith("x-amz-")
        ]
        return urlunsplit(parts._replace(query=urlencode(kept)))
    return value
