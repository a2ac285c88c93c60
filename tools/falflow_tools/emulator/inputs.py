"""Downloading the input URLs a request names, as fal's runners do before running a model.

A runner needs nothing but the URL (no headers, no cookies): public URLs, presigned S3 URLs and
``data:`` URIs work; anything that cannot be downloaded fails the request with a 422
``file_download_error``, never the emulator. Files on the emulator's own CDN are read in place.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Callable

import httpx

from falflow_tools.emulator.catalogue import FetchedInput, ModelError, model_error
from falflow_tools.emulator.media import MediaFile, png_dimensions

_HEAD_BYTES = 64  # enough to read an image header


def _download_failed(field_name: str, url: str, reason: str) -> ModelError:
    shown = url if not url.startswith("data:") else url[:32] + "..."
    return model_error(
        field_name,
        "file_download_error",
        f"Failed to download the file from {shown}: {reason}",
    )


def _head(media: MediaFile) -> bytes:
    with contextlib.closing(media.chunks()) as chunks:  # closes an upload's file at once
        head = b""
        for chunk in chunks:
            head += chunk[: _HEAD_BYTES - len(head)]
            if len(head) >= _HEAD_BYTES:
                break
        return head


class InputFetcher:
    def __init__(self, local_file: Callable[[str], MediaFile | None], timeout_s: float) -> None:
        self._local_file = local_file
        self._timeout = httpx.Timeout(timeout_s)
        self._client: httpx.AsyncClient | None = None

    def start(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def fetch(self, field_name: str, url: str) -> FetchedInput:
        if url.startswith("data:"):
            return self._decode_data_uri(field_name, url)
        local = self._local_file(url)
        if local is not None:
            dimensions = png_dimensions(_head(local))
            return FetchedInput(
                url=url, size=local.size, content_type=local.content_type, dimensions=dimensions
            )
        if not url.startswith(("http://", "https://")):
            raise _download_failed(field_name, url, "unsupported URL scheme")
        assert self._client is not None, "the emulator is not serving"
        try:
            async with self._client.stream(
                "GET", url, timeout=self._timeout, follow_redirects=True
            ) as response:
                if response.status_code >= 300:
                    raise _download_failed(field_name, url, f"HTTP {response.status_code}")
                head = b""
                size = 0
                async for chunk in response.aiter_bytes():
                    if len(head) < _HEAD_BYTES:
                        head += chunk[: _HEAD_BYTES - len(head)]
                    size += len(chunk)
                content_type = response.headers.get("content-type")
        except httpx.HTTPError as exc:
            raise _download_failed(field_name, url, type(exc).__name__) from exc
        return FetchedInput(url=url, size=size, content_type=content_type, dimensions=png_dimensions(head))

    @staticmethod
    def _decode_data_uri(field_name: str, url: str) -> FetchedInput:
        header, _, data = url[len("data:") :].partition(",")
        media_type, _, encoding = header.partition(";")
        try:
            raw = base64.b64decode(data, validate=True) if encoding == "base64" else data.encode()
        except binascii.Error as exc:
            raise _download_failed(field_name, url, "invalid base64 data") from exc
        return FetchedInput(
            url=url, size=len(raw), content_type=media_type or None, dimensions=png_dimensions(raw)
        )
