"""Streaming copy: bounded parts in flight, nothing visible until complete, aborted on failure."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from falflow.store.copy import MIN_PART_SIZE, CopyLimits, copy_into
from falflow.store.media import OutputTooLargeError
from tests.fakes.completion import MemoryOutputBucket

PART = MIN_PART_SIZE


def chunks(total: int, size: int = 256 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield bytes([sent // size % 251]) * n
        sent += n


def test_a_small_file_is_one_put() -> None:
    store = MemoryOutputBucket()
    size = copy_into(
        store, "k", chunks(1000), content_type="image/png", metadata={"m": "1"}, limits=CopyLimits(PART)
    )
    assert size == 1000
    assert store.uploads == []
    assert store.objects["k"].content_type == "image/png"
    assert store.objects["k"].body == b"".join(chunks(1000))


def test_a_large_file_streams_in_parts_with_bounded_concurrency() -> None:
    store = MemoryOutputBucket()
    total = 7 * PART + 123
    limits = CopyLimits(part_size=PART, concurrency=2)
    size = copy_into(store, "big", chunks(total), content_type="video/mp4", metadata={}, limits=limits)
    assert size == total
    (upload,) = store.uploads
    assert upload.state == "completed"
    assert [len(upload.parts[n]) for n in sorted(upload.parts)] == [PART] * 7 + [123]
    assert store.objects["big"].body == b"".join(chunks(total))
    assert store.max_in_flight <= 2


def test_a_failed_part_aborts_and_leaves_nothing_visible() -> None:
    store = MemoryOutputBucket()
    store.fail_part = 3
    with pytest.raises(ConnectionError):
        copy_into(
            store, "big", chunks(6 * PART), content_type="video/mp4", metadata={}, limits=CopyLimits(PART)
        )
    assert store.uploads[0].state == "aborted"
    assert "big" not in store.objects


def test_a_broken_download_aborts_and_leaves_nothing_visible() -> None:
    def broken() -> Iterator[bytes]:
        yield from chunks(3 * PART)
        raise ConnectionResetError("cdn went away")

    store = MemoryOutputBucket()
    with pytest.raises(ConnectionResetError):
        copy_into(store, "big", broken(), content_type="video/mp4", metadata={}, limits=CopyLimits(PART))
    assert store.uploads[0].state == "aborted"
    assert store.objects == {}


def test_the_size_cap_stops_the_copy() -> None:
    store = MemoryOutputBucket()
    limits = CopyLimits(part_size=PART, max_bytes=2 * PART)
    with pytest.raises(OutputTooLargeError):
        copy_into(store, "big", chunks(3 * PART), content_type="video/mp4", metadata={}, limits=limits)
    assert store.objects == {}
    assert all(u.state == "aborted" for u in store.uploads)


def test_parts_grow_so_ten_thousand_cover_the_file() -> None:
    limits = CopyLimits(part_size=PART, max_bytes=200 * 2**30)
    assert limits.part_size_for(10 * 2**20) == PART
    assert limits.part_size_for(100 * 2**30) * 10_000 >= 100 * 2**30
