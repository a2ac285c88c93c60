"""Streaming one download into the output bucket with bounded memory, whatever the file size: one PUT
for a file that fits in a part, else a multipart upload with at most ``concurrency`` parts in flight
(memory near ``(concurrency + 1) * part_size``); nothing is visible until it completes, a failure
aborts it. Why: docs/adr/0009-outputs-are-streamed-with-bounded-memory.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from falflow.store.media import OutputTooLargeError
from falflow.store.ports import MultipartUpload, OutputBucket

MIN_PART_SIZE = 5 * 2**20  # S3's smallest part (but the last)
MAX_PARTS = 10_000


@dataclass(frozen=True)
class CopyLimits:
    part_size: int = 8 * 2**20
    concurrency: int = 4
    max_bytes: int = 5 * 2**30

    def __post_init__(self) -> None:
        if self.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")

    def part_size_for(self, expected_size: int | None) -> int:
        """Grow parts for huge files so 10,000 parts still cover them."""
        if expected_size is None:
            expected_size = self.max_bytes
        needed = -(-expected_size // MAX_PARTS)
        return max(self.part_size, needed)


def copy_into(
    store: OutputBucket,
    key: str,
    chunks: Iterable[bytes],
    *,
    content_type: str,
    metadata: Mapping[str, str],
    limits: CopyLimits,
    expected_size: int | None = None,
) -> int:
    """Upload ``chunks`` as ``key``; return the number of bytes stored."""
    part_size = limits.part_size_for(expected_size)
    buffer = bytearray()
    iterator = iter(chunks)
    total = 0
    for chunk in iterator:
        total += len(chunk)
        if total > limits.max_bytes:
            raise OutputTooLargeError(f"{key} exceeds the {limits.max_bytes}-byte cap")
        buffer += chunk
        if len(buffer) > part_size:
            break
    else:
        store.put(key, bytes(buffer), content_type=content_type, metadata=metadata)
        return total

    upload = store.start_upload(key, content_type=content_type, metadata=metadata)
    try:
        with _PartSender(upload, limits.concurrency) as parts:

            def send_full_parts() -> None:
                while len(buffer) >= part_size:
                    with memoryview(buffer) as view:
                        part = bytes(view[:part_size])  # one copy, not a slice and then a copy
                    del buffer[:part_size]
                    parts.send(part)

            send_full_parts()
            for chunk in iterator:
                total += len(chunk)
                if total > limits.max_bytes:
                    raise OutputTooLargeError(f"{key} exceeds the {limits.max_bytes}-byte cap")
                buffer += chunk
                send_full_parts()
            if buffer:
                parts.send(bytes(buffer))
        upload.complete()
    except BaseException:
        upload.abort()
        raise
    return total


class _PartSender:
    """Uploads parts on ``concurrency`` threads; ``send`` blocks while that many are in flight,
    which is what bounds memory. Leaving the ``with`` block waits for every part and raises the
    first failure."""

    def __init__(self, upload: MultipartUpload, concurrency: int) -> None:
        self._upload = upload
        self._slots = threading.BoundedSemaphore(concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="part")
        self._pending: list[Future[None]] = []
        self._number = 0

    def __enter__(self) -> _PartSender:
        return self

    def send(self, part: bytes) -> None:
        self._number += 1
        self._slots.acquire()
        for future in self._pending:
            if future.done() and future.exception() is not None:
                self._slots.release()
                future.result()  # raises: stop reading the download at the first failed part
        self._pending.append(self._pool.submit(self._send, self._number, part))

    def _send(self, number: int, part: bytes) -> None:
        try:
            self._upload.upload_part(number, part)
        finally:
            self._slots.release()

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True)
        if exc_info[0] is None:
            for future in self._pending:
                future.result()
