"""The Platform API's account calls (``api.fal.ai/v1``) beyond models and usage, per fal's OpenAPI
(docs/fal-contract.md §4, §5): storage settings, file ACLs and signed URLs (``acl.py``), deleting a
request's payloads, and compute instances (list, create, get, delete; there is no start or stop).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from falflow_tools.emulator.acl import SIGNATURE_PARAMETER, Acl, FileKey, SignBody, StorageSettingsBody
from falflow_tools.emulator.auth import Principal
from falflow_tools.emulator.config import ComputeInstance, InstanceType, Sector
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.errors import platform_error
from falflow_tools.emulator.usage import paginate, parse_limit

Handler = Callable[[Request], Awaitable[Response]]


class _Rejected(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _NewInstance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instance_type: InstanceType
    ssh_key: str
    sector: Sector | None = None


def account_routes(emulator: FalEmulator) -> list[Route]:
    api = AccountApi(emulator)

    def route(path: str, handler: Handler, method: str) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except _Rejected as rejected:
                return rejected.response

        return Route(f"/api/v1{path}", endpoint, methods=[method])

    return [
        route("/storage/settings", api.get_settings, "GET"),
        route("/storage/settings", api.put_settings, "PUT"),
        route("/storage/files/acl", api.get_acl, "GET"),
        route("/storage/files/acl", api.put_acl, "PUT"),
        route("/storage/files/sign", api.sign, "POST"),
        route("/models/requests/{request_id}/payloads", api.delete_payloads, "DELETE"),
        route("/compute/instances", api.create_instance, "POST"),
        route("/compute/instances/{id}", api.get_instance, "GET"),
        route("/compute/instances/{id}", api.delete_instance, "DELETE"),
    ]


class AccountApi:
    def __init__(self, emulator: FalEmulator) -> None:
        self._emulator = emulator

    def _require(self, request: Request, *, admin: bool = False) -> Principal:
        principal = self._emulator.auth.identify(request.headers.get("authorization"))
        if principal.kind == "none":
            raise _Rejected(platform_error(401, "Missing API key: send 'Authorization: Key <FAL_KEY>'"))
        if principal.kind not in ("api", "admin"):
            raise _Rejected(platform_error(401, "Invalid API key"))
        if admin and principal.kind != "admin":
            raise _Rejected(platform_error(403, "This endpoint requires an ADMIN API key"))
        return principal

    @staticmethod
    async def _body[ModelT: BaseModel](request: Request, model: type[ModelT]) -> ModelT:
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"]) or "body"
            raise _Rejected(platform_error(400, f"{where}: {error['msg']}")) from None

    # ------------------------------------------------------------------ storage

    async def get_settings(self, request: Request) -> Response:
        self._require(request)
        return JSONResponse(self._emulator.storage.settings.model_dump())

    async def put_settings(self, request: Request) -> Response:
        self._require(request)
        saved = self._emulator.storage.save_settings(await self._body(request, StorageSettingsBody))
        return JSONResponse(saved.model_dump())

    def _file(self, request: Request) -> FileKey:
        """The CDN file named by ``?url=`` (no query of its own, as the OpenAPI requires)."""
        url = request.query_params.get("url")
        if not url:
            raise _Rejected(platform_error(400, "url is required"))
        if "?" in url:
            raise _Rejected(platform_error(400, "url must not contain query parameters"))
        key = self._emulator.file_key(url)
        if key is None or self._emulator.file(*key) is None:
            raise _Rejected(platform_error(404, "File not found"))
        return key

    async def get_acl(self, request: Request) -> Response:
        self._require(request)
        key = self._file(request)
        return JSONResponse(self._emulator.file_access(*key).acl.model_dump())

    async def put_acl(self, request: Request) -> Response:
        self._require(request)
        key = self._file(request)
        body = await self._body(request, Acl)
        self._emulator.file_access(*key)  # keep the file's expiry
        return JSONResponse(self._emulator.storage.set_acl(key, body).model_dump())

    async def sign(self, request: Request) -> Response:
        self._require(request)
        key = self._file(request)
        body = await self._body(request, SignBody)
        token = self._emulator.storage.sign(key, body.expiration_seconds)
        url = request.query_params["url"]
        return JSONResponse({"signed_url": f"{url}?{SIGNATURE_PARAMETER}={token}"})

    # ------------------------------------------------------------------ request payloads

    async def delete_payloads(self, request: Request) -> Response:
        """The stored input/output and the output CDN files go; inputs' CDN files stay."""
        self._require(request, admin=True)
        job = self._emulator.state.jobs.get(request.path_params["request_id"])
        if job is None or job.sync:
            raise _Rejected(platform_error(404, "Request not found"))
        results = [
            {"link": f"{self._emulator.urls.cdn_url}/files/{job.request_id}/{name}", "exception": None}
            for name in sorted(job.files)
        ]
        job.files = {}
        job.payloads_deleted = True
        return JSONResponse({"cdn_delete_results": results})

    # ------------------------------------------------------------------ compute instances

    def _compute(self, request: Request) -> None:
        self._require(request, admin=True)
        if not self._emulator.config.compute_permission:
            raise _Rejected(platform_error(403, "Compute instances are not enabled for this account"))

    def _instance(self, request: Request) -> ComputeInstance:
        self._compute(request)
        instance = self._emulator.compute.get(request.path_params["id"])
        if instance is None:
            raise _Rejected(platform_error(404, "Compute instance not found"))
        return instance

    async def create_instance(self, request: Request) -> Response:
        self._compute(request)
        body = await self._body(request, _NewInstance)
        if body.sector is not None and body.instance_type != "gpu_8x_h100_sxm5":
            raise _Rejected(platform_error(400, "sector is only available for gpu_8x_h100_sxm5"))
        idempotency_key = request.headers.get("idempotency-key")
        created = self._emulator.created_instances
        instance = created.get(idempotency_key) if idempotency_key else None
        if instance is None:
            instance = ComputeInstance(
                id=f"inst-{secrets.token_hex(6)}",
                instance_type=body.instance_type,
                sector=body.sector,
                status="provisioning",
                creator_user_nickname=self._emulator.config.user_id,
            )
            self._emulator.compute[instance.id] = instance
            if idempotency_key:
                created[idempotency_key] = instance
        return JSONResponse(_instance_json(instance), status_code=201)

    async def get_instance(self, request: Request) -> Response:
        return JSONResponse(_instance_json(self._instance(request)))

    async def delete_instance(self, request: Request) -> Response:
        instance = self._instance(request)
        del self._emulator.compute[instance.id]
        return Response(status_code=204)


def list_instances(emulator: FalEmulator, request: Request) -> dict[str, Any]:
    """``GET /compute/instances``: the account's instances, paginated."""
    page = paginate(
        [_instance_json(i) for i in emulator.compute.values()],
        parse_limit(request.query_params.get("limit"), 50, 100),
        request.query_params.get("cursor"),
    )
    return {"instances": page.items, **page.fields}


def _instance_json(instance: ComputeInstance) -> dict[str, Any]:
    return instance.model_dump(exclude_none=True)
