"""The store: turns a recorded completion into stored outputs, a final state and one event.

`StoreWorker.handle` skips a job already finished and announced, takes the job's store lease, reads
fal's completion from the inbox (an ERROR payload fails the job; ``payload: null`` is fetched from
the result URL), checks every output URL and name before fetching any, streams each file into
``outputs/<job_id>/``, writes ``result.json`` and finalises. Transient faults raise (SQS retries,
then dead-letters with the reason); permanent ones end the job FAILED, and so does a download still
failing on the message's last try (a truncated body, a host that does not resolve). A message that
finds another run's live lease is dropped: if that run died, the reconciler takes the job over
when the lease expires. Why:
docs/adr/0004-a-lease-holds-a-job-for-one-worker.md,
docs/adr/0009-outputs-are-streamed-with-bounded-memory.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import mimetypes
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_to_bytes

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from falflow.completion.delivery import RESULT_UNAVAILABLE, FalDelivery, InvalidDeliveryError, error_type_of
from falflow.completion.finalise import Finaliser
from falflow.completion.keys import RESULT_NAME, job_output_prefix, output_key
from falflow.completion.messages import OUTPUTS_DEAD_LETTERED, OutputsMessage
from falflow.completion.ports import Inbox
from falflow.fal.errors import FalError, FalNotFoundError
from falflow.fal.ports import FalQueue, FalRequestPayloads
from falflow.jobs import Job, JobError, JobState, JobStore, TrailEntry, isoformat
from falflow.store.copy import CopyLimits, copy_into
from falflow.store.discovery import (
    OutputFile,
    Pointer,
    UnsafeNameError,
    find_output_files,
    output_names,
    rewrite_urls,
    safe_content_type,
)
from falflow.store.media import (
    MediaFetcher,
    MediaTransientError,
    OutputRefusedError,
    OutputTooLargeError,
    OutputUnavailableError,
    redact,
)
from falflow.store.ports import OutputBucket

logger = Logger(child=True)
metrics = Metrics()

ACTOR = "store"
SOURCE_METADATA = "falflow-source"
JOB_METADATA = "falflow-job-id"
DEFAULT_LEASE = timedelta(seconds=960)  # the store function's 900 s timeout, and a margin

OUTPUT_REFUSED = "output_refused"
OUTPUT_TOO_LARGE = "output_too_large"
OUTPUT_UNAVAILABLE = "output_unavailable"
INVALID_COMPLETION = "invalid_completion"


class StoreOutcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    ANNOUNCED = "announced"  # already final; only its event was still due
    ALREADY_DONE = "already_done"
    BUSY = "busy"  # another store run holds the job
    STALE = "stale"  # the message does not match the job's recorded completion
    UNKNOWN_JOB = "unknown_job"


@dataclass(frozen=True)
class StoredOutput:
    pointer: Pointer
    key: str
    source: str
    content_type: str
    size: int
    reused: bool


class _JobFailure(Exception):
    """A permanent outcome: the job ends FAILED with ``error``."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


