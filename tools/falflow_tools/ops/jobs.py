"""Looking at jobs and acting on them: list, show, cancel, retry, release."""

from __future__ import annotations

import contextlib
import heapq
import io
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import ClientError

from falflow.aws.intake import SqsIntakeQueue
from falflow.aws.s3 import S3ObjectRef
from falflow.fal import CancelOutcome, FalError, FalQueueClient
from falflow.jobs import WAITING_STATES, Job, JobState, TrailEntry, isoformat, utcnow
from falflow.spend.gate import settle
from falflow.spend.release import Release, Releaser
from falflow.submit.sources import ObjectCreated, object_job_id
from falflow_tools.ops.dlq import find_dead_letter, redrive
from falflow_tools.ops.submit import send_message
from falflow_tools.ops.target import OpsError, Target

RETRY_ACTOR = "falflow-cli"
_MAX_JOB_ID = 128


def list_jobs(
    target: Target,
    *,
    states: Sequence[JobState] = (),
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
) -> list[Job]:
    """Newest first (by when each job entered its state), through the sharded ByStateShard index."""
    store = target.job_store()
    wanted = list(states) or list(JobState)

    def of_state(state: JobState) -> Iterator[Job]:
        jobs: Iterable[Job] = store.list_by_state(
            state, changed_after=since, changed_before=until, newest_first=True
        )
        if model:
            jobs = (job for job in jobs if job.model == model)
        return itertools.islice(jobs, limit)

    merged = heapq.merge(*(of_state(s) for s in wanted), key=lambda job: job.state_changed_at, reverse=True)
    return list(itertools.islice(merged, limit))


def get_job(target: Target, job_id: str) -> Job:
    job = target.job_store().get(job_id)
    if job is None:
        raise OpsError(f"no job {job_id!r} in {target.name}{_still_queued(target, job_id)}")
    return job


def _still_queued(target: Target, job_id: str) -> str:
    """Why a job may not be in the table yet: its message still waits in the intake queue (SQS
    cannot be searched without taking messages from the submit function, so the count is told)."""
    url = target.outputs.get("IntakeQueueUrl")
    if not url:
        return ""
    try:
        attributes = target.sqs().get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
    except ClientError:
        return ""
    waiting = sum(int(attributes.get(name, 0)) for name in attributes)
    if not waiting:
        return ""
    return (
        f"; {waiting} message(s) are still in the intake queue, so if you have just submitted it, "
        f"the submit function has not recorded it yet: try again in a few seconds "
        f"(`falflow jobs watch {job_id}` waits for it)"
    )


@dataclass(frozen=True)
class JobDetails:
    job: Job
    output_bucket: str
    links: dict[str, str] = field(default_factory=dict)  # object key → presigned GET URL

    def fields(self) -> dict[str, Any]:
        """The record as shown: its stored fields, and where its cost comes from."""
        shown = self.job.model_dump(mode="json", exclude_none=True)
        if self.job.cost_source is not None:
            shown["cost_source"] = self.job.cost_source
        return shown

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.fields(),
            "output_bucket": self.output_bucket,
            "links": self.links,
        }


def show_job(target: Target, job_id: str, *, link_expiry_s: int = 3600) -> JobDetails:
    """The whole record plus a presigned link to every stored output and result.json."""
    job = get_job(target, job_id)
    bucket = target.output("OutputBucketName")
    keys = [*job.outputs, *([job.result_key] if job.result_key else [])]
    s3 = target.s3()
    links = {
        key: s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=link_expiry_s
        )
        for key in keys
    }
    return JobDetails(job=job, output_bucket=bucket, links=links)


def output_path(job: Job, key: str) -> PurePosixPath:
    """Where an output lands under a download folder: its path below `<job id>/` in the bucket
    (so `outputs/<prefix>/<job id>/a/b.png` is `a/b.png`); never above the folder."""
    parts = PurePosixPath(key).parts
    below = parts[parts.index(job.job_id) + 1 :] if job.job_id in parts else parts[-1:]
    if not below or any(part in ("..", "") for part in below):
        raise OpsError(f"job {job.job_id} names an output key that is no file path: {key!r}")
    return PurePosixPath(*below)


