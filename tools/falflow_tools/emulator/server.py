"""Serving the emulator's app (``app.build_app``) with uvicorn on loopback: in a background
thread (tests, local stack) or in the foreground (the CLI)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Self

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG

from falflow_tools.emulator.app import build_app
from falflow_tools.emulator.config import EmulatorConfig
from falflow_tools.emulator.control import EmulatorControl
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.urls import FalUrls

STARTUP_TIMEOUT_S = 10.0
# Bounds how long a stop waits for in-flight requests (e.g. a slow download) before cutting them.
GRACEFUL_SHUTDOWN_S = 2


def bind_socket(host: str, port: int) -> tuple[socket.socket, str]:
    """Bind before serving, so the real port (``port=0`` picks a free one) and base URL are known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say they are TCP,
    # and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made before uvicorn starts wait in the backlog, not refused
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"http://{url_host}:{bound_port}"


def uvicorn_server(app: ASGIApp, *, log_level: str = "warning", own_logging: bool = False) -> uvicorn.Server:
    """A uvicorn server for the emulator's ``app``; ``own_logging`` lets uvicorn configure logging
    (the CLI), otherwise the host process's logging is left alone (tests, local stack)."""
    config = uvicorn.Config(
        app,
        http="h11",
        lifespan="on",
        log_config=LOGGING_CONFIG if own_logging else None,
        log_level=log_level,
        access_log=own_logging,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return uvicorn.Server(config)


class RunningEmulator:
    """An emulator served from a background thread; a context manager that stops it on exit.

    ``app`` is ``build_app(emulator)`` unless given (e.g. that app behind a test's middleware)."""

    def __init__(
        self, emulator: FalEmulator, host: str = "127.0.0.1", port: int = 0, *, app: ASGIApp | None = None
    ) -> None:
        self.emulator = emulator
        sock, base_url = bind_socket(host, port)
        # A second origin serving the same app: fal's backup hosts (queue.falrun.com, falrun.com).
        backup_sock, backup_base_url = bind_socket(host, 0)
        emulator.bind(base_url, backup_base_url)
        self.base_url = base_url
        self._server = uvicorn_server(app or build_app(emulator))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock, backup_sock]}, name="fal-emulator", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                backup_sock.close()
                raise RuntimeError("the fal emulator did not start")
            time.sleep(0.01)
        self.control = EmulatorControl(base_url)

    @property
    def urls(self) -> FalUrls:
        return self.emulator.urls

    @property
    def config(self) -> EmulatorConfig:
        return self.emulator.config

    @property
    def api_key(self) -> str:
        return self.config.api_keys[0]

    @property
    def admin_key(self) -> str:
        return self.config.admin_keys[0]

    @property
    def user_id(self) -> str:
        return self.config.user_id

    @property
    def jwks_url(self) -> str:
        return self.urls.jwks_url

    def env(self) -> dict[str, str]:
        """``FAL_*`` settings pointing falflow at this emulator (keys are not included)."""
        return self.urls.env()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.emulator.request_close()
        self._server.should_exit = True
        self._thread.join(timeout=GRACEFUL_SHUTDOWN_S + 5)
        self.control.close()
        self.emulator.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def run_emulator(
    config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> RunningEmulator:
    """Start a fal emulator on ``host:port`` (a free port by default) in a background thread."""
    return RunningEmulator(FalEmulator(config), host, port)
