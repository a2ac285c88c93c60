"""The console's web app (starlette): a static page and the read-only JSON it draws from.

Bound to loopback by `serve`; a request naming any other host is refused, so a web page elsewhere
cannot reach it through DNS rebinding. The page loads nothing from the internet.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from falflow.jobs import JobState
from falflow_tools.console import data
from falflow_tools.ops.target import OpsError, Target
from falflow_tools.ops.when import moment

HOST = "127.0.0.1"
_STATIC = {
    "/": ("page.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}
# Outputs come from the bucket's presigned URLs (another origin); everything else from here.
_POLICY = (
    "default-src 'self'; img-src 'self' http: https: data:; media-src 'self' http: https:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _parse_since(value: str | None) -> datetime | None:
    return moment(value) if value else None


def create_app(target: Target) -> Starlette:
    def static(request: Request) -> Response:
        name, media_type = _STATIC[request.url.path]
        body = resources.files("falflow_tools.console").joinpath(name).read_text(encoding="utf-8")
        return Response(body, media_type=media_type)

    def api(read: Callable[[Request], Any]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await run_in_threadpool(read, request))
            except OpsError as error:
                return JSONResponse({"error": str(error)}, status_code=404)
            except ValueError as error:
                return JSONResponse({"error": str(error)}, status_code=400)

        return endpoint

    def jobs(request: Request) -> Any:
        query = request.query_params
        state = query.get("state") or None
        if state is not None and state not in JobState.__members__:
            raise ValueError(f"no state {state!r}")
        return data.jobs(
            target,
            state=state,
            model=query.get("model"),
            since=_parse_since(query.get("since")),
            until=_parse_since(query.get("until")),
        )

    def costs(request: Request) -> Any:
        return data.costs(target, since=_parse_since(request.query_params.get("since")))

    def about(request: Request) -> Any:
        return {"target": target.name, "local": target.is_local, "states": [s.value for s in JobState]}

    routes = [
        *(Route(path, static) for path in _STATIC),
        Route("/api/about", api(about)),
        Route("/api/jobs", api(jobs)),
        Route("/api/jobs/{job_id:path}", api(lambda r: data.job_detail(target, r.path_params["job_id"]))),
        Route("/api/costs", api(costs)),
        Route("/api/dlq", api(lambda r: data.dead_letters(target))),
    ]
    return Starlette(routes=routes, middleware=[Middleware(LoopbackOnly)])


class LoopbackOnly(BaseHTTPMiddleware):
    """Refuses a request for any other host name (DNS rebinding); sets the page's content policy."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.hostname not in (HOST, "localhost"):
            return PlainTextResponse("the console answers only on loopback", status_code=421)
        response = await call_next(request)
        response.headers["content-security-policy"] = _POLICY
        response.headers["cache-control"] = "no-store"
        response.headers["x-content-type-options"] = "nosniff"
        return response


class ConsoleServer:
    """uvicorn on 127.0.0.1 in a thread (`port=0`: a free port); `url` once started."""

    def __init__(self, target: Target, *, port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((HOST, port))
        config = uvicorn.Config(create_app(target), log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="console", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._socket.getsockname()[1]}/"

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise OpsError(f"the console did not start on {self.url}")

    def serve_forever(self) -> None:
        self._run()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(5)
        self._socket.close()
