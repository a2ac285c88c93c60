"""The one place the web app is composed: every host's routes, built from a ``FalEmulator``, in
one Starlette app behind the ``Gateway``; one port, a path prefix per fal host (see
``urls.FalUrls``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from falflow_tools.emulator.control_api import control_routes
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.errors import fal_error, platform_error
from falflow_tools.emulator.gateway import Gateway
from falflow_tools.emulator.platform_api import platform_routes
from falflow_tools.emulator.queue_api import queue_routes
from falflow_tools.emulator.storage_api import storage_routes


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unrouted paths and methods answer in the error shape of the host they were sent to."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/v1/") and exc.status_code in (400, 401, 403, 404, 429, 500):
        return platform_error(exc.status_code, exc.detail)
    return fal_error(exc.status_code, exc.detail)


def build_app(emulator: FalEmulator) -> ASGIApp:
    """The emulator's ASGI app. The ``Gateway`` must be outermost: it resets connections through
    uvicorn's own ``send`` (Starlette's middleware would wrap it)."""
    routes = [
        *queue_routes(emulator),
        *storage_routes(emulator),
        *platform_routes(emulator),
        *control_routes(emulator),
    ]

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with emulator.running():
            yield

    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan)
    return Gateway(app, emulator)
