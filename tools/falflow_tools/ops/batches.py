"""Batches (docs/adr/0031-a-batch-is-a-manifest-fanned-out-into-jobs.md): submit a manifest, look at
batches and their results, cancel one."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from botocore.exceptions import ClientError

from falflow.aws.s3 import S3ObjectRef
from falflow.batches.lines import batch_name
from falflow.batches.model import Batch, BatchState
from falflow.batches.objects import S3Manifests, S3ResultObjects
from falflow.batches.results import INVALID, NOT_SENT, BatchResults
from falflow.fal import CancelOutcome, FalQueueClient
from falflow.jobs import FINAL_STATES, Job, JobState, utcnow
from falflow_tools.ops.jobs import CancelResult, cancel_record
from falflow_tools.ops.target import OpsError, Target

DEFAULT_PREFIX: Final = "batches/"
# Where `batch submit --name` puts a manifest: outside BatchesPrefix, where its own notification would
# start a second batch of it under the file's name.
NAMED_PREFIX: Final = "manifests/"
# Jobs `batch cancel` cancels: not sent yet, or waiting in fal's queue. A running request is left to
# finish (a cancel would only signal it, and it may still bill).
CANCELLABLE: Final = frozenset({JobState.ACCEPTED, JobState.HELD, JobState.SUBMITTED})
_PAGE: Final = 100
_CHUNK_BYTES: Final = 256 * 1024
_CANCEL_REASON: Final = "cancelled with its batch by an operator"


def batches_prefix(target: Target) -> str:
    return target.parameters.get("BatchesPrefix") or DEFAULT_PREFIX


def get_batch(target: Target, name: str) -> Batch:
    batch = target.batch_store().get(name)
    if batch is None:
        raise OpsError(f"no batch {name!r} in {target.name} (`falflow batch list` shows them)")
    return batch


def list_batches(target: Target) -> list[Batch]:
    return list(target.batch_store().list_batches())


def batch_results(target: Target) -> BatchResults:
    """The reconciler's reading of a batch's results, on this target's clients."""
    s3 = target.s3()
    bucket = target.output("OutputBucketName")
    return BatchResults(
        target.batch_store(),
        target.job_store(),
        S3Manifests(s3),
        S3ResultObjects(s3, bucket),
        output_bucket=bucket,
    )


# ---------------------------------------------------------------------------------- submit


@dataclass(frozen=True)
class SubmittedBatch:
    name: str
    via: str  # "s3" (its notification starts it) | "sqs" (a batch message names it)
    manifest: str  # s3:// URI of the uploaded manifest, its version pinned where the bucket keeps one

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "via": self.via, "manifest": self.manifest}


def submit_batch(
    target: Target, data: bytes, *, file_name: str, prefix: str | None, name: str | None
) -> SubmittedBatch:
    """Upload a manifest; without `name` its S3 notification starts the batch (named as the fan-out
    names it), with `name` a batch message does."""
    watched = batches_prefix(target)
    key = f"{prefix if prefix is not None else (NAMED_PREFIX if name else watched)}{file_name}"
    if name and key.startswith(watched):
        raise OpsError(
            f"with --name the manifest goes outside {watched!r}: there its own notification would "
            "start a second batch of it under the file's name"
        )
    if not name and not (key.startswith(watched) and key.endswith(".jsonl")):
        raise OpsError(f"a manifest runs as a batch only as a .jsonl object under {watched!r} (not {key!r})")
    bucket = target.output("InputBucketName")
    try:
        put = target.s3().put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/jsonl")
    except ClientError as error:
        raise OpsError(f"cannot upload to s3://{bucket}/{key}: {error}") from error
    found = put.get("VersionId")
    version = None if found in (None, "null") else found  # "null": a bucket that keeps no versions
    ref = S3ObjectRef(bucket=bucket, key=key, version_id=version)
    if not name:
        identity = version or put.get("ETag", "").strip('"')
        return SubmittedBatch(batch_name(bucket, key, identity), "s3", ref.uri)
    message = json.dumps({"batch": ref.uri, "name": name})
    try:
        target.sqs().send_message(QueueUrl=target.output("IntakeQueueUrl"), MessageBody=message)
    except ClientError as error:
        raise OpsError(f"cannot send to the intake queue: {error}") from error
    return SubmittedBatch(name, "sqs", ref.uri)


