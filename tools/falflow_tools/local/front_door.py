"""The HTTP front door: API Gateway HTTP API routes on loopback, invoking the function behind each.

Requests become Lambda proxy events in payload format 2.0 (lower-cased headers with duplicates
joined by commas, cookies apart, `rawQueryString` plus `queryStringParameters`, `requestContext`,
the body as text or base64 when it is binary); the function's response becomes the HTTP reply,
including the shortcut where a function returns plain JSON without a `statusCode`. Routes come
from the `HttpApi` events of template.yaml.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from falflow_tools.local.workers import InvocationResult

log = logging.getLogger("falflow.local")

ACCOUNT_ID = "123456789012"
# HTTP APIs refuse payloads above 10 MB. (Their 30 s integration timeout needs no emulation here:
# the webhook function's own timeout is shorter, and a timed-out invocation answers 503 as AWS does.)
MAX_BODY_BYTES = 10 * 1024 * 1024

# Bodies of these types reach the function as text; anything else is base64-encoded.
_TEXT_TYPES = re.compile(
    r"^(text/.*|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded))$", re.IGNORECASE
)


@dataclass(frozen=True)
class Route:
    """One `HttpApi` event: method (or ANY) and path (with `{name}` / `{proxy+}` parameters)."""

    method: str
    path: str
    function: str

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        pattern = ""
        for part in re.split(r"(\{[^}]+\})", self.path):
            if part.startswith("{") and part.endswith("+}"):
                pattern += f"(?P<{part[1:-2]}>.+)"
            elif part.startswith("{"):
                pattern += f"(?P<{part[1:-1]}>[^/]+)"
            else:
                pattern += re.escape(part)
        found = re.fullmatch(pattern, path)
        return dict(found.groupdict()) if found else None


def routes_from_template(functions: Mapping[str, Mapping[str, Any]]) -> list[Route]:
    """`HttpApi` events by function (the `events` of `function_specs()`)."""
    routes = []
    for function, events in functions.items():
        for event in events.values():
            if event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties", {})
            routes.append(
                Route(
                    method=str(props.get("Method", "ANY")).upper(),
                    path=props.get("Path", "/"),
                    function=function,
                )
            )
    return routes


def is_text(content_type: str | None) -> bool:
    if not content_type:
        return False
    return bool(_TEXT_TYPES.match(content_type.split(";", 1)[0].strip()))


def http_api_event(
    *,
    route: Route,
    path_parameters: Mapping[str, str],
    method: str,
    raw_path: str,
    raw_query: str,
    headers: Sequence[tuple[str, str]],
    body: bytes,
    source_ip: str,
    domain_name: str,
    api_id: str = "local",
    request_id: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The event API Gateway (HTTP API, payload format 2.0) sends a Lambda proxy integration."""
    now = now or datetime.now(UTC)
    joined: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
            continue
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    text: str | None = None
    if is_text(joined.get("content-type")):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None  # declared as text but is not: API Gateway passes it as binary
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": joined,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": api_id,
            "domainName": domain_name,
            "domainPrefix": domain_name.split(".", 1)[0],
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": joined.get("user-agent", ""),
            },
            "requestId": request_id or str(uuid.uuid4()),
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": text is None,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = dict(path_parameters)
    if body:
        event["body"] = text if text is not None else base64.b64encode(body).decode()
    return event


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def json_reply(status: int, value: Any) -> HttpReply:
    return HttpReply(status, [("content-type", "application/json")], json.dumps(value).encode())


def _json_reply(status: int, message: str) -> HttpReply:
    return json_reply(status, {"message": message})


