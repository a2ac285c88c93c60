"""Outputs are real files (PNG, MP4, WAV), streamed with exact sizes, never held whole in memory."""

from __future__ import annotations

import hashlib
import struct
import time
import tracemalloc
import zlib
from typing import Any

import httpx

from falflow_tools.emulator import RunningEmulator
from falflow_tools.emulator.media import Mp4Video
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.emulator.helpers import key_client, run_to_completion

KLING = "fal-ai/kling-video/v2/master/text-to-video"


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        offset += 12 + length
    return chunks


def iso_boxes(head: bytes, total: int) -> list[tuple[bytes, int, int]]:
    """Top-level (type, offset, size) of an ISO-BMFF file, reading sizes from ``head`` only where
    needed: every box header must lie in ``head`` or be the last box (``head`` is the whole file
    for small files)."""
    boxes, offset = [], 0
    while offset < total:
        size, kind = struct.unpack(">I4s", head[offset : offset + 8])
        if size == 1:
            (size,) = struct.unpack(">Q", head[offset + 8 : offset + 16])
        assert size >= 8
        boxes.append((kind, offset, size))
        offset += size
    assert offset == total
    return boxes


def mvhd_duration_s(moov: bytes) -> float:
    assert moov[4:8] == b"moov"
    assert moov[12:16] == b"mvhd"
    timescale, duration = struct.unpack(">II", moov[28:36])
    return float(duration / timescale)


def test_images_are_valid_pngs_of_the_announced_size(fal: RunningEmulator, client: httpx.Client) -> None:
    _, result = run_to_completion(client, fal, "fal-ai/flux/dev", {"prompt": "x", "image_size": "square"})
    (image,) = result.json()["images"]
    response = client.get(image["url"])

    assert response.headers["content-type"] == "image/png"
    assert int(response.headers["content-length"]) == len(response.content)
    chunks = png_chunks(response.content)
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[0][1][:10])
    assert (width, height, depth, colour_type) == (image["width"], image["height"], 8, 2) == (512, 512, 8, 2)
    pixels = zlib.decompress(chunks[1][1])
    assert len(pixels) == height * (1 + 3 * width)
    assert {pixels[row * (1 + 3 * width)] for row in range(height)} <= {0, 1, 2, 3, 4}  # PNG filter types


def test_videos_are_iso_bmff_files_of_the_announced_size(fal: RunningEmulator, client: httpx.Client) -> None:
    _, result = run_to_completion(client, fal, KLING, {"prompt": "x", "duration": "10"})
    video = result.json()["video"]
    response = client.get(video["url"])

    assert video["content_type"] == response.headers["content-type"] == "video/mp4"
    assert video["file_size"] == int(response.headers["content-length"]) == len(response.content)
    boxes = iso_boxes(response.content, len(response.content))
    assert [kind for kind, _, _ in boxes] == [b"ftyp", b"mdat", b"moov"]
    assert response.content[8:12] == b"isom"
    _, moov_at, _ = boxes[2]
    assert mvhd_duration_s(response.content[moov_at:]) == 10.0


def test_audio_is_pcm_wav_of_the_requested_duration(fal: RunningEmulator, client: httpx.Client) -> None:
    _, result = run_to_completion(client, fal, "fal-ai/stable-audio", {"prompt": "rain", "seconds_total": 3})
    audio = result.json()["audio_file"]
    data = client.get(audio["url"]).content

    assert audio["content_type"] == "audio/wav"
    assert audio["file_size"] == len(data) == 44 + 3 * 44_100 * 2
    riff, riff_size, wave, fmt, fmt_size = struct.unpack("<4sI4s4sI", data[:20])
    assert (riff, riff_size, wave, fmt, fmt_size) == (b"RIFF", len(data) - 8, b"WAVE", b"fmt ", 16)
    audio_format, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", data[20:36])
    assert (audio_format, channels, rate, byte_rate, align, bits) == (1, 1, 44_100, 88_200, 2, 16)
    assert struct.unpack("<4sI", data[36:44]) == (b"data", len(data) - 44)
    samples = struct.unpack("<100h", data[44:244])
    assert max(samples) > 10_000
    assert min(samples) < -10_000  # a tone, not silence


def test_a_200_mb_video_streams_with_bounded_memory(fal_emulator_factory: EmulatorFactory) -> None:
    size = 200 * 2**20
    fal = fal_emulator_factory(video_bytes=size)
    with key_client(fal, timeout=60) as client:
        _, result = run_to_completion(client, fal, KLING, {"prompt": "x"})
        video = result.json()["video"]
        assert video["file_size"] == size

        tracemalloc.start()
        try:
            received, head, tail = 0, b"", b""
            with client.stream("GET", video["url"]) as response:
                assert int(response.headers["content-length"]) == size
                for chunk in response.iter_raw():
                    if len(head) < 64:
                        head += chunk[:64]
                    tail = (tail + chunk)[-256:]
                    received += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert received == size
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming 200 MiB"
    mdat_size, kind = struct.unpack(">I4s", head[32:40])
    assert (head[4:8], kind) == (b"ftyp", b"mdat")
    assert 32 + mdat_size + 116 == size
    assert mvhd_duration_s(tail[-116:]) == 5.0


def test_videos_over_4_gib_use_a_64_bit_mdat() -> None:
    size = 5 * 2**30
    chunks = Mp4Video(name="big.mp4", size=size, duration_s=5).chunks()
    head = next(chunks)
    total = len(head) + sum(len(chunk) for chunk in chunks)

    assert total == size
    assert struct.unpack(">I4sQ", head[32:48]) == (1, b"mdat", size - 32 - 116)


def test_slow_cdn_throttles_downloads(fal: RunningEmulator, client: httpx.Client) -> None:
    _, result = run_to_completion(client, fal, "fal-ai/stable-audio", {"prompt": "x", "seconds_total": 1})
    url: Any = result.json()["audio_file"]["url"]
    fal.control.set_faults(cdn_bytes_per_s=200_000)

    started = time.monotonic()
    data = client.get(url).content
    elapsed = time.monotonic() - started

    assert len(data) == 44 + 88_200
    assert elapsed >= 0.4


def test_unknown_files_are_not_found(fal: RunningEmulator, client: httpx.Client) -> None:
    assert client.get(f"{fal.urls.cdn_url}/files/nope/image-0.png").status_code == 404


def test_the_served_files_record_matches_the_bytes_the_cdn_serves(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    queued, result = run_to_completion(client, fal, "fal-ai/flux/dev", {"prompt": "x", "num_images": 2})
    served = {f.name: f for f in fal.control.served_files() if f.request_id == queued["request_id"]}

    images = result.json()["images"]
    assert len(served) == len(images) == 2
    for image in images:
        data = client.get(image["url"]).content
        record = served[image["url"].rsplit("/", 1)[-1]]
        assert (record.size, record.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert record.content_type == "image/png"