# --------------------------------------------------------------------------------- results


def final_results(target: Target, name: str) -> Iterator[bytes]:
    """A finished batch's results.jsonl from the output bucket, a chunk at a time."""
    batch = get_batch(target, name)
    key = batch.outputs.get("results")
    if not batch.is_final:
        raise OpsError(
            f"batch {name} is {batch.state.value}: its results.jsonl is written once every line is "
            "final; `--partial` prints each line's result as it stands now"
        )
    if key is None:
        why = f": {batch.error.get('message')}" if batch.error else ""
        raise OpsError(f"batch {name} was {batch.state.value}{why}; it has no results")
    bucket = target.output("OutputBucketName")
    try:
        body = target.s3().get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        raise OpsError(f"cannot read s3://{bucket}/{key}: {error}") from error
    return _chunks(body)


def _chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(_CHUNK_BYTES)
    finally:
        body.close()


def partial_results(target: Target, name: str) -> Iterator[bytes]:
    """Each line's result as it stands now, as JSONL (the rows results.jsonl will hold)."""
    batch = get_batch(target, name)
    for row in batch_results(target).rows(batch):
        yield (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()


def write_results(chunks: Iterator[bytes], path: Path) -> int:
    """Bytes written to `path`."""
    written = 0
    with path.open("wb") as out:
        for chunk in chunks:
            written += out.write(chunk)
    return written


# ---------------------------------------------------------------------------------- cancel


@dataclass
class BatchCancel:
    name: str
    state: BatchState
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)  # job_id, message

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "counts": dict(self.counts),
            "failures": self.failures,
        }


def cancel_batch(target: Target, name: str, *, fal: FalQueueClient | None = None) -> BatchCancel:
    """CANCELLING, then each of its jobs that is cancellable, cancelled the way `falflow jobs cancel`
    does. Lines not fanned out yet are stopped by the fan-out, and jobs whose message is still in the
    intake queue by the submit path; both see the batch CANCELLING."""
    get_batch(target, name)
    batch = target.batch_store().request_cancel(name, now=utcnow())
    if batch is None:
        raise OpsError(f"batch {name} is already {get_batch(target, name).state.value}")
    report = BatchCancel(name, batch.state)
    queue = fal or FalQueueClient(target.fal, target.fal_api_key)
    rows = batch_results(target).rows(batch)
    while page := list(itertools.islice(rows, _PAGE)):
        _cancel_page(target, page, queue, report)
    return report


def _cancel_page(
    target: Target, page: list[dict[str, Any]], queue: FalQueueClient, report: BatchCancel
) -> None:
    wanted = [row["job_id"] for row in page if row["state"] in CANCELLABLE]
    # Read again: a job may have moved on since its row was read.
    jobs = target.job_store().get_many(wanted) if wanted else {}
    for row in page:
        job = jobs.get(row["job_id"] or "")
        if job is None or job.state not in CANCELLABLE:
            report.counts[_left_as(row, job)] += 1
            continue
        try:
            result = cancel_record(target, job, fal=queue, reason=_CANCEL_REASON)
        except OpsError as error:
            report.counts["not_cancelled"] += 1
            report.failures.append({"job_id": job.job_id, "message": str(error)})
            continue
        report.counts[_cancelled_as(job, result)] += 1


def _left_as(row: dict[str, Any], job: Job | None) -> str:
    """What a line not cancelled here is."""
    state = job.state.value if job else row["state"]
    if state in (INVALID, NOT_SENT):
        return state.lower()
    if state in _FINAL:
        return "already_final"
    if state in (JobState.IN_PROGRESS.value, JobState.STORING.value):
        return "left_running"
    return "not_recorded"  # its message not sent yet, or still in the intake queue


_FINAL: Final = frozenset(state.value for state in FINAL_STATES)


def _cancelled_as(job: Job, result: CancelResult) -> str:
    if result.outcome == "cancelled":
        return "cancelled_before_send" if job.request_id is None else "cancelled_at_fal"
    if result.outcome == CancelOutcome.CANCELLATION_REQUESTED.value:
        return "cancel_requested"  # fal was asked, but the job moved on meanwhile (it ends on its own)
    return "finishing_at_fal"  # fal had already finished it (or lost it): its result is on its way
