"""Upload a file to fal's CDN (docs/fal-contract.md §4, the Python client's "fal_v3" path).

A short-lived CDN token from ``{rest_url}/storage/auth/token`` authorises uploads to its
``base_url``. Small files go in one POST; large ones go multipart, read and sent one part at a time
so memory stays bounded by the part size whatever the file size.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import datetime
from typing import BinaryIO

import httpx

from falflow.fal.errors import FalError
from falflow.fal.http import FalHttp, RetryPolicy
from falflow.fal.model import FalModel
from falflow.settings import FalSettings

MULTIPART_THRESHOLD = 100 * 1024 * 1024
PART_SIZE = 10 * 1024 * 1024
# Renew the token this long before fal says it expires, so it cannot lapse mid-upload.
TOKEN_RENEW_MARGIN_S = 60.0


class CdnToken(FalModel):
    token: str
    token_type: str
    base_url: str
    expires_at: datetime  # ISO 8601 from fal

    @property
    def authorization(self) -> str:
        return f"{self.token_type} {self.token}"


class FalStorageClient:
    def __init__(
        self,
        settings: FalSettings,
        api_key: Callable[[], str],
        http: httpx.Client | None = None,
        *,
        retry: RetryPolicy | None = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if part_size <= 0 or multipart_threshold < 0:
            raise ValueError("part_size must be > 0 and multipart_threshold >= 0")
        self._token_url = f"{settings.rest_url.rstrip('/')}/storage/auth/token"
        self._http = FalHttp(settings, api_key, http, retry)
        self._threshold = multipart_threshold
        self._part_size = part_size
        self._clock = clock
        self._token: CdnToken | None = None

    def upload(
        self,
        source: bytes | BinaryIO,
        *,
        content_type: str,
        file_name: str | None = None,
        size: int | None = None,
    ) -> str:
        """Upload and return the file's public URL.

        ``size`` (bytes left in the stream) picks single or multipart without reading ahead; when
        unknown and the stream is not seekable, a stream that ends within the first part goes in
        one POST and anything longer goes multipart.
        """
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        if size is None:
            size = _remaining(stream)
        if size is not None and size <= self._threshold:
            return self._upload_single(_read_part(stream, size), content_type, file_name)
        first = _read_part(stream, self._part_size)
        if size is None and len(first) < self._part_size:
            return self._upload_single(first, content_type, file_name)
        return self._upload_multipart(first, stream, content_type, file_name)

    def _upload_single(self, data: bytes, content_type: str, file_name: str | None) -> str:
        token = self._cdn_token()
        response = self._http.request(
            "POST",
            f"{token.base_url.rstrip('/')}/files/upload",
            # Resending creates at most an orphan copy on the CDN, never a wrong result.
            idempotent=True,
            authorized=False,
            headers=_file_headers(token, content_type, file_name),
            content=data,
        )
        return _access_url(response)

    def _upload_multipart(
        self, first: bytes, stream: BinaryIO, content_type: str, file_name: str | None
    ) -> str:
        token = self._cdn_token()
        created = self._http.request(
            "POST",
            f"{token.base_url.rstrip('/')}/files/upload/multipart",
            idempotent=True,
            authorized=False,
            headers=_file_headers(token, content_type, file_name),
        )
        access_url = _access_url(created)
        upload_id = _json_field(created, "uploadId")
        upload_base = f"{access_url.rstrip('/')}/multipart/{upload_id}"

        # Parts go one at a time (fal's client sends 10 in parallel) so memory stays O(part size).
        parts: list[dict[str, object]] = []
        part, number = first, 1
        while part:
            sent = self._http.request(
                "PUT",
                f"{upload_base}/{number}",
                idempotent=True,
                authorized=False,
                headers={
                    "Authorization": self._cdn_token().authorization,
                    "Content-Type": content_type,
                    # A compressed reply can lose the ETag that completing the upload needs.
                    "Accept-Encoding": "identity",
                },
                content=part,
            )
            etag = sent.headers.get("etag")
            if not etag:
                raise FalError(f"fal CDN returned no ETag for part {number}", status=sent.status_code)
            parts.append({"partNumber": number, "etag": etag})
            part, number = _read_part(stream, self._part_size), number + 1

        self._http.request(
            "POST",
            f"{upload_base}/complete",
            idempotent=True,
            authorized=False,
            headers={"Authorization": self._cdn_token().authorization},
            json={"parts": parts},
        )
        return access_url

    def _cdn_token(self) -> CdnToken:
        token = self._token
        if token is None or token.expires_at.timestamp() - TOKEN_RENEW_MARGIN_S <= self._clock():
            response = self._http.request(
                "POST",
                self._token_url,
                idempotent=True,
                params={"storage_type": "fal-cdn-v3"},
                json={},
            )
            token = self._token = CdnToken.model_validate(response.json())
        return token


def _file_headers(token: CdnToken, content_type: str, file_name: str | None) -> dict[str, str]:
    headers = {"Authorization": token.authorization, "Content-Type": content_type}
    if file_name:
        headers["X-Fal-File-Name"] = file_name
    return headers


def _access_url(response: httpx.Response) -> str:
    return _json_field(response, "access_url")


def _json_field(response: httpx.Response, name: str) -> str:
    body = response.json()
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise FalError(f"fal CDN reply has no {name!r}", status=response.status_code)
    return value


def _remaining(stream: BinaryIO) -> int | None:
    """Bytes left in a seekable stream, or None when that cannot be known without reading."""
    try:
        if not stream.seekable():
            return None
        here = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(here)
    except (OSError, AttributeError, ValueError):
        return None
    return end - here


def _read_part(stream: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes; short reads (sockets, botocore bodies) are not end of stream."""
    chunks: list[bytes] = []
    wanted = size
    while wanted > 0:
        chunk = stream.read(wanted)
        if not chunk:
            break
        chunks.append(chunk)
        wanted -= len(chunk)
    return b"".join(chunks)