class StoreWorker:
    def __init__(
        self,
        jobs: JobStore,
        *,
        inbox: Inbox,
        outputs: OutputBucket,
        media: MediaFetcher,
        fal: FalQueue,
        finaliser: Finaliser,
        limits: CopyLimits | None = None,
        lease: timedelta = DEFAULT_LEASE,
        payloads: FalRequestPayloads | None = None,
    ) -> None:
        self._jobs = jobs
        self._inbox = inbox
        self._outputs = outputs
        self._media = media
        self._fal = fal
        self._finaliser = finaliser
        self._limits = limits or CopyLimits(max_bytes=media.policy.max_bytes)
        self._lease = lease
        # Deletes fal's copy of a request's payloads (ADMIN key); None when no ADMIN key is set.
        self._payloads = payloads

    def handle(self, message: OutputsMessage, now: datetime, *, last_attempt: bool = False) -> StoreOutcome:
        """Store the job's outputs; on `last_attempt` (no retry follows) a download fault fails it."""
        job = self._jobs.get(message.job_id)
        if job is None:
            logger.warning("outputs message for a job we do not have", job_id=message.job_id)
            return StoreOutcome.UNKNOWN_JOB
        if job.completion_key != message.completion_key or job.request_id != message.request_id:
            logger.warning("outputs message does not match the job's completion", job_id=job.job_id)
            return StoreOutcome.STALE
        if job.is_final and job.event_published_at is not None:
            return StoreOutcome.ALREADY_DONE
        held = self._claim(job, now)
        if held is None:
            logger.info(
                "another store run holds the job; leaving it to that run (or to reconcile if it died)",
                job_id=job.job_id,
                held_until=job.store_lease_until,
            )
            return StoreOutcome.BUSY
        try:
            return self._finish(held, message, now, last_attempt=last_attempt)
        finally:
            self._release(held)

    def note_dead_lettered(self, job_id: str, reason: str, now: datetime) -> None:
        """The job's message went to the outputs DLQ: say so on the job, which waits in STORING."""
        self._jobs.add_trail(
            job_id,
            TrailEntry(
                at=isoformat(now),
                actor=ACTOR,
                action=OUTPUTS_DEAD_LETTERED,
                reason=f"{reason}; its message waits in the outputs DLQ (falflow dlq redrive outputs)",
            ),
        )

    # ----------------------------------------------------------------------------- lease

    def _claim(self, job: Job, now: datetime) -> Job | None:
        return self._jobs.take_store_lease(
            job.job_id, seen_until=job.store_lease_until, now=now, lease=self._lease
        )

    def _release(self, held: Job) -> None:
        """Let a retry start at once (best effort: the lease also runs out by itself)."""
        if held.store_lease_until is None:
            return
        try:
            self._jobs.release_store_lease(held.job_id, held_until=held.store_lease_until)
        except Exception:  # the run's own outcome or failure is what matters
            logger.exception("could not release the store lease", job_id=held.job_id)

    # ----------------------------------------------------------------------------- the work

    def _finish(
        self, job: Job, message: OutputsMessage, now: datetime, *, last_attempt: bool
    ) -> StoreOutcome:
        if job.is_final:
            self._finaliser.announce(job, now)
            return StoreOutcome.ANNOUNCED
        started = time.monotonic()
        try:
            payload = self._payload(job, message)
            stored = self._store_outputs_or_give_up(job, payload, last_attempt=last_attempt)
        except _JobFailure as failure:
            failed = self._finaliser.fail(job, failure.error, now=now, actor=ACTOR)
            self._finaliser.announce(failed or self._jobs.get(job.job_id) or job, now)
            return StoreOutcome.FAILED
        timings = self._timings(job, payload, stored, time.monotonic() - started, now)
        served_from = self._served_from(job)
        result_key = self._write_result(job, payload, stored, timings, served_from)
        done = self._finaliser.complete(
            job,
            outputs=[s.key for s in stored],
            result_key=result_key,
            timings=timings,
            now=now,
            served_from=served_from,
            payloads_deleted_at=self._delete_payloads(job, now),
        )
        self._finaliser.announce(done, now)
        return StoreOutcome.COMPLETED if done.state is JobState.COMPLETED else StoreOutcome.ANNOUNCED

    def _payload(self, job: Job, message: OutputsMessage) -> Any:
        try:
            delivery = FalDelivery.parse(self._inbox.get(message.completion_key))
        except InvalidDeliveryError as error:
            raise _JobFailure(JobError(type=INVALID_COMPLETION, message=str(error))) from None
        if delivery.failed:
            raise _JobFailure(delivery.job_error())
        if not delivery.needs_fetch:
            return delivery.payload
        return self._fetch_result(job, delivery)

    def _fetch_result(self, job: Job, delivery: FalDelivery) -> Any:
        """fal could not deliver the payload (``payload_error``): read it from the queue."""
        assert job.request_id is not None
        url = job.response_url
        if url is None:
            if job.model is None:
                raise _JobFailure(JobError(type=INVALID_COMPLETION, message="no result URL and no model"))
            url = self._fal.urls_for(job.model, job.request_id).response_url
        logger.info(
            "fetching the result fal could not deliver", job_id=job.job_id, reason=delivery.payload_error
        )
        try:
            return self._fal.result(url)
        except FalNotFoundError:
            raise _JobFailure(
                JobError(
                    type=RESULT_UNAVAILABLE,
                    message="fal no longer holds the result of this request (it expired or was deleted)",
                    detail={"payload_error": delivery.payload_error},
                )
            ) from None
        except FalError as error:
            if error.retryable:
                raise
            raise _JobFailure(
                JobError(
                    type=error.error_type or error_type_of({"detail": error.detail}) or "fal_error",
                    message=error.message,
                    detail=error.detail,
                )
            ) from None

    def _served_from(self, job: Job) -> str | None:
        """Where fal says it ran a job that allowed model fallbacks (the result's
        X-Fal-Served-From; one result read). A job that forbade them ran where it asked."""
        if not job.allow_fallbacks or job.response_url is None:
            return None
        try:
            return self._fal.served_from(job.response_url)
        except FalError as error:  # the outputs are ours already; say we could not tell
            logger.warning(
                "could not read which endpoint served the job", job_id=job.job_id, error=str(error)
            )
            return None

    def _delete_payloads(self, job: Job, now: datetime) -> str | None:
        """Delete fal's copy of the request once ours is stored, if the job asked; the time it was
        done, or None with the reason on the job's trail (the job still completes)."""
        if not job.delete_payloads or job.request_id is None:
            return None
        if self._payloads is None:
            reason = "fal's payloads were not deleted: no ADMIN key is configured (FalAdminKeySecretName)"
        else:
            try:
                deletion = self._payloads.delete_request_payloads(job.request_id, idempotency_key=job.job_id)
            except FalError as error:
                if error.status == 404:
                    return isoformat(now)  # deleted before (a retried run) or already gone
                reason = f"fal's payloads were not deleted: {error.message}"
            else:
                if not deletion.failures:
                    return isoformat(now)
                reason = (
                    f"fal could not delete {len(deletion.failures)} output file(s): {deletion.failures[0]}"
                )
        metrics.add_metric(name="PayloadDeletionsFailed", unit=MetricUnit.Count, value=1)
        logger.warning("fal's payloads not deleted", job_id=job.job_id, reason=reason)
        self._jobs.add_trail(
            job.job_id, TrailEntry(at=isoformat(now), actor="store", action="payloads_kept", reason=reason)
        )
        return None

    def _store_outputs_or_give_up(self, job: Job, payload: Any, *, last_attempt: bool) -> list[StoredOutput]:
        """A download fault is retried by SQS; on the last try it is the job's outcome instead."""
        try:
            return self._store_outputs(job, payload)
        except MediaTransientError as error:
            if not last_attempt:
                raise
            message = f"{error}; still failing on the last try"
            raise _JobFailure(JobError(type=OUTPUT_UNAVAILABLE, message=message)) from None

    def _store_outputs(self, job: Job, payload: Any) -> list[StoredOutput]:
        assert job.request_id is not None
        files = find_output_files(payload)
        refusals: list[dict[str, str]] = []
        try:
            names = output_names(files)
        except UnsafeNameError as error:
            refusals.append({"reason": str(error)})
            names = []
        for output in files:
            if output.url.startswith("data:"):
                continue
            try:
                self._media.check(output.url)
            except OutputRefusedError as refused:
                refusals.append({"path": output.path, "url": redact(output.url), "reason": refused.reason})
        if refusals:
            raise self._refused(job, refusals)

        prefix = job_output_prefix(job.job_id, job.output_prefix)
        stored = []
        for output, name in zip(files, names, strict=True):
            try:
                stored.append(self._copy(job.job_id, job.request_id, output, output_key(prefix, name)))
            except OutputRefusedError as refused:
                raise self._refused(
                    job, [{"path": output.path, "url": redact(refused.url), "reason": refused.reason}]
                ) from None
            except OutputTooLargeError as error:
                raise _JobFailure(JobError(type=OUTPUT_TOO_LARGE, message=str(error))) from None
            except OutputUnavailableError as error:
                raise _JobFailure(JobError(type=OUTPUT_UNAVAILABLE, message=str(error))) from None
        return stored

    def _refused(self, job: Job, refusals: list[dict[str, str]]) -> _JobFailure:
        metrics.add_metric(name="OutputsRefused", unit=MetricUnit.Count, value=len(refusals))
        logger.warning("output URLs or names refused", job_id=job.job_id, refused=refusals)
        message = f"{len(refusals)} output(s) refused: {refusals[0]['reason']}"
        return _JobFailure(JobError(type=OUTPUT_REFUSED, message=message, detail=refusals))

    def _copy(self, job_id: str, request_id: str, output: OutputFile, key: str) -> StoredOutput:
        fingerprint = hashlib.sha256(f"{request_id}\n{output.url}".encode()).hexdigest()[:32]
        source = "inline data" if output.url.startswith("data:") else redact(output.url)
        existing = self._outputs.head(key)
        if existing is not None and existing.metadata.get(SOURCE_METADATA) == fingerprint:
            content_type = output.content_type or "application/octet-stream"
            return StoredOutput(output.pointer, key, source, content_type, existing.size, reused=True)
        metadata = {SOURCE_METADATA: fingerprint, JOB_METADATA: job_id}
        guessed = mimetypes.guess_type(key)[0]
        if output.url.startswith("data:"):
            header, data = _data_url(output.url, self._limits.max_bytes)
            content_type = (
                safe_content_type(output.content_type, header, guessed) or "application/octet-stream"
            )
            self._outputs.put(key, data, content_type=content_type, metadata=metadata)
            return StoredOutput(output.pointer, key, source, content_type, len(data), reused=False)
        with self._media.open(output.url) as response:
            content_type = (
                safe_content_type(output.content_type, response.content_type, guessed)
                or "application/octet-stream"
            )
            size = copy_into(
                self._outputs,
                key,
                response.iter_bytes(),
                content_type=content_type,
                metadata=metadata,
                limits=self._limits,
                expected_size=response.content_length or output.file_size,
            )
        metrics.add_metric(name="OutputBytesStored", unit=MetricUnit.Bytes, value=size)
        return StoredOutput(output.pointer, key, source, content_type, size, reused=False)

    def _timings(
        self, job: Job, payload: Any, stored: list[StoredOutput], seconds: float, now: datetime
    ) -> dict[str, Any]:
        timings: dict[str, Any] = {
            "completion_recorded_at": job.state_times.get(JobState.STORING.value),
            "stored_at": isoformat(now),
            "store_seconds": round(seconds, 3),
            "output_bytes": sum(s.size for s in stored),
        }
        if isinstance(payload, dict) and isinstance(payload.get("timings"), dict):
            timings["fal"] = payload["timings"]
        return {k: v for k, v in timings.items() if v is not None}

    def _write_result(
        self,
        job: Job,
        payload: Any,
        stored: list[StoredOutput],
        timings: dict[str, Any],
        served_from: str | None,
    ) -> str:
        bucket = self._outputs.bucket
        rewritten = rewrite_urls(payload, {s.pointer: f"s3://{bucket}/{s.key}" for s in stored})
        document = {
            "job_id": job.job_id,
            "request_id": job.request_id,
            "model": job.model,
            "served_from": served_from,
            "bucket": bucket,
            "payload": rewritten,
            "outputs": [
                {
                    "key": s.key,
                    "path": "/" + "/".join(map(str, s.pointer)),
                    "source": s.source,
                    "content_type": s.content_type,
                    "size": s.size,
                }
                for s in stored
            ],
            "timings": timings,
            "metadata": job.metadata,
        }
        key = job_output_prefix(job.job_id, job.output_prefix) + RESULT_NAME
        body = json.dumps(document, indent=2, default=str).encode()
        self._outputs.put(key, body, content_type="application/json", metadata={JOB_METADATA: job.job_id})
        return key


def _data_url(url: str, max_bytes: int) -> tuple[str, bytes]:
    """Decode a ``data:`` URL (fal's sync mode inlines small files this way)."""
    header, _, data = url[len("data:") :].partition(",")
    if len(data) * 3 // 4 > max_bytes:
        raise OutputTooLargeError(f"inline output is over the {max_bytes}-byte cap")
    media_type = header.split(";", 1)[0]
    try:
        raw = base64.b64decode(data, validate=True) if header.endswith(";base64") else unquote_to_bytes(data)
    except (binascii.Error, ValueError):
        raise _JobFailure(
            JobError(type=INVALID_COMPLETION, message="an inline output is not valid base64")
        ) from None
    return media_type, raw