def download_outputs(target: Target, job_id: str, directory: Path) -> list[Path]:
    """Every stored output of a job and its result.json, into `directory/<job id>/`."""
    job = get_job(target, job_id)
    keys = [*job.outputs, *([job.result_key] if job.result_key else [])]
    if not keys:
        raise OpsError(f"job {job_id} has no stored outputs (it is {job.state.value})")
    bucket = target.output("OutputBucketName")
    folder = directory / job_id
    written = []
    for key in keys:
        path = folder / output_path(job, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.s3().download_file(bucket, key, str(path))
        except ClientError as error:
            raise OpsError(f"cannot download s3://{bucket}/{key}: {error}") from error
        written.append(path)
    return written


# ---------------------------------------------------------------------------------- cancel


@dataclass(frozen=True)
class CancelResult:
    job_id: str
    outcome: str  # "cancelled" | fal's CancelOutcome when it was not cancelled
    state: JobState
    message: str


def cancel_job(target: Target, job_id: str, *, fal: FalQueueClient | None = None) -> CancelResult:
    """Cancel at fal through the stored cancel URL, then mark the job CANCELLED.

    A job fal has not heard of yet (ACCEPTED or HELD, no request id) is marked CANCELLED at once,
    which also stops a later submit (it only claims ACCEPTED jobs), and gives back what it reserved
    against the budgets. A job fal reports as already
    completed is left alone: its result is on its way (webhook or reconciler).
    """
    job = get_job(target, job_id)
    if job.is_final:
        raise OpsError(f"job {job_id} is already {job.state.value}")
    return cancel_record(target, job, fal=fal)


def cancel_record(
    target: Target, job: Job, *, fal: FalQueueClient | None = None, reason: str = "cancelled by an operator"
) -> CancelResult:
    """`cancel_job` of a job already read (not final when read): `falflow batch cancel` cancels a
    batch's jobs through it, read a page at a time."""
    store = target.job_store()
    job_id = job.job_id
    now = utcnow()
    if job.request_id is None and job.state in (JobState.ACCEPTED, JobState.HELD):
        updated = store.cancel_unsubmitted(job_id, now=now)
        if updated is None:
            raise OpsError(f"job {job_id} changed while cancelling it; look again with `falflow jobs show`")
        if updated.reservation is not None:
            settle(store, updated, 0.0, target.spend_ledger().table, now)
        store.add_trail(
            job_id, TrailEntry(at=isoformat(now), actor=RETRY_ACTOR, action="cancel", reason=reason)
        )
        return CancelResult(job_id, "cancelled", updated.state, "cancelled before it reached fal")
    if not job.cancel_url:
        raise OpsError(
            f"job {job_id} has no cancel URL from fal (state {job.state.value}); try again shortly"
        )
    queue = fal or FalQueueClient(target.fal, target.fal_api_key)
    try:
        outcome = queue.cancel(job.cancel_url)
    except FalError as error:
        raise OpsError(f"fal refused the cancel of job {job_id}: {error}") from error
    if outcome is not CancelOutcome.CANCELLATION_REQUESTED:
        what = "already finished at fal" if outcome is CancelOutcome.ALREADY_COMPLETED else "unknown to fal"
        return CancelResult(job_id, outcome.value, job.state, f"not cancelled: the request is {what}")
    updated = store.cancel(job_id, now=now)
    if updated is None:
        latest = get_job(target, job_id)
        return CancelResult(
            job_id, outcome.value, latest.state, f"fal was asked; the job is {latest.state.value}"
        )
    store.add_trail(job_id, TrailEntry(at=isoformat(now), actor=RETRY_ACTOR, action="cancel", reason=reason))
    note = (
        "cancelled at fal"
        if job.state != JobState.IN_PROGRESS
        else "fal signalled (a running request may still bill)"
    )
    return CancelResult(job_id, "cancelled", updated.state, note)


# ----------------------------------------------------------------------------------- retry


@dataclass(frozen=True)
class RetryResult:
    retried: str  # the job id or DLQ message id given
    via: str  # "message" | "s3" | "dlq"
    new_job_id: str | None
    detail: str


def retry_job(target: Target, job_id: str) -> RetryResult:
    """Run a FAILED (or REJECTED, CANCELLED) job again as a new job, through the intake path.

    Jobs move forward only, so a retry is a new job: a media drop is dropped again (a new version
    of the same object, so the route applies afresh); any other job is sent as a job message with
    the record's request under the id `<job id>.r<n>`, and `retry_of` in its metadata.
    """
    job = get_job(target, job_id)
    if job.state == JobState.COMPLETED:
        raise OpsError(f"job {job_id} completed; there is nothing to retry")
    if not job.is_final:
        waiting = "fal is still working on it" if job.state in WAITING_STATES else "it is still in progress"
        raise OpsError(f"job {job_id} is {job.state.value}: {waiting} (cancel it first to run it again)")
    if job.source_kind == "s3_media":
        return _drop_again(target, job)
    return _send_again(target, job)


def _drop_again(target: Target, job: Job) -> RetryResult:
    ref = S3ObjectRef.parse(job.source)
    s3 = target.s3()
    source: dict[str, Any] = {"Bucket": ref.bucket, "Key": ref.key}
    if ref.version_id:
        source["VersionId"] = ref.version_id
    try:
        head = s3.head_object(**source)
        # A copy onto the same key is a new version and a new ObjectCreated event; S3 only allows
        # it with new metadata, which also records what the version is for.
        copied = s3.copy_object(
            Bucket=ref.bucket,
            Key=ref.key,
            CopySource=source,  # type: ignore[arg-type]
            MetadataDirective="REPLACE",
            ContentType=head.get("ContentType", "application/octet-stream"),
            Metadata={**head.get("Metadata", {}), "falflow-retry-of": job.job_id},
        )
    except ClientError as error:
        raise OpsError(f"cannot drop {job.source} again: {error}") from error
    again = S3ObjectRef(bucket=ref.bucket, key=ref.key, version_id=copied.get("VersionId"))
    etag = copied.get("CopyObjectResult", {}).get("ETag")
    new_id = object_job_id(ObjectCreated(object=again, etag=etag))
    return RetryResult(job.job_id, "s3", new_id, f"dropped {again.uri} again")


def _retry_id(target: Target, job_id: str) -> str:
    store = target.job_store()
    base = job_id.split(".r", 1)[0] if _is_retry_id(job_id) else job_id
    for attempt in range(1, 1000):
        suffix = f".r{attempt}"
        candidate = base[: _MAX_JOB_ID - len(suffix)] + suffix
        if store.get(candidate) is None:
            return candidate
    raise OpsError(f"job {job_id} has been retried too often")


def _is_retry_id(job_id: str) -> bool:
    head, _, tail = job_id.rpartition(".r")
    return bool(head) and tail.isdigit()


def _request_input(target: Target, job: Job) -> dict[str, Any]:
    if job.input is not None:
        return job.input
    if not job.input_ref:
        raise OpsError(f"job {job.job_id} has no input on record to send again")
    ref = S3ObjectRef.parse(job.input_ref)
    body = target.s3().get_object(Bucket=ref.bucket, Key=ref.key)["Body"].read()
    kept = json.loads(body)  # the input itself, as the submit function archived it
    if not isinstance(kept, dict):
        raise OpsError(f"the archived input of job {job.job_id} ({job.input_ref}) is not a JSON object")
    return kept


def _send_again(target: Target, job: Job) -> RetryResult:
    if not job.model:
        raise OpsError(f"job {job.job_id} never named a valid model; fix the request and submit it anew")
    new_id = _retry_id(target, job.job_id)
    message: dict[str, Any] = {
        "model": job.model,
        "input": _request_input(target, job),
        "job_id": new_id,
        "metadata": {**job.metadata, "retry_of": job.job_id},
        "priority": job.priority,
    }
    if job.files:
        message["files"] = job.files
    if job.start_timeout is not None:
        message["start_timeout"] = job.start_timeout
    if job.output_prefix:
        message["output_prefix"] = job.output_prefix
    sent = send_message(target, message)
    return RetryResult(job.job_id, "message", new_id, f"sent as job {sent.job_id}")


def retry(target: Target, job_or_message_id: str) -> RetryResult:
    """Retry a finished job by its id, or re-drive a DLQ message by its message id."""
    if target.job_store().get(job_or_message_id) is not None:
        return retry_job(target, job_or_message_id)
    found = find_dead_letter(target, job_or_message_id)
    if found is None:
        raise OpsError(f"{job_or_message_id!r} is neither a job nor a message in a dead-letter queue")
    queue, _ = found
    (moved,) = redrive(target, queue, message_ids=[job_or_message_id])
    return RetryResult(
        job_or_message_id, "dlq", None, f"sent back from the {queue} DLQ to {moved.to_queue_url}"
    )


# ---------------------------------------------------------------------------------- release


@dataclass(frozen=True)
class ReleaseResult:
    job_id: str
    outcome: str  # a falflow.spend.release.Release value, or "not_held"
    detail: str

    @property
    def released(self) -> bool:
        return self.outcome == Release.RELEASED.value


_RELEASE_DETAILS = {
    Release.RELEASED: "now ACCEPTED, its message sent to the intake queue",
    Release.CANNOT: "its request cannot be rebuilt for the intake queue; submit it anew",
    Release.GONE: "it left HELD meanwhile (released by a reconcile run, or ended)",
}


def releaser(target: Target) -> Releaser:
    """The reconcile function's releaser, on this target's clients and its spend settings."""
    settings = target.spend_settings()
    ledger = target.spend_ledger()
    return Releaser(
        store=target.job_store(),
        ledger=ledger,
        announcer=settings.spend_announcer(ledger, target.events()),
        intake=SqsIntakeQueue(target.output("IntakeQueueUrl"), target.sqs()),
        lock_probe_seconds=settings.fal_lock_probe_seconds,
    )


def release_jobs(
    target: Target, job_ids: Sequence[str] = (), *, every_held: bool = False
) -> list[ReleaseResult]:
    """Release HELD jobs by hand (`job_ids`, or with `every_held` each one, oldest first): no cap
    is checked, but each estimate is charged, so the counters stay what the jobs record."""
    store = target.job_store()
    # Listed before any is released: a release moves the job out of the index being read.
    found: dict[str, Job | None] = (
        {job.job_id: job for job in store.list_by_state(JobState.HELD)}
        if every_held
        else {job_id: store.get(job_id) for job_id in job_ids}
    )
    release = releaser(target)
    results = []
    for job_id, job in found.items():
        if job is None:
            results.append(ReleaseResult(job_id, "not_held", f"no job {job_id!r} in {target.name}"))
        elif job.state is not JobState.HELD:
            results.append(ReleaseResult(job_id, "not_held", f"it is {job.state.value}, not HELD"))
        else:
            # The releaser's EMF metric lines are for a function's log: here they would garble the
            # command's output (and its --json).
            with contextlib.redirect_stdout(io.StringIO()):
                outcome = release.release(job, utcnow(), why=f"released by hand ({RETRY_ACTOR})")
            results.append(ReleaseResult(job_id, outcome.value, _RELEASE_DETAILS.get(outcome, "")))
    return results


def job_duration_s(job: Job, now: datetime | None = None) -> float:
    """From the job's creation to its final state (or to now while it runs)."""
    end = datetime.fromisoformat(job.state_changed_at) if job.is_final else (now or utcnow())
    return max((end - datetime.fromisoformat(job.created_at)).total_seconds(), 0.0)
