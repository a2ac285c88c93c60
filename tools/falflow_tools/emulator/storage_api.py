"""The storage REST calls (``rest.fal.ai``), the CDN (``v3.fal.media``) and the JWKS.

Uploads follow the Python client: a token from ``POST /storage/auth/token``, then
``POST {base_url}/files/upload`` or the multipart flow, authorised with that token. CDN files
(uploads and model outputs) are streamed with their Content-Length, throttled when the run has a
slow CDN, and obey their ACL (``acl.py``): ``forbid`` answers 403, ``hide`` and an expired file
404, unless the URL carries a valid signature.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from falflow_tools.emulator.acl import SIGNATURE_PARAMETER
from falflow_tools.emulator.auth import CDN_TOKEN_TYPE
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.errors import account_locked, fal_error, invalid_body, unauthorized
from falflow_tools.emulator.media import MediaFile
from falflow_tools.emulator.state import utc_iso
from falflow_tools.emulator.storage import StoredFile, UploadError, safe_file_name

DEFAULT_CONTENT_TYPE = "application/octet-stream"


class _InitiateBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    file_name: str | None = None
    content_type: str = DEFAULT_CONTENT_TYPE


class _Part(BaseModel):
    partNumber: int = Field(ge=1)  # fal's wire name
    etag: str


class _CompleteBody(BaseModel):
    parts: list[_Part]


async def stream_media(media: MediaFile, bytes_per_s: int | None) -> AsyncIterator[bytes]:
    """The file's bytes; with a throttle, in small pieces paced to ``bytes_per_s``."""
    if not bytes_per_s:
        for chunk in media.chunks():
            yield chunk
        return
    piece = max(1024, bytes_per_s // 10)
    for chunk in media.chunks():
        for start in range(0, len(chunk), piece):
            part = chunk[start : start + piece]
            yield part
            await asyncio.sleep(len(part) / bytes_per_s)


def storage_routes(emulator: FalEmulator) -> list[Route]:
    """The storage REST, CDN and JWKS routes, keeping files on ``emulator``."""
    api = StorageApi(emulator)
    files = "/cdn/files/{file_id}/{name}"
    multipart = files + "/multipart/{upload_id}"
    return [
        Route("/rest/.well-known/jwks.json", api.jwks, methods=["GET"]),
        Route("/rest/storage/auth/token", api.token, methods=["POST"]),
        Route("/rest/storage/upload/initiate", api.initiate, methods=["POST"]),
        Route("/cdn/files/upload", api.upload, methods=["POST"]),
        Route("/cdn/files/upload/multipart", api.begin_multipart, methods=["POST"]),
        Route(multipart + "/complete", api.complete_multipart, methods=["POST"]),
        Route(multipart + "/{part:int}", api.upload_part, methods=["PUT"]),
        Route(files, api.download, methods=["GET"]),
        Route(files, api.presigned_upload, methods=["PUT"]),
    ]


class StorageApi:
    def __init__(self, emulator: FalEmulator) -> None:
        self._emulator = emulator

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse(self._emulator.keys.jwks(), headers={"Cache-Control": "public, max-age=3600"})

    # ------------------------------------------------------------------ rest.fal.ai

    def _locked(self) -> Response | None:
        """A locked account may start no upload (docs/fal-contract.md §6); downloads still work."""
        reason = self._emulator.account.lock_reason
        return None if reason is None else account_locked(reason)

    async def token(self, request: Request) -> Response:
        principal = self._emulator.auth.identify(request.headers.get("authorization"))
        if not principal.is_key:
            return unauthorized(principal)
        if (locked := self._locked()) is not None:
            return locked
        token, expires_at = self._emulator.auth.issue_cdn_token()
        return JSONResponse(
            {
                "token": token,
                "token_type": CDN_TOKEN_TYPE,
                "base_url": self._emulator.urls.cdn_url,
                "expires_at": utc_iso(expires_at),
            }
        )

    async def initiate(self, request: Request) -> Response:
        principal = self._emulator.auth.identify(request.headers.get("authorization"))
        if not principal.is_key:
            return unauthorized(principal)
        if (locked := self._locked()) is not None:
            return locked
        try:
            body = _InitiateBody.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return invalid_body(exc)
        name = safe_file_name(body.file_name)
        file_id, token = self._emulator.uploads.presign(name, body.content_type)
        file_url = self._file_url(file_id, name)
        return JSONResponse({"upload_url": f"{file_url}?upload_token={token}", "file_url": file_url})

    # ------------------------------------------------------------------ v3.fal.media uploads

    def _refused(self, request: Request) -> Response | None:
        """Why a CDN upload call is refused: a bad token, or a locked account; None if it is not."""
        principal = self._emulator.auth.identify(request.headers.get("authorization"))
        if principal.kind == "cdn_token" or principal.is_key:
            return self._locked()
        return fal_error(401, "Invalid or expired upload token")

    def _file_url(self, file_id: str, name: str) -> str:
        return f"{self._emulator.urls.cdn_url}/files/{file_id}/{name}"

    def _access_url(self, stored: StoredFile) -> str:
        return self._file_url(stored.file_id, stored.name)

    @staticmethod
    def _name_and_type(request: Request) -> tuple[str, str]:
        name = safe_file_name(request.headers.get("x-fal-file-name"))
        return name, request.headers.get("content-type", DEFAULT_CONTENT_TYPE)

    async def upload(self, request: Request) -> Response:
        if (denied := self._refused(request)) is not None:
            return denied
        name, content_type = self._name_and_type(request)
        stored = await self._emulator.uploads.save(name, content_type, request.stream())
        return JSONResponse({"access_url": self._access_url(stored)})

    async def begin_multipart(self, request: Request) -> Response:
        if (denied := self._refused(request)) is not None:
            return denied
        name, content_type = self._name_and_type(request)
        file_id, upload_id = self._emulator.uploads.begin_multipart(name, content_type)
        return JSONResponse({"access_url": self._file_url(file_id, name), "uploadId": upload_id})

    async def upload_part(self, request: Request) -> Response:
        if (denied := self._refused(request)) is not None:
            return denied
        params: dict[str, Any] = request.path_params
        try:
            etag = await self._emulator.uploads.save_part(
                params["file_id"], params["name"], params["upload_id"], params["part"], request.stream()
            )
        except UploadError as exc:
            return fal_error(404, str(exc))
        return JSONResponse({"partNumber": params["part"], "etag": etag}, headers={"ETag": etag})

    async def complete_multipart(self, request: Request) -> Response:
        if (denied := self._refused(request)) is not None:
            return denied
        params = request.path_params
        try:
            body = _CompleteBody.model_validate_json(await request.body())
            parts = [(part.partNumber, part.etag) for part in body.parts]
            stored = await asyncio.to_thread(
                self._emulator.uploads.complete, params["file_id"], params["name"], params["upload_id"], parts
            )
        except ValidationError as exc:
            return invalid_body(exc)
        except UploadError as exc:
            return fal_error(400, str(exc))
        return JSONResponse({"access_url": self._access_url(stored)})

    async def presigned_upload(self, request: Request) -> Response:
        params = request.path_params
        try:
            await self._emulator.uploads.save_presigned(
                params["file_id"],
                params["name"],
                request.query_params.get("upload_token", ""),
                request.stream(),
            )
        except UploadError as exc:
            return fal_error(403, str(exc))
        return Response(status_code=200)

    # ------------------------------------------------------------------ downloads

    async def download(self, request: Request) -> Response:
        file_id, name = request.path_params["file_id"], request.path_params["name"]
        media = self._emulator.file(file_id, name)
        if media is None:
            return fal_error(404, "File not found")
        self._emulator.file_access(file_id, name)  # a job's output takes its request's ACL
        signature = request.query_params.get(SIGNATURE_PARAMETER)
        decision = self._emulator.storage.decide((file_id, name), signature, time.time())
        if decision == "forbid":
            return fal_error(403, "Access to this file is forbidden")
        if decision != "allow":  # hidden or expired: as if it did not exist
            return fal_error(404, "File not found")
        size = await asyncio.to_thread(lambda: media.size)  # a first PNG render is CPU work
        return StreamingResponse(
            stream_media(media, self._emulator.faults.config.cdn_bytes_per_s),
            media_type=media.content_type,
            headers={"Content-Length": str(size), "Cache-Control": "public, max-age=604800"},
        )