def http_api_reply(result: InvocationResult) -> HttpReply:
    """The HTTP reply API Gateway makes of a function's result (payload format 2.0 rules)."""
    if not result.ok:
        if result.error and result.error.get("errorType") == "Sandbox.Timedout":
            return _json_reply(503, "Service Unavailable")
        return _json_reply(500, "Internal Server Error")
    payload = result.payload
    if not isinstance(payload, dict) or "statusCode" not in payload:
        # A function that returns plain JSON: 200, application/json, the JSON as the body.
        return HttpReply(200, [("content-type", "application/json")], json.dumps(payload).encode())
    try:
        status = int(payload["statusCode"])
        headers = [(str(k).lower(), str(v)) for k, v in (payload.get("headers") or {}).items()]
        for name, values in (payload.get("multiValueHeaders") or {}).items():
            headers.extend((str(name).lower(), str(v)) for v in values)
        headers.extend(("set-cookie", str(cookie)) for cookie in payload.get("cookies") or [])
        raw = payload.get("body")
        if raw is None:
            body = b""
        elif payload.get("isBase64Encoded"):
            body = base64.b64decode(raw)
        else:
            body = (raw if isinstance(raw, str) else json.dumps(raw)).encode()
    except (TypeError, ValueError, AttributeError):
        return _json_reply(500, "Internal Server Error")
    return HttpReply(status, headers, body)


Invoker = Callable[[str, dict[str, Any]], InvocationResult]
# The local stack's own actions (`falflow local run`) live under this path, which no template route
# uses; a deployed HTTP API has no such path.
CONTROL_PREFIX = "/_falflow/"
Control = Callable[[str, str], HttpReply]


class FrontDoor:
    """A threaded HTTP server on loopback playing API Gateway for the template's HttpApi routes."""

    def __init__(
        self,
        routes: Sequence[Route],
        invoke: Invoker,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        control: Control | None = None,
    ) -> None:
        self.routes = list(routes)
        self._invoke = invoke
        self._control = control
        self.requests = 0
        handler = _make_handler(self)
        self._server = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        # A short poll interval makes shutdown quick (serve_forever checks for it between polls).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="front-door", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and free the port; safe before `start` (a stack whose start-up failed)."""
        if self._thread is not None:
            # shutdown() waits for serve_forever to return: on a server never started, forever.
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def handle(
        self, method: str, target: str, headers: Sequence[tuple[str, str]], body: bytes, source_ip: str
    ) -> HttpReply:
        self.requests += 1
        split = urlsplit(target)
        raw_path = split.path or "/"
        if self._control is not None and raw_path.startswith(CONTROL_PREFIX):
            return self._control(method, raw_path.removeprefix(CONTROL_PREFIX))
        for route in self.routes:
            params = route.match(method, raw_path)
            if params is None:
                continue
            request_id = str(uuid.uuid4())
            host = {k.lower(): v for k, v in headers}.get("host", "localhost")
            event = http_api_event(
                route=route,
                path_parameters=params,
                method=method,
                raw_path=raw_path,
                raw_query=split.query,
                headers=headers,
                body=body,
                source_ip=source_ip,
                domain_name=host.split(":", 1)[0],
                request_id=request_id,
            )
            started = time.monotonic()
            reply = http_api_reply(self._invoke(route.function, event))
            elapsed_ms = (time.monotonic() - started) * 1000
            log.debug("%s %s -> %s (%.0f ms)", method, raw_path, reply.status, elapsed_ms)
            return HttpReply(reply.status, [*reply.headers, ("apigw-requestid", request_id)], reply.body)
        return _json_reply(404, "Not Found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # API Gateway takes a burst; the default backlog (5) reset connections under one (fal's
    # deliveries when a thousand jobs of a batch finish together), and each reset is a retry.
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A caller that hung up before its reply (fal's delivery timed out) is a line, not a
        # traceback: the delivery is retried or the reconciler finds the job.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.info("front door: %s hung up before its reply (%s)", client_address[0], type(error).__name__)
            return
        super().handle_error(request, client_address)


def _make_handler(door: FrontDoor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY_BYTES:
                self._send(_json_reply(413, "Request Entity Too Large"))
                return
            body = self.rfile.read(length) if length else b""
            headers = list(self.headers.items())
            self._send(door.handle(self.command, self.path, headers, body, self.client_address[0]))

        def _send(self, reply: HttpReply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers:
                if name not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("front door: " + format, *args)

    return Handler
