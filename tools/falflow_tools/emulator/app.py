"""The Starlette application: one port, a path prefix per fal host (see ``urls.FalUrls``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Lifespan

from falflow_tools.emulator.auth import fal_error, platform_error
from falflow_tools.emulator.control_api import ControlApi
from falflow_tools.emulator.gateway import Gateway
from falflow_tools.emulator.platform_api import PlatformApi
from falflow_tools.emulator.queue_api import QueueApi
from falflow_tools.emulator.storage_api import StorageApi

if TYPE_CHECKING:
    from falflow_tools.emulator.core import FalEmulator


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unrouted paths and methods answer in the error shape of the host they were sent to."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/v1/") and exc.status_code in (400, 401, 403, 404, 429, 500):
        return platform_error(exc.status_code, exc.detail)
    return fal_error(exc.status_code, exc.detail)


def build_app(emulator: FalEmulator, lifespan: Lifespan[Starlette]) -> ASGIApp:
    """The routes behind the ``Gateway``, which must be outermost: it resets connections through
    uvicorn's own ``send`` (Starlette's middleware would wrap it)."""
    routes = [
        *QueueApi(emulator).routes(),
        *StorageApi(emulator).routes(),
        *PlatformApi(emulator).routes(),
        *ControlApi(emulator).routes(),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan)
    return Gateway(app, emulator)
