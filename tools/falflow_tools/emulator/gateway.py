"""fal's edge as the emulator plays it: every request is recorded, and the run's HTTP faults
(429, 500, 503, a withheld response, a reset connection) are injected before the routes see it,
or (a reset, a proxy 504) after the routes handled it, so a submit is queued and its reply lost.

This is raw ASGI rather than Starlette middleware because a reset must reach uvicorn's socket:
the client has to see a real connection reset, not an error response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import time

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from falflow_tools.emulator.config import HttpGroup
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.errors import concurrency_limited, fal_error, platform_error
from falflow_tools.emulator.faults import AFTER_HANDLING, HttpFault, http_group
from falflow_tools.emulator.state import RequestRecord

BODY_CAPTURE_BYTES = 64 * 1024
RECORDED_HEADERS = (
    "authorization",
    "content-type",
    "user-agent",
    "idempotency-key",
    "x-fal-queue-priority",
    "x-fal-request-timeout",
    "x-fal-runner-hint",
    "x-fal-store-io",
    "x-fal-no-retry",
    "x-fal-file-name",
    "x-fal-object-lifecycle-preference",
    "x-fal-object-lifecycle",
)

# What an nginx ingress answers; fal's clients retry a 503 only when it looks like this (no
# x-fal-request-id header and "nginx" in the body).
_INGRESS_503 = (
    b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n<body>\r\n"
    b"<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
# A gateway timeout from a proxy that is not fal's nginx ingress (Envoy's wording): no
# x-fal-request-id and no nginx page, so fal's clients have no evidence it was not received.
_PROXY_504 = b"upstream request timeout"


def _redacted(name: str, value: str) -> str:
    if name != "authorization":
        return value
    scheme, _, _ = value.partition(" ")
    return f"{scheme} <redacted>"


def fault_response(fault: HttpFault, group: HttpGroup) -> Response:
    if group == "platform":
        if fault == "429":
            return platform_error(429, "Rate limit exceeded")
        return platform_error(int(fault), "An unexpected error occurred")
    if fault == "429":
        return concurrency_limited()
    if fault == "503":
        return Response(_INGRESS_503, status_code=503, media_type="text/html")
    return fal_error(500, "Internal Server Error")


async def reset_connection(send: Send) -> None:
    """Close the client's socket with a TCP RST and no response.

    uvicorn's ``send`` is a bound method of the request cycle, which holds the transport; with
    SO_LINGER set to zero, aborting it makes the kernel send a reset instead of a clean FIN.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise RuntimeError("connection resets need uvicorn's HTTP protocol (no transport found)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn see the connection lost before the app returns, so it does not try to answer.
    await asyncio.sleep(0)


class Gateway:
    def __init__(self, app: ASGIApp, emulator: FalEmulator) -> None:
        self._app = app
        self._emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator/"):
            await self._app(scope, receive, send)
            return
        emulator = self._emulator
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        group = http_group(scope["method"], scope["path"])
        record = RequestRecord(
            at=time.time(),
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode("latin-1"),
            headers={name: _redacted(name, headers[name]) for name in RECORDED_HEADERS if name in headers},
            key_kind=emulator.auth.identify(headers.get("authorization")).kind,
            group=group,
        )
        emulator.state.requests.append(record)
        fault = emulator.faults.http_fault(group) if group else None
        record.fault = fault
        if fault == "reset":
            await reset_connection(send)
            return
        hold_s = (
            emulator.faults.config.for_group(group).timeout_hold_s if group and fault == "timeout" else 0.0
        )

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status_code = message["status"]
                if hold_s:
                    await self._hold(hold_s)
            await send(message)

        capture = headers.get("content-type", "").startswith("application/json")
        if fault in AFTER_HANDLING:
            await self._lose_reply(fault, scope, _tee(receive, record, capture=capture), send, record)
            return
        if group is not None and fault is not None and fault != "timeout":
            await fault_response(fault, group)(scope, receive, recording_send)
            return
        await self._app(scope, _tee(receive, record, capture=capture), recording_send)

    async def _lose_reply(
        self, fault: HttpFault, scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> None:
        """Let the routes handle the request in full, then lose their reply on the way back."""

        async def swallow(_message: Message) -> None:
            return None

        await self._app(scope, receive, swallow)
        if fault == "reset_after":
            await reset_connection(send)
            return
        record.status_code = 504
        await Response(_PROXY_504, status_code=504, media_type="text/plain")(scope, receive, send)

    async def _hold(self, seconds: float) -> None:
        """Withhold a response (the work is done; the client is meant to give up first)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._emulator.closing.wait(), seconds)


def _tee(receive: Receive, record: RequestRecord, *, capture: bool) -> Receive:
    """Pass the request body through, keeping a JSON body (up to 64 KB) on the record."""
    captured = bytearray()

    async def tee() -> Message:
        message = await receive()
        if capture and message["type"] == "http.request" and len(captured) <= BODY_CAPTURE_BYTES:
            captured.extend(message.get("body", b""))
            if not message.get("more_body", False) and len(captured) <= BODY_CAPTURE_BYTES:
                try:
                    record.body = json.loads(captured)
                except ValueError:
                    record.body = None
        return message

    return tee
