"""Output files: real PNG, MP4 and WAV bytes, produced while they are streamed.

Sizes are known before a byte is produced (fal's outputs carry ``file_size`` and the CDN sends
Content-Length), and the big files are repeated filler blocks, so a multi-gigabyte video costs
one block of memory. Images are small real pictures, rendered once per size and colour.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

CHUNK_BYTES = 256 * 1024


class MediaFile(Protocol):
    """A file the CDN can serve: what it is called, its type and exact size, and its bytes."""

    @property
    def name(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def size(self) -> int: ...

    def chunks(self) -> Generator[bytes]: ...


def _repeat(block: bytes, total: int) -> Iterator[bytes]:
    """``total`` bytes made of ``block`` over and over, without ever joining them."""
    full, rest = divmod(total, len(block))
    for _ in range(full):
        yield block
    if rest:
        yield block[:rest]


# ---------------------------------------------------------------------------------------- PNG

_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 90, 60),
    (60, 150, 230),
    (90, 200, 120),
    (240, 190, 50),
    (170, 90, 220),
    (40, 180, 180),
    (220, 80, 150),
    (120, 120, 120),
)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@lru_cache(maxsize=32)
def render_png(width: int, height: int, colour: int) -> bytes:
    """A ``width`` x ``height`` RGB gradient. Every row after the first uses the PNG "Up" filter
    with zero deltas, so even a 4096-pixel square deflates to a few kilobytes in milliseconds."""
    red, green, blue = _PALETTE[colour % len(_PALETTE)]
    first_row = bytearray(b"\x00")  # filter type None
    for x in range(width):
        shade = 64 + (191 * x) // max(width - 1, 1)
        first_row += bytes(((red * shade) >> 8, (green * shade) >> 8, (blue * shade) >> 8))
    same_as_above = b"\x02" + bytes(3 * width)  # filter type Up, all deltas zero
    compressor = zlib.compressobj(6)
    idat = [compressor.compress(bytes(first_row))]
    idat.extend(compressor.compress(same_as_above) for _ in range(height - 1))
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", b"".join(idat)),
            _png_chunk(b"IEND", b""),
        ]
    )


def png_dimensions(head: bytes) -> tuple[int, int] | None:
    """Width and height from the first 24 bytes of a PNG; None when it is not one."""
    if len(head) < 24 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


@dataclass(frozen=True)
class PngImage:
    name: str
    width: int
    height: int
    colour: int
    content_type: str = "image/png"

    @property
    def data(self) -> bytes:
        return render_png(self.width, self.height, self.colour)

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Generator[bytes]:
        data = self.data
        for start in range(0, len(data), CHUNK_BYTES):
            yield data[start : start + CHUNK_BYTES]


# ---------------------------------------------------------------------------------------- MP4


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


_FTYP = _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2avc1mp41")
_MDAT_FILLER = bytes(range(256)) * (CHUNK_BYTES // 256)
_MOOV_BYTES = 8 + 8 + 100  # moov header + mvhd header + version-0 mvhd body


def _moov(duration_s: float) -> bytes:
    timescale = 1000
    identity_matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = (
        struct.pack(">IIIII", 0, 0, 0, timescale, round(duration_s * timescale))
        + struct.pack(">IH", 0x10000, 0x100)  # rate 1.0, volume 1.0
        + bytes(10)
        + identity_matrix
        + bytes(24)
        + struct.pack(">I", 2)  # next track id
    )
    moov = _box(b"moov", _box(b"mvhd", mvhd))
    assert len(moov) == _MOOV_BYTES
    return moov


@dataclass(frozen=True)
class Mp4Video:
    """A structurally valid ISO-BMFF file of exactly ``size`` bytes: ftyp, a padded mdat, moov."""

    name: str
    size: int
    duration_s: float
    content_type: str = "video/mp4"

    def __post_init__(self) -> None:
        if self.size < len(_FTYP) + 16 + _MOOV_BYTES:
            raise ValueError(f"an MP4 needs at least {len(_FTYP) + 16 + _MOOV_BYTES} bytes")

    def chunks(self) -> Generator[bytes]:
        mdat_bytes = self.size - len(_FTYP) - _MOOV_BYTES
        if mdat_bytes <= 0xFFFFFFFF:
            mdat_header = struct.pack(">I", mdat_bytes) + b"mdat"
        else:  # 64-bit "largesize" form for files over 4 GiB
            mdat_header = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", mdat_bytes)
        yield _FTYP + mdat_header
        yield from _repeat(_MDAT_FILLER, mdat_bytes - len(mdat_header))
        yield _moov(self.duration_s)


# ---------------------------------------------------------------------------------------- WAV

WAV_SAMPLE_RATE = 44_100
WAV_HEADER_BYTES = 44
# 441 Hz at 44.1 kHz repeats every 100 samples, so a block of whole periods loops seamlessly.
_SINE_PERIOD = struct.pack("<100h", *(round(12_000 * math.sin(2 * math.pi * i / 100)) for i in range(100)))
_WAV_FILLER = _SINE_PERIOD * (CHUNK_BYTES // len(_SINE_PERIOD))


def wav_size_for(seconds: float) -> int:
    """File size of ``seconds`` of 16-bit mono PCM at 44.1 kHz."""
    return WAV_HEADER_BYTES + 2 * round(seconds * WAV_SAMPLE_RATE)


@dataclass(frozen=True)
class WavAudio:
    """A RIFF/WAVE file of ``size`` bytes: 16-bit mono PCM, a 441 Hz tone."""

    name: str
    size: int
    content_type: str = "audio/wav"

    def __post_init__(self) -> None:
        if not WAV_HEADER_BYTES + 2 <= self.size <= 0xFFFFFFFF or self.size % 2:
            raise ValueError("a WAV file must be an even size between 46 bytes and 4 GiB")

    def chunks(self) -> Generator[bytes]:
        data_bytes = self.size - WAV_HEADER_BYTES
        fmt = struct.pack("<IHHIIHH", 16, 1, 1, WAV_SAMPLE_RATE, 2 * WAV_SAMPLE_RATE, 2, 16)
        yield (
            b"RIFF"
            + struct.pack("<I", self.size - 8)
            + b"WAVE"
            + b"fmt "
            + fmt
            + b"data"
            + struct.pack("<I", data_bytes)
        )
        yield from _repeat(_WAV_FILLER, data_bytes)
