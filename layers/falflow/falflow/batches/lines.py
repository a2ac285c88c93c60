"""A batch manifest read as a stream (never whole in memory): its non-blank lines with their byte
offsets, the first line's batch defaults, and what a line names without validating it (its
``custom_id`` and model), which is all a batch's results need of a line.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

# A line becomes one intake message: it must leave room for the job id and the batch fields.
MAX_LINE_BYTES: Final = 200 * 1024
DEFAULTS_KEY: Final = "defaults"
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_STEM_CHARS = 60


@dataclass(frozen=True)
class RawLine:
    """One line of the file: its 1-based number, where it starts and where the next one does."""

    number: int
    start: int
    end: int
    text: bytes


def read_lines(chunks: Iterable[bytes], *, start: int = 0, first_number: int = 1) -> Iterator[RawLine]:
    """The non-blank lines of a byte stream that begins at offset `start` (where line `first_number`
    begins), each with its offsets. Of a line longer than MAX_LINE_BYTES only the first bytes are
    kept (it fails as too long): memory holds at most that and one chunk, whatever the file."""
    number, offset = first_number, start
    buffer = bytearray()
    dropped = 0  # bytes of the current line beyond what is kept of it
    for chunk in chunks:
        buffer += chunk
        position = 0
        while (cut := buffer.find(b"\n", position)) >= 0:
            length = cut - position + 1 + dropped
            kept = min(cut, position + MAX_LINE_BYTES + 1)  # an overlong line: its start is enough
            yield from _line(number, offset, length, buffer[position:kept])
            number, offset, dropped, position = number + 1, offset + length, 0, cut + 1
        del buffer[:position]
        excess = len(buffer) - (MAX_LINE_BYTES + 1)
        if excess > 0:
            del buffer[MAX_LINE_BYTES + 1 :]
            dropped += excess
    if buffer or dropped:
        yield from _line(number, offset, len(buffer) + dropped, buffer)


def _line(number: int, start: int, length: int, text: bytearray) -> Iterator[RawLine]:
    stripped = bytes(text).strip()
    if stripped:
        yield RawLine(number=number, start=start, end=start + length, text=stripped)


def is_defaults(line: RawLine) -> bool:
    """Whether `line` is a ``{"defaults": {...}}`` line (it counts as one only as the first)."""
    if not line.text.startswith(b"{") or b'"defaults"' not in line.text:
        return False
    data = _json_object(line.text)
    return data is not None and DEFAULTS_KEY in data and "custom_id" not in data


def line_names(line: RawLine, defaults: dict[str, Any]) -> tuple[str | None, str | None]:
    """The line's ``custom_id`` and model (the defaults' where it names none), if it says."""
    data = _json_object(line.text) or {}
    custom_id, model = data.get("custom_id"), data.get("model", defaults.get("model"))
    return (custom_id if isinstance(custom_id, str) else None, model if isinstance(model, str) else None)


def _json_object(text: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def batch_name(bucket: str, key: str, identity: str) -> str:
    """The name a manifest's batch goes by: the file's stem and a digest of the object version
    (``portraits-3fa2c1d9``), the same for every notification of one version."""
    stem = key.rsplit("/", 1)[-1].removesuffix(".jsonl")
    stem = _NAME_UNSAFE.sub("-", stem).strip("-._")[:_NAME_STEM_CHARS] or "batch"
    digest = hashlib.sha256(f"{bucket}\0{key}\0{identity}".encode()).hexdigest()[:8]
    return f"{stem}-{digest}"
