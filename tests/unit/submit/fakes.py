"""In-memory stand-ins for the submit path's ports: fal's queue and CDN, S3 input objects, the model
catalogue, the large-input archive, and a clock."""

from __future__ import annotations

import io
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from falflow.aws.s3 import S3ObjectRef
from falflow.catalogue import CatalogueStatus, owner_prefix
from falflow.fal import CancelOutcome, EndpointId, QueueStatus, QueueUrls, RequestHistoryItem, Submission
from falflow.fal.platform import RequestStatus, TimeBound
from falflow.fal.queue import OutputLifecycle, QueuePriority
from falflow.submit.objects import ObjectInfo, ObjectStream

FAL_QUEUE = "https://queue.fal.run"


@dataclass(frozen=True)
class SentSubmission:
    endpoint_id: str
    input: dict[str, Any]
    webhook_url: str | None
    priority: QueuePriority | None
    start_timeout: float | None
    request_id: str
    store_io: bool = True
    sent_at: str = "2026-09-01T12:00:00.000+00:00"
    lifecycle: OutputLifecycle | None = None
    allow_fallbacks: bool | None = None


Reply = BaseException | None


@dataclass
class FakeFalQueue:
    """Accepts every submit (recording it) unless the next scripted reply is an error.

    A reply is an exception to raise *without* queueing the job, ``None`` to accept it, or
    ``Lost(exc)`` to queue the job and then raise (a reply lost after fal took the request).
    """

    replies: list[Reply] = field(default_factory=list)
    # Raised on every submit to these endpoints (before anything is queued).
    failures: dict[str, BaseException] = field(default_factory=dict)
    delay_s: float = 0.0
    # Every submit waits here until `parties` submits are in flight at once (proves concurrency).
    barrier: threading.Barrier | None = None
    submitted: list[SentSubmission] = field(default_factory=list)  # what fal queued
    attempts: int = 0
    cancelled: list[str] = field(default_factory=list)
    # When fal received each submit (its request history's sent_at); the harness gives its clock.
    clock: Callable[[], datetime] = lambda: datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(
        self,
        endpoint_id: str | EndpointId,
        input: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        priority: QueuePriority | None = None,
        start_timeout: float | None = None,
        runner_hint: str | None = None,
        store_io: bool | None = None,
        max_queue_length: int | None = None,
        lifecycle: OutputLifecycle | None = None,
        allow_fallbacks: bool | None = None,
    ) -> Submission:
        if self.barrier is not None:
            self.barrier.wait()
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            self.attempts += 1
            if str(endpoint_id) in self.failures:
                raise self.failures[str(endpoint_id)]
            reply = self.replies.pop(0) if self.replies else None
            sent = SentSubmission(
                str(endpoint_id),
                dict(input),
                webhook_url,
                priority,
                start_timeout,
                f"req-{next(self._ids)}",
                store_io=store_io is not False,
                sent_at=self.clock().isoformat(),
                lifecycle=lifecycle,
                allow_fallbacks=allow_fallbacks,
            )
            if reply is not None and not isinstance(reply, Lost):
                raise reply
            self.submitted.append(sent)
        if isinstance(reply, Lost):
            raise reply.error
        urls = self.urls_for(sent.endpoint_id, sent.request_id)
        return Submission(
            request_id=sent.request_id,
            gateway_request_id=sent.request_id,
            status_url=urls.status_url,
            response_url=urls.response_url,
            cancel_url=urls.cancel_url,
            status="IN_QUEUE",
            queue_position=0,
        )

    def status(self, status_url: str, *, logs: bool = False) -> QueueStatus:
        raise NotImplementedError

    def result(self, response_url: str) -> dict[str, Any]:
        raise NotImplementedError

    def served_from(self, response_url: str) -> str | None:
        raise NotImplementedError

    def cancel(self, cancel_url: str) -> CancelOutcome:
        self.cancelled.append(cancel_url)
        return CancelOutcome.CANCELLATION_REQUESTED

    def urls_for(self, endpoint_id: str | EndpointId, request_id: str) -> QueueUrls:
        app = EndpointId.parse(str(endpoint_id)).app_path
        base = f"{FAL_QUEUE}/{app}/requests/{request_id}"
        return QueueUrls(status_url=f"{base}/status", response_url=base, cancel_url=f"{base}/cancel")


