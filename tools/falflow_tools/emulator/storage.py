"""Files uploaded to the emulator's CDN, kept on disk (never in memory) until reset or stop.

Covers fal's upload paths (docs/fal-contract.md §4): a single ``POST /files/upload``, the multipart flow
(initiate, ``PUT {access_url}/multipart/{uploadId}/{n}`` answering an ETag, complete with the
part list) and the presigned ``upload_url`` of ``POST /storage/upload/initiate``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path

from falflow_tools.emulator.media import CHUNK_BYTES

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(ValueError):
    """The client broke the upload protocol (unknown upload id, bad part list)."""


def safe_file_name(name: str | None, default: str = "upload.bin") -> str:
    """A file name that is one URL path segment (the name never becomes a disk path)."""
    cleaned = _UNSAFE_NAME_CHARS.sub("_", (name or "").rsplit("/", 1)[-1]).strip("._")
    return cleaned or default


@dataclass(frozen=True)
class StoredFile:
    """An uploaded file; serves as a ``MediaFile`` to the CDN."""

    file_id: str
    name: str
    content_type: str
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def chunks(self) -> Generator[bytes]:
        with self.path.open("rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                yield chunk


@dataclass
class _Multipart:
    file_id: str
    name: str
    content_type: str
    parts: dict[int, tuple[Path, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Presigned:
    file_id: str
    name: str
    content_type: str


class UploadStore:
    def __init__(self, root: Path | None) -> None:
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        if root is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="fal-emulator-")
            root = Path(self._temporary.name)
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._files: dict[tuple[str, str], StoredFile] = {}
        self._multipart: dict[str, _Multipart] = {}
        self._presigned: dict[str, _Presigned] = {}

    def get(self, file_id: str, name: str) -> StoredFile | None:
        return self._files.get((file_id, name))

    async def save(self, name: str, content_type: str, body: AsyncIterator[bytes]) -> StoredFile:
        file_id = secrets.token_hex(12)
        path = self.root / file_id
        await _write(path, body)
        return self._register(file_id, name, content_type, path)

    # --- multipart

    def begin_multipart(self, name: str, content_type: str) -> tuple[str, str]:
        file_id, upload_id = secrets.token_hex(12), secrets.token_hex(16)
        self._multipart[upload_id] = _Multipart(file_id, name, content_type)
        return file_id, upload_id

    def _upload(self, file_id: str, name: str, upload_id: str) -> _Multipart:
        upload = self._multipart.get(upload_id)
        if upload is None or (upload.file_id, upload.name) != (file_id, name):
            raise UploadError("unknown multipart upload")
        return upload

    async def save_part(
        self, file_id: str, name: str, upload_id: str, number: int, body: AsyncIterator[bytes]
    ) -> str:
        upload = self._upload(file_id, name, upload_id)
        if number < 1:
            raise UploadError("part numbers start at 1")
        path = self.root / f"{file_id}.part{number}"
        etag = f'"{await _write(path, body)}"'
        upload.parts[number] = (path, etag)
        return etag

    def complete(self, file_id: str, name: str, upload_id: str, parts: list[tuple[int, str]]) -> StoredFile:
        upload = self._upload(file_id, name, upload_id)
        numbers = [number for number, _ in parts]
        if not parts or numbers != sorted(set(numbers)):
            raise UploadError("parts must be listed once each, in ascending order")
        for number, etag in parts:
            stored = upload.parts.get(number)
            if stored is None or stored[1].strip('"') != etag.strip('"'):
                raise UploadError(f"part {number} was not uploaded with that etag")
        path = self.root / file_id
        with path.open("wb") as target:
            for number in numbers:
                with upload.parts[number][0].open("rb") as source:
                    shutil.copyfileobj(source, target, CHUNK_BYTES)
        for part_path, _ in upload.parts.values():
            part_path.unlink(missing_ok=True)
        del self._multipart[upload_id]
        return self._register(file_id, name, upload.content_type, path)

    # --- presigned single upload (storage/upload/initiate)

    def presign(self, name: str, content_type: str) -> tuple[str, str]:
        """Reserve a file; returns its id and the one-time token its upload URL carries."""
        file_id, token = secrets.token_hex(12), secrets.token_urlsafe(16)
        self._presigned[token] = _Presigned(file_id, name, content_type)
        return file_id, token

    async def save_presigned(
        self, file_id: str, name: str, token: str, body: AsyncIterator[bytes]
    ) -> StoredFile:
        reserved = self._presigned.get(token)
        if reserved is None or (reserved.file_id, reserved.name) != (file_id, name):
            raise UploadError("invalid or used upload token")
        del self._presigned[token]
        path = self.root / file_id
        await _write(path, body)
        return self._register(file_id, name, reserved.content_type, path)

    # --- lifecycle

    def _register(self, file_id: str, name: str, content_type: str, path: Path) -> StoredFile:
        stored = StoredFile(file_id=file_id, name=name, content_type=content_type, path=path)
        self._files[(file_id, name)] = stored
        return stored

    def clear(self) -> None:
        for child in self.root.iterdir():
            if child.is_file():
                child.unlink(missing_ok=True)
        self._files.clear()
        self._multipart.clear()
        self._presigned.clear()

    def close(self) -> None:
        self.clear()
        if self._temporary is not None:
            self._temporary.cleanup()


async def _write(path: Path, body: AsyncIterator[bytes]) -> str:
    """Stream ``body`` to ``path``; returns its MD5 hex digest (what S3-style ETags are)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("wb") as target:
        async for chunk in body:
            digest.update(chunk)
            target.write(chunk)
    return digest.hexdigest()
