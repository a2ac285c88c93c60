"""In-memory adapters of the completion and store ports, with the semantics that matter (an object is
only visible once its upload completes), plus a scriptable fal queue; shared by the hand-off,
webhook, store and reconcile tests."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from falflow.completion.messages import OutputsMessage
from falflow.fal.errors import FalError
from falflow.fal.queue import CancelOutcome, QueueStatus, QueueUrls
from falflow.fal.webhook import JwksCache

QUEUE_BASE = "https://queue.fal.run"


class MemoryInbox:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.metadata: dict[str, Mapping[str, str]] = {}
        self.puts = 0

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> None:
        self.puts += 1
        self.objects[key] = body
        self.metadata[key] = dict(metadata)

    def get(self, key: str) -> bytes:
        return self.objects[key]


class MemoryOutputsQueue:
    def __init__(self, fail_sends: int = 0) -> None:
        self.messages: list[OutputsMessage] = []
        self.fail_sends = fail_sends

    def send(self, message: OutputsMessage) -> None:
        if self.fail_sends:
            self.fail_sends -= 1
            raise ConnectionError("SQS unavailable")
        self.messages.append(message)


@dataclass
class StoredBlob:
    body: bytes
    content_type: str
    metadata: Mapping[str, str]

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass
class MemoryUpload:
    store: MemoryOutputBucket
    key: str
    content_type: str
    metadata: Mapping[str, str]
    parts: dict[int, bytes] = field(default_factory=dict)
    state: str = "open"

    def upload_part(self, number: int, data: bytes) -> None:
        with self.store.lock:
            self.store.in_flight += 1
            self.store.max_in_flight = max(self.store.max_in_flight, self.store.in_flight)
        try:
            if self.store.fail_part == number:
                raise ConnectionError(f"part {number} failed")
            self.parts[number] = bytes(data)
        finally:
            with self.store.lock:
                self.store.in_flight -= 1

    def complete(self) -> None:
        assert self.state == "open"
        numbers = sorted(self.parts)
        assert numbers == list(range(1, len(numbers) + 1)), numbers
        self.state = "completed"
        self.store._write(
            self.key, b"".join(self.parts[n] for n in numbers), self.content_type, self.metadata
        )

    def abort(self) -> None:
        self.state = "aborted"


class MemoryOutputBucket:
    bucket = "outputs-bucket"

    def __init__(self) -> None:
        self.objects: dict[str, StoredBlob] = {}
        self.uploads: list[MemoryUpload] = []
        self.writes: list[str] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_part: int | None = None

    def _write(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str]) -> None:
        with self.lock:
            self.objects[key] = StoredBlob(body, content_type, dict(metadata))
            self.writes.append(key)

    def head(self, key: str) -> StoredBlob | None:
        return self.objects.get(key)

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str]) -> None:
        self._write(key, body, content_type, metadata)

    def start_upload(self, key: str, *, content_type: str, metadata: Mapping[str, str]) -> MemoryUpload:
        upload = MemoryUpload(self, key, content_type, metadata)
        self.uploads.append(upload)
        return upload


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        self.events.append((detail_type, dict(detail)))


class FakeFalQueue:
    """Answers status/result/cancel from dicts keyed by URL; a value that is an exception is raised."""

    def __init__(self) -> None:
        self.statuses: dict[str, QueueStatus | FalError] = {}
        self.results: dict[str, dict[str, Any] | FalError] = {}
        self.served: dict[str, str | FalError] = {}
        self.calls: list[tuple[str, str]] = []

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the completion path never submits")

    def urls_for(self, endpoint_id: Any, request_id: str) -> QueueUrls:
        app = "/".join(str(endpoint_id).split("/")[:2])
        base = f"{QUEUE_BASE}/{app}/requests/{request_id}"
        return QueueUrls(status_url=f"{base}/status", response_url=base, cancel_url=f"{base}/cancel")

    def status(self, status_url: str, *, logs: bool = False) -> QueueStatus:
        self.calls.append(("status", status_url))
        answer = self.statuses[status_url]
        if isinstance(answer, FalError):
            raise answer
        return answer

    def result(self, response_url: str) -> dict[str, Any]:
        self.calls.append(("result", response_url))
        answer = self.results[response_url]
        if isinstance(answer, FalError):
            raise answer
        return answer

    def served_from(self, response_url: str) -> str | None:
        """``served`` answers by URL; an exception there is raised."""
        self.calls.append(("served_from", response_url))
        answer = self.served.get(response_url)
        if isinstance(answer, FalError):
            raise answer
        return answer

    def cancel(self, cancel_url: str) -> CancelOutcome:
        self.calls.append(("cancel", cancel_url))
        return CancelOutcome.CANCELLATION_REQUESTED


class JwksServer:
    """A JWKS endpoint over httpx.MockTransport whose key set a test can swap (a rotation)."""

    url = "https://rest.fal.ai/.well-known/jwks.json"

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.fail = False

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        if self.fail:
            return httpx.Response(503)
        return httpx.Response(200, json=self.jwks)

    def cache(self, **kwargs: Any) -> JwksCache:
        return JwksCache([self.url], http=httpx.Client(transport=httpx.MockTransport(self._handle)), **kwargs)
