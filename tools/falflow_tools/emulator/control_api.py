"""``/_emulator``: inspection and control of a run (not part of fal)."""

from __future__ import annotations

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from falflow_tools.emulator.account import ADMIN_LOCK
from falflow_tools.emulator.config import FaultConfig
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.errors import invalid_body
from falflow_tools.emulator.state import JobView, RequestRecord, ServedFile, WebhookAttempt

_REQUESTS = TypeAdapter(list[RequestRecord])
_JOBS = TypeAdapter(list[JobView])
_WEBHOOKS = TypeAdapter(list[WebhookAttempt])
_FILES = TypeAdapter(list[ServedFile])


class RotateKey(BaseModel):
    keep_previous: bool = True


class LockAccount(BaseModel):
    reason: str = Field(default=ADMIN_LOCK, min_length=1)


class SetBalance(BaseModel):
    balance_usd: float


def control_routes(emulator: FalEmulator) -> list[Route]:
    """The ``/_emulator`` routes, inspecting and controlling ``emulator``."""
    api = ControlApi(emulator)
    return [
        Route("/_emulator/requests", api.requests, methods=["GET"]),
        Route("/_emulator/jobs", api.jobs, methods=["GET"]),
        Route("/_emulator/webhooks", api.webhooks, methods=["GET"]),
        Route("/_emulator/files", api.files, methods=["GET"]),
        Route("/_emulator/stats", api.stats, methods=["GET"]),
        Route("/_emulator/faults", api.get_faults, methods=["GET"]),
        Route("/_emulator/faults", api.set_faults, methods=["POST"]),
        Route("/_emulator/reset", api.reset, methods=["POST"]),
        Route("/_emulator/rotate-key", api.rotate_key, methods=["POST"]),
        Route("/_emulator/account", api.account, methods=["GET"]),
        Route("/_emulator/account/lock", api.lock_account, methods=["POST"]),
        Route("/_emulator/account/unlock", api.unlock_account, methods=["POST"]),
        Route("/_emulator/account/balance", api.set_balance, methods=["POST"]),
    ]


class ControlApi:
    def __init__(self, emulator: FalEmulator) -> None:
        self._emulator = emulator

    async def requests(self, _request: Request) -> Response:
        return Response(
            _REQUESTS.dump_json(list(self._emulator.state.requests)), media_type="application/json"
        )

    async def jobs(self, _request: Request) -> Response:
        return Response(_JOBS.dump_json(self._emulator.state.job_views()), media_type="application/json")

    async def webhooks(self, _request: Request) -> Response:
        return Response(
            _WEBHOOKS.dump_json(self._emulator.state.webhook_attempts), media_type="application/json"
        )

    async def files(self, _request: Request) -> Response:
        return Response(_FILES.dump_json(self._emulator.state.served_files()), media_type="application/json")

    async def stats(self, _request: Request) -> Response:
        return JSONResponse(self._emulator.stats().model_dump())

    async def get_faults(self, _request: Request) -> Response:
        return JSONResponse(self._emulator.faults.config.model_dump())

    async def set_faults(self, request: Request) -> Response:
        try:
            faults = FaultConfig.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return invalid_body(exc)
        self._emulator.faults.configure(faults)
        return JSONResponse(faults.model_dump())

    async def reset(self, _request: Request) -> Response:
        await self._emulator.reset()
        return JSONResponse({"reset": True})

    async def rotate_key(self, request: Request) -> Response:
        try:
            options = RotateKey.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return invalid_body(exc)
        key = self._emulator.keys.rotate(keep_previous=options.keep_previous)
        return JSONResponse({"kid": key.kid, "jwks": self._emulator.keys.jwks()})

    async def account(self, _request: Request) -> Response:
        return JSONResponse(self._emulator.account.view().model_dump())

    async def lock_account(self, request: Request) -> Response:
        try:
            options = LockAccount.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return invalid_body(exc)
        self._emulator.account.lock(options.reason)
        return await self.account(request)

    async def unlock_account(self, request: Request) -> Response:
        self._emulator.account.unlock()
        return await self.account(request)

    async def set_balance(self, request: Request) -> Response:
        try:
            body = SetBalance.model_validate_json(await request.body() or b"{}")
        except ValidationError as exc:
            return invalid_body(exc)
        self._emulator.account.set_balance(body.balance_usd)
        return await self.account(request)
