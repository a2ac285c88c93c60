"""Finding the output files in fal's payload, naming them safely, and rewriting the payload.

fal describes every file it produced as an object with a ``url`` (``images[]``, ``image``,
``video``, ``audio_file``, archives …), often with ``content_type``, ``file_name`` and
``file_size``. We take every such object, however deeply nested.
"""

from __future__ import annotations

import copy
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from falflow.completion.keys import RESULT_NAME

Pointer = tuple[str | int, ...]
MAX_DEPTH = 64
_MAX_NAME_CHARS = 120
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_MIME_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


class UnsafeNameError(ValueError):
    """A name from the payload tries to leave the job's prefix (``../``, a path, control chars)."""


@dataclass(frozen=True)
class OutputFile:
    """One file fal produced: where it sits in the payload and what fal says about it."""

    pointer: Pointer
    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None

    @property
    def path(self) -> str:
        """The JSON pointer of the object holding the ``url`` (for records and logs)."""
        return "/" + "/".join(str(p) for p in self.pointer)


def find_output_files(payload: Any) -> list[OutputFile]:
    found: list[OutputFile] = []
    _walk(payload, (), found)
    return found


def _walk(node: Any, pointer: Pointer, found: list[OutputFile]) -> None:
    if len(pointer) > MAX_DEPTH:
        raise ValueError("payload nests deeper than we follow")
    if isinstance(node, Mapping):
        url = node.get("url")
        if isinstance(url, str) and url:
            found.append(
                OutputFile(
                    pointer=pointer,
                    url=url,
                    content_type=_text(node.get("content_type")),
                    file_name=_text(node.get("file_name")),
                    file_size=node.get("file_size") if isinstance(node.get("file_size"), int) else None,
                )
            )
        for key, value in node.items():
            if key != "url":
                _walk(value, (*pointer, str(key)), found)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _walk(value, (*pointer, index), found)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def rewrite_urls(payload: Any, new_urls: Mapping[Pointer, str]) -> Any:
    """A copy of ``payload`` with the ``url`` at each pointer replaced."""
    rewritten = copy.deepcopy(payload)
    for pointer, url in new_urls.items():
        node = rewritten
        for part in pointer:
            node = node[part]
        node["url"] = url
    return rewritten


def checked_name(name: str) -> str:
    """A name from the payload, refused if it is a path or a dot segment, else made key-safe."""
    if _CONTROL_CHARS.search(name) or "/" in name or "\\" in name:
        raise UnsafeNameError(f"file name {name!r} is a path")
    if name.strip() in {".", ".."} or name.startswith(".."):
        raise UnsafeNameError(f"file name {name!r} is a relative path")
    safe = _UNSAFE_CHARS.sub("_", name).lstrip(".")
    if len(safe) > _MAX_NAME_CHARS:
        _, dot, extension = safe.rpartition(".")
        keep = extension if dot and len(extension) <= 10 else ""
        safe = safe[: _MAX_NAME_CHARS - len(keep) - 1].rstrip(".") + (f".{keep}" if keep else "")
    return safe


def url_file_name(url: str) -> str | None:
    """The last segment of the URL's path, decoded (so an encoded ``..%2F`` is seen as a path)."""
    path = urlsplit(url).path
    last = path.rsplit("/", 1)[-1]
    return unquote(last) or None


def safe_content_type(*candidates: str | None) -> str | None:
    """The first candidate that is a well-formed ``type/subtype`` (parameters kept)."""
    for candidate in candidates:
        if not candidate or _CONTROL_CHARS.search(candidate) or len(candidate) > 255:
            continue
        if _MIME_TYPE.fullmatch(candidate.split(";", 1)[0].strip()):
            return candidate.strip()
    return None


def output_names(files: list[OutputFile]) -> list[str]:
    """A distinct, key-safe file name per output, deterministic from the payload alone (a retry
    names every file the same). Raises ``UnsafeNameError`` for a name that tries to escape."""
    names: list[str] = []
    taken = {RESULT_NAME}
    for index, output in enumerate(files):
        from_url = None if output.url.startswith("data:") else url_file_name(output.url)
        candidate = output.file_name or from_url or ""
        name = checked_name(candidate) if candidate else ""
        if not name:
            extension = mimetypes.guess_extension((output.content_type or "").split(";")[0].strip()) or ""
            name = f"output-{index}{extension}"
        while name in taken:
            name = f"{index}-{name}"
        taken.add(name)
        names.append(name)
    return names
