"""The front door: real HTTP requests become API Gateway HTTP API (payload 2.0) events and back."""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from falflow_tools.local.front_door import FrontDoor, HttpReply, Route, json_reply, routes_from_template
from falflow_tools.local.workers import InvocationResult
from falflow_tools.template import function_specs


class Function:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.reply: InvocationResult = InvocationResult("r", payload={"statusCode": 200, "body": "ok"})

    def __call__(self, function: str, event: dict[str, Any]) -> InvocationResult:
        self.events.append((function, event))
        return self.reply


@pytest.fixture
def function() -> Function:
    return Function()


@pytest.fixture
def door(function: Function) -> Iterator[FrontDoor]:
    door = FrontDoor(
        [Route("POST", "/webhooks/fal", "WebhookFunction"), Route("GET", "/items/{id}", "ItemFunction")],
        function,
    )
    door.start()
    yield door
    door.stop()


def test_the_templates_routes_are_served() -> None:
    routes = routes_from_template({k: s.events for k, s in function_specs().items()})
    assert Route("POST", "/webhooks/fal", "WebhookFunction") in routes


def test_a_json_request_becomes_a_payload_2_event(door: FrontDoor, function: Function) -> None:
    body = b'{"request_id": "r-1", "status": "OK"}'
    response = httpx.post(
        f"{door.url}/webhooks/fal?job_id=a%2Fb&x=1&x=2&empty=",
        content=body,
        headers=[
            ("Content-Type", "application/json"),
            ("X-Fal-Webhook-Signature", "c2ln"),
            ("X-Dup", "one"),
            ("X-Dup", "two"),
            ("Cookie", "a=1; b=2"),
        ],
    )

    assert response.status_code == 200
    assert response.text == "ok"
    assert response.headers["apigw-requestid"]
    name, event = function.events[0]
    assert name == "WebhookFunction"
    _assert_the_request_is_in_the_event(event, body)
    _assert_the_request_context(event, response)


def _assert_the_request_is_in_the_event(event: dict[str, Any], body: bytes) -> None:
    """Route, query, headers, cookies and the raw body of the JSON request, as payload 2.0 has them."""
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /webhooks/fal"
    assert event["rawPath"] == "/webhooks/fal"
    assert event["rawQueryString"] == "job_id=a%2Fb&x=1&x=2&empty="
    assert event["queryStringParameters"] == {"job_id": "a/b", "x": "1,2", "empty": ""}
    assert event["headers"]["x-fal-webhook-signature"] == "c2ln"
    assert event["headers"]["x-dup"] == "one,two"
    assert event["headers"]["content-type"] == "application/json"
    assert all(name == name.lower() for name in event["headers"])
    assert event["cookies"] == ["a=1", "b=2"]
    assert event["isBase64Encoded"] is False
    assert event["body"].encode() == body  # the raw bytes, for signature checks


def _assert_the_request_context(event: dict[str, Any], response: httpx.Response) -> None:
    context = event["requestContext"]
    assert context["http"] == {
        "method": "POST",
        "path": "/webhooks/fal",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": response.request.headers["user-agent"],
    }
    assert context["requestId"] == response.headers["apigw-requestid"]
    assert context["stage"] == "$default"
    assert context["routeKey"] == "POST /webhooks/fal"
    assert isinstance(context["timeEpoch"], int)


def test_a_binary_body_is_base64_encoded(door: FrontDoor, function: Function) -> None:
    body = bytes(range(256))
    httpx.post(f"{door.url}/webhooks/fal", content=body, headers={"content-type": "application/octet-stream"})
    httpx.post(f"{door.url}/webhooks/fal", content=b"\xff\xfe", headers={"content-type": "application/json"})

    (_, binary), (_, not_utf8) = function.events
    assert binary["isBase64Encoded"] is True
    assert base64.b64decode(binary["body"]) == body
    assert not_utf8["isBase64Encoded"] is True


def test_path_parameters_and_unknown_routes(door: FrontDoor, function: Function) -> None:
    assert httpx.get(f"{door.url}/items/42").status_code == 200
    assert function.events[-1][1]["pathParameters"] == {"id": "42"}
    assert function.events[-1][1].get("body") is None

    missing = httpx.get(f"{door.url}/webhooks/fal")
    assert missing.status_code == 404
    assert missing.json() == {"message": "Not Found"}


