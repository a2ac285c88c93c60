from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from falflow.fal.errors import FalError
from falflow.fal.http import RetryPolicy
from falflow.fal.storage import MULTIPART_THRESHOLD, PART_SIZE, FalStorageClient
from falflow.settings import FalSettings
from tests.unit.fal.fal_fakes import API_KEY

CDN = "https://v3.fal.test"
FILE_URL = f"{CDN}/files/b/koala.mp4"
NOW = 1_780_000_000.0


class GeneratedStream(io.RawIOBase):
    """``size`` bytes produced on demand and never held whole; records what was asked of it.

    Not seekable, like an S3 or HTTP body, so the client cannot learn the size by seeking, and
    reads come back short, as they do from real network streams.
    """

    def __init__(self, size: int, max_read: int = 3 * 1024 * 1024 + 7) -> None:
        self.size, self.position, self.max_read = size, 0, max_read
        self.reads: list[int] = []
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            raise AssertionError("the client asked for the whole stream at once")
        self.reads.append(n)
        n = min(n, self.size - self.position, self.max_read)
        pattern = bytes((self.position + i) % 251 for i in range(251))
        chunk = (pattern * (n // 251 + 1))[:n]
        self.position += n
        self.digest.update(chunk)
        return chunk


class StreamingTransport(httpx.BaseTransport):
    """Like httpx.MockTransport, but leaves the request body to the handler to stream, as a
    real transport does; MockTransport's own request.read() would pin every body in memory."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self._handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._handler(request)


@dataclass
class FakeCdn:
    """fal's token endpoint and CDN; keeps only sizes and hashes of what was uploaded."""

    expires_at: str = "2026-06-01T00:00:00+00:00"
    etag: bool = True
    tokens_issued: int = 0
    calls: list[tuple[str, str]] = field(default_factory=list)
    headers: list[httpx.Headers] = field(default_factory=list)
    single: list[bytes] = field(default_factory=list)
    parts: dict[int, int] = field(default_factory=dict)
    parts_digest: Any = field(default_factory=hashlib.sha256)
    completed: list[dict[str, object]] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = b"".join(request.stream)  # type: ignore[arg-type]
        path = request.url.path
        self.calls.append((request.method, path))
        if body:  # sized uploads, never chunked: fal's CDN needs the length up front
            assert request.headers["Content-Length"] == str(len(body))
            assert "Transfer-Encoding" not in request.headers
        self.headers.append(request.headers)
        if path == "/storage/auth/token":
            assert request.url.host == "rest.fal.test"
            assert request.url.params["storage_type"] == "fal-cdn-v3"
            assert json.loads(body) == {}
            self.tokens_issued += 1
            return httpx.Response(
                200,
                json={
                    "token": f"tok-{self.tokens_issued}",
                    "token_type": "Bearer",
                    "base_url": CDN,
                    "expires_at": self.expires_at,
                },
            )
        if path == "/files/upload":
            self.single.append(body)
            return httpx.Response(200, json={"access_url": f"{CDN}/files/b/single.bin"})
        if path == "/files/upload/multipart":
            return httpx.Response(200, json={"access_url": FILE_URL, "uploadId": "up-1"})
        if path.startswith("/files/b/koala.mp4/multipart/up-1/") and request.method == "PUT":
            number = int(path.rsplit("/", 1)[1])
            self.parts[number] = len(body)
            self.parts_digest.update(body)
            return httpx.Response(200, headers={"ETag": f'"etag-{number}"'} if self.etag else {})
        if path == "/files/b/koala.mp4/multipart/up-1/complete":
            self.completed.append(json.loads(body))
            return httpx.Response(200, json={"access_url": FILE_URL})
        return httpx.Response(404, json={"detail": f"no route {path}"})


@pytest.fixture
def cdn() -> FakeCdn:
    return FakeCdn()


@pytest.fixture
def clock() -> list[float]:
    return [NOW]


@pytest.fixture
def storage_for(
    settings: FalSettings, retry: RetryPolicy, api_key: Callable[[], str], cdn: FakeCdn, clock: list[float]
) -> Callable[..., FalStorageClient]:
    def make(**kwargs: int) -> FalStorageClient:
        http = httpx.Client(transport=StreamingTransport(cdn.handle))
        return FalStorageClient(settings, api_key, http, retry=retry, clock=lambda: clock[0], **kwargs)

    return make


def test_small_upload_gets_a_token_then_posts_the_raw_bytes(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn
) -> None:
    url = storage_for().upload(b"\x89PNG...", content_type="image/png", file_name="cat.png")

    assert url == f"{CDN}/files/b/single.bin"
    assert cdn.calls == [("POST", "/storage/auth/token"), ("POST", "/files/upload")]
    token_headers, upload_headers = cdn.headers
    assert token_headers["Authorization"] == f"Key {API_KEY}"
    assert upload_headers["Authorization"] == "Bearer tok-1"
    assert upload_headers["Content-Type"] == "image/png"
    assert upload_headers["X-Fal-File-Name"] == "cat.png"
    assert cdn.single == [b"\x89PNG..."]


def test_file_name_header_is_optional(storage_for: Callable[..., FalStorageClient], cdn: FakeCdn) -> None:
    storage_for().upload(io.BytesIO(b"abc"), content_type="text/plain")

    assert "X-Fal-File-Name" not in cdn.headers[-1]
    assert cdn.single == [b"abc"]


def test_token_is_cached_until_shortly_before_it_expires(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn, clock: list[float]
) -> None:
    expires = NOW + 3600
    cdn.expires_at = datetime.fromtimestamp(expires, UTC).isoformat()
    storage = storage_for()

    storage.upload(b"1", content_type="text/plain")
    clock[0] = expires - 120
    storage.upload(b"2", content_type="text/plain")
    assert cdn.tokens_issued == 1

    clock[0] = expires - 30  # inside the renewal margin
    storage.upload(b"3", content_type="text/plain")
    assert cdn.tokens_issued == 2
    assert cdn.headers[-1]["Authorization"] == "Bearer tok-2"


def test_above_100_mb_uploads_go_multipart_in_10_mb_parts_read_one_at_a_time(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn
) -> None:
    size = MULTIPART_THRESHOLD + 5 * 1024 * 1024 + 3
    stream = GeneratedStream(size)

    url = storage_for().upload(stream, content_type="video/mp4", file_name="koala.mp4", size=size)

    assert url == FILE_URL
    assert sorted(cdn.parts) == list(range(1, 12))
    assert [cdn.parts[n] for n in range(1, 12)] == [PART_SIZE] * 10 + [5 * 1024 * 1024 + 3]
    assert cdn.parts_digest.hexdigest() == stream.digest.hexdigest()
    assert cdn.completed == [{"parts": [{"partNumber": n, "etag": f'"etag-{n}"'} for n in range(1, 12)]}]
    # Bounded memory: never more than one part asked of the stream at a time.
    assert max(stream.reads) <= PART_SIZE
    create_headers = cdn.headers[cdn.calls.index(("POST", "/files/upload/multipart"))]
    assert create_headers["Content-Type"] == "video/mp4"
    assert create_headers["X-Fal-File-Name"] == "koala.mp4"
    assert create_headers["Authorization"] == "Bearer tok-1"
    assert cdn.single == []


def test_multipart_memory_stays_near_one_part_whatever_the_file_size(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn
) -> None:
    part = 256 * 1024
    stream = GeneratedStream(40 * part + 1, max_read=part)
    storage = storage_for(multipart_threshold=part, part_size=part)

    tracemalloc.start()
    try:
        storage.upload(stream, content_type="application/octet-stream", size=stream.size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert len(cdn.parts) == 41
    # A few parts in flight at most (the one being sent, the next read, httpx's copy), never 40.
    assert peak < 6 * part


def test_a_seekable_stream_reports_its_own_remaining_size(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn
) -> None:
    data = io.BytesIO(b"h" * 10 + b"x" * 1000)
    data.seek(10)

    storage_for(multipart_threshold=999, part_size=300).upload(data, content_type="application/octet-stream")

    assert [cdn.parts[n] for n in sorted(cdn.parts)] == [300, 300, 300, 100]


def test_unknown_size_stream_shorter_than_a_part_goes_in_one_post(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn
) -> None:
    storage_for(multipart_threshold=100, part_size=512).upload(GeneratedStream(400), content_type="audio/wav")

    assert [len(b) for b in cdn.single] == [400]
    assert cdn.parts == {}


def test_unknown_size_stream_longer_than_a_part_goes_multipart(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn
) -> None:
    stream = GeneratedStream(1300)

    storage_for(multipart_threshold=10_000, part_size=512).upload(stream, content_type="audio/wav")

    assert [cdn.parts[n] for n in sorted(cdn.parts)] == [512, 512, 276]
    assert cdn.parts_digest.hexdigest() == stream.digest.hexdigest()
    assert len(cdn.completed[0]["parts"]) == 3  # type: ignore[arg-type]


def test_a_part_without_an_etag_fails_the_upload(
    storage_for: Callable[..., FalStorageClient], cdn: FakeCdn
) -> None:
    cdn.etag = False

    with pytest.raises(FalError, match="no ETag for part 1"):
        storage_for(multipart_threshold=10, part_size=64).upload(b"x" * 100, content_type="text/plain")

    assert cdn.completed == []


def test_invalid_sizes_are_refused(settings: FalSettings, api_key: Callable[[], str]) -> None:
    with pytest.raises(ValueError, match="part_size"):
        FalStorageClient(settings, api_key, httpx.Client(), part_size=0)
