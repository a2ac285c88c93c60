"""AWS (moto's server) and fal (the emulator) for the completion benchmarks, each in a process of
its own — as AWS and fal are elsewhere, their work does not compete with the measured code for
this interpreter.

    python -m bench.services --serve-fal PORT LATENCY_S CONFIG_JSON    # what fal_process() runs
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from bench.fresh import REPO
from falflow_tools.emulator import EmulatorConfig, EmulatorControl, FalEmulator, FalUrls, RunningEmulator
from falflow_tools.emulator.app import build_app
from falflow_tools.local.handlers import forget_cached_configuration
from falflow_tools.local.resources import ProvisionedStack, provision
from falflow_tools.net import free_port

REGION = "us-east-1"


def wait_for(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextmanager
def process(command: list[str], ready_url: str) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        wait_for(ready_url)
        yield child
    finally:
        child.terminate()
        child.wait(timeout=30)


def use_local_aws(endpoint_url: str) -> None:
    """Point boto3 (and falflow.aws.clients) at ``endpoint_url`` with fake credentials."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_ENDPOINT_URL=endpoint_url,
    )
    os.environ.pop("AWS_PROFILE", None)
    forget_cached_configuration()  # an earlier benchmark's clients point at its own moto


@contextmanager
def moto_process() -> Iterator[ProvisionedStack]:
    """moto's server on loopback with every resource of template.yaml."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto_server = str(Path(sys.executable).with_name("moto_server"))
    with process([moto_server, "-H", "127.0.0.1", "-p", str(port)], f"{url}/moto-api/"):
        use_local_aws(url)
        yield provision(region=REGION, endpoint_url=url)


@dataclass(frozen=True)
class RemoteFal:
    urls: FalUrls
    control: EmulatorControl
    api_key: str

    @property
    def base_url(self) -> str:
        return self.urls.base


class AddedLatency:
    """ASGI middleware: every fal queue submit is answered ``seconds`` later (a distant fal)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self._app = app
        self._seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/queue/"):
            await asyncio.sleep(self._seconds)
        await self._app(scope, receive, send)


@contextmanager
def slow_fal(
    latency_s: float, config: EmulatorConfig | None = None, *, port: int = 0
) -> Iterator[RunningEmulator]:
    """The fal emulator (in this process) with ``latency_s`` added to every queue submit."""
    emulator = FalEmulator(config or EmulatorConfig())
    app = build_app(emulator)
    if latency_s:
        app = AddedLatency(app, latency_s)
    running = RunningEmulator(emulator, port=port, app=app)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def fal_process(config: EmulatorConfig, *, latency_s: float = 0.0) -> Iterator[RemoteFal]:
    """The fal emulator with ``config`` (and ``latency_s`` added to submits), in a process of its own."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "bench.services",
        "--serve-fal",
        str(port),
        str(latency_s),
        config.model_dump_json(),
    ]
    with process(command, f"{base}/_emulator/stats"), EmulatorControl(base) as control:
        yield RemoteFal(FalUrls(base), control, config.api_keys[0])


def _serve_fal(port: int, latency_s: float, config_json: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with slow_fal(latency_s, EmulatorConfig.model_validate_json(config_json), port=port):
        stop.wait()


if __name__ == "__main__" and sys.argv[1:2] == ["--serve-fal"]:
    _serve_fal(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