def test_the_functions_response_becomes_the_http_reply(door: FrontDoor, function: Function) -> None:
    function.reply = InvocationResult(
        "r",
        payload={
            "statusCode": 401,
            "headers": {"Content-Type": "application/json", "X-Reason": "signature"},
            "cookies": ["s=1; Path=/"],
            "body": json.dumps({"message": "bad signature"}),
        },
    )
    reply = httpx.post(f"{door.url}/webhooks/fal", content=b"{}")
    assert reply.status_code == 401
    assert reply.json() == {"message": "bad signature"}
    assert reply.headers["x-reason"] == "signature"
    assert reply.headers["set-cookie"] == "s=1; Path=/"

    function.reply = InvocationResult(
        "r", payload={"statusCode": 200, "isBase64Encoded": True, "body": "AAE="}
    )
    assert httpx.post(f"{door.url}/webhooks/fal", content=b"{}").content == b"\x00\x01"


def test_plain_json_without_status_code_is_a_200_json_reply(door: FrontDoor, function: Function) -> None:
    function.reply = InvocationResult("r", payload={"accepted": True})
    reply = httpx.post(f"{door.url}/webhooks/fal", content=b"{}")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"accepted": True}


def test_function_errors_are_api_gateway_errors(door: FrontDoor, function: Function) -> None:
    function.reply = InvocationResult("r", error={"errorType": "KeyError", "errorMessage": "x"})
    failed = httpx.post(f"{door.url}/webhooks/fal", content=b"{}")
    function.reply = InvocationResult("r", error={"errorType": "Sandbox.Timedout", "errorMessage": "x"})
    timed_out = httpx.post(f"{door.url}/webhooks/fal", content=b"{}")

    assert (failed.status_code, failed.json()) == (500, {"message": "Internal Server Error"})
    assert (timed_out.status_code, timed_out.json()) == (503, {"message": "Service Unavailable"})


@pytest.mark.timeout(20)
def test_a_door_that_never_opened_stops_at_once(function: Function) -> None:
    # A stack whose start fails (a worker that did not start) stops its front door on the way out.
    door = FrontDoor([Route("POST", "/webhooks/fal", "WebhookFunction")], function)
    url = door.url

    door.stop()

    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/webhooks/fal", timeout=2)


def test_the_local_control_path_goes_to_the_stack_not_to_a_function(function: Function) -> None:
    asked: list[tuple[str, str]] = []

    def control(method: str, path: str) -> HttpReply:
        asked.append((method, path))
        return json_reply(200, {"ran": path})

    door = FrontDoor([Route("ANY", "/{proxy+}", "CatchAllFunction")], function, control=control)
    door.start()
    try:
        ran = httpx.post(f"{door.url}/_falflow/schedules/CollectFunction/run")
        routed = httpx.get(f"{door.url}/anything")
    finally:
        door.stop()

    assert ran.json() == {"ran": "schedules/CollectFunction/run"}
    assert asked == [("POST", "schedules/CollectFunction/run")]
    assert routed.status_code == 200
    assert [name for name, _ in function.events] == ["CatchAllFunction"]


def test_without_a_control_the_path_is_an_ordinary_route(door: FrontDoor, function: Function) -> None:
    assert httpx.post(f"{door.url}/_falflow/schedules/CollectFunction/run").status_code == 404
    assert function.events == []


def test_stopping_a_front_door_that_never_started_returns(function: Function) -> None:
    """A stack whose start-up fails before the front door's thread runs stops it all the same."""
    door = FrontDoor([Route("POST", "/webhooks/fal", "WebhookFunction")], function)
    stopper = threading.Thread(target=door.stop, daemon=True)
    stopper.start()
    stopper.join(30)  # a guard against hanging the suite, not a timing assertion
    assert not stopper.is_alive(), "FrontDoor.stop() hangs on a server that never started"
    door.stop()  # and a second stop is harmless


def test_a_caller_that_hangs_up_before_its_reply_is_one_log_line_not_a_traceback(
    function: Function, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    replied = threading.Event()

    def slow(name: str, event: dict[str, Any]) -> InvocationResult:
        time.sleep(0.3)  # the caller has gone by now
        replied.set()
        return function(name, event)

    door = FrontDoor([Route("POST", "/webhooks/fal", "WebhookFunction")], slow)
    door.start()
    try:
        host, port = door.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as caller:
            caller.sendall(b"POST /webhooks/fal HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            # Close with a reset, as a client whose timeout ran out does.
            caller.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with caplog.at_level(logging.INFO, logger="falflow.local"):
            assert replied.wait(5)
            deadline = time.monotonic() + 5
            while "hung up" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        door.stop()
    assert "hung up before its reply" in caplog.text
    assert "Traceback" not in capsys.readouterr().err