@dataclass
class FakeRequestHistory:
    """fal's request history over what `FakeFalQueue` queued: a request is listed once started
    (all are, unless in ``waiting``), with its input unless sent with X-Fal-Store-IO: 0."""

    fal: FakeFalQueue
    waiting: set[str] = field(default_factory=set)  # request ids still in fal's queue
    failure: BaseException | None = None
    lookups: list[dict[str, Any]] = field(default_factory=list)

    def iter_requests(
        self,
        endpoint_ids: Sequence[str],
        *,
        start: TimeBound | None = None,
        end: TimeBound | None = None,
        status: RequestStatus | None = None,
        request_id: str | None = None,
        payloads: bool = False,
        page_size: int | None = None,
    ) -> Iterator[RequestHistoryItem]:
        self.lookups.append({"endpoint_ids": list(endpoint_ids), "start": start, "payloads": payloads})
        if self.failure is not None:
            raise self.failure
        for sent in list(self.fal.submitted):
            if sent.endpoint_id in endpoint_ids and sent.request_id not in self.waiting:
                yield RequestHistoryItem(
                    request_id=sent.request_id,
                    endpoint_id=sent.endpoint_id,
                    started_at=sent.sent_at,
                    sent_at=sent.sent_at,
                    json_input=sent.input if payloads and sent.store_io else None,
                )


class Lost(Exception):
    """fal queued the job, then the client saw ``error`` instead of the reply."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class FakeObjects:
    """S3 input objects by (bucket, key, version); a ref without a version reads the latest."""

    objects: dict[tuple[str, str], list[tuple[str | None, bytes, str | None]]] = field(default_factory=dict)
    presigned: list[tuple[S3ObjectRef, int]] = field(default_factory=list)
    # Every object the submit path looked at (head, read, open or presign), in order.
    touched: list[S3ObjectRef] = field(default_factory=list)

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str | None = None,
        version_id: str | None = None,
    ) -> S3ObjectRef:
        self.objects.setdefault((bucket, key), []).append((version_id, data, content_type))
        return S3ObjectRef(bucket, key, version_id)

    def delete(self, bucket: str, key: str) -> None:
        self.objects.pop((bucket, key), None)

    def _find(self, ref: S3ObjectRef) -> tuple[bytes, str | None] | None:
        self.touched.append(ref)
        versions = self.objects.get((ref.bucket, ref.key), [])
        for version, data, content_type in reversed(versions):
            if ref.version_id in (None, version):
                return data, content_type
        return None

    def head(self, ref: S3ObjectRef) -> ObjectInfo | None:
        found = self._find(ref)
        return ObjectInfo(size=len(found[0]), content_type=found[1]) if found else None

    def read(self, ref: S3ObjectRef, *, max_bytes: int) -> bytes | None:
        found = self._find(ref)
        return found[0][: max_bytes + 1] if found else None

    def open(self, ref: S3ObjectRef) -> ObjectStream | None:
        found = self._find(ref)
        if found is None:
            return None
        return ObjectStream(body=io.BytesIO(found[0]), size=len(found[0]), content_type=found[1])

    def presign_get(self, ref: S3ObjectRef, *, expires_in: int) -> str:
        self.touched.append(ref)
        self.presigned.append((ref, expires_in))
        version = f"&versionId={ref.version_id}" if ref.version_id else ""
        return f"https://{ref.bucket}.s3.amazonaws.com/{ref.key}?X-Amz-Expires={expires_in}{version}"


@dataclass
class FakeStorage:
    uploads: list[tuple[bytes, str, str | None]] = field(default_factory=list)

    def upload(
        self,
        source: bytes | BinaryIO,
        *,
        content_type: str,
        file_name: str | None = None,
        size: int | None = None,
    ) -> str:
        data = source if isinstance(source, bytes) else source.read()
        self.uploads.append((data, content_type, file_name))
        return f"https://v3.fal.media/files/upload-{len(self.uploads)}/{file_name}"


@dataclass
class FakeCatalogue:
    models: dict[str, CatalogueStatus] = field(default_factory=dict)
    loaded: bool = True

    def status(self, endpoint_id: str) -> CatalogueStatus | None:
        return self.models.get(endpoint_id)

    def is_loaded(self) -> bool:
        return self.loaded

    def lists_owner_of(self, endpoint_id: str) -> bool:
        prefix = owner_prefix(endpoint_id)
        return prefix is not None and any(model.startswith(prefix) for model in self.models)


@dataclass
class FakeArchive:
    kept: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def keep(self, job_id: str, data: Mapping[str, Any]) -> str:
        self.kept[job_id] = data
        return f"s3://falflow-outputbucket/inputs/{job_id}/input.json"


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 9, 1, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
