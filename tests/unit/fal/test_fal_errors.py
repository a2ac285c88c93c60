from __future__ import annotations

from typing import Any

import httpx
import pytest

from falflow.fal.errors import (
    FalAccountLockedError,
    FalAuthError,
    FalError,
    FalNotFoundError,
    FalPlatformError,
    FalRateLimitedError,
    FalRequestTimeoutError,
    FalServerError,
    FalTransportError,
    FalValidationError,
    error_from_response,
    transport_error,
)

REQUEST = httpx.Request("GET", "https://queue.fal.test/fal-ai/flux/requests/r-1")


def reply(status: int, body: Any = None, *, text: str | None = None, **headers: str) -> httpx.Response:
    header_list = {name.replace("_", "-"): value for name, value in headers.items()}
    if text is not None:
        return httpx.Response(status, text=text, headers=header_list, request=REQUEST)
    return httpx.Response(status, json=body, headers=header_list, request=REQUEST)


def test_422_with_a_list_of_issues_is_a_validation_error_that_keeps_fals_detail() -> None:
    detail = [
        {
            "loc": ["body", "image_url"],
            "msg": "Image too large",
            "type": "image_too_large",
            "input": "https://private.example/secret-image.png",
            "ctx": {"max_width": 4096},
        },
        {"loc": ["body", "prompt"], "msg": "Content policy violation", "type": "content_policy_violation"},
    ]
    error = error_from_response(reply(422, {"detail": detail}, x_fal_request_id="r-1"))

    assert type(error) is FalValidationError
    assert (error.status, error.retryable, error.request_id) == (422, False, "r-1")
    assert error.detail == detail
    assert "image_url: Image too large" in error.message
    assert "prompt: Content policy violation" in error.message
    # The summary never echoes the input the model was given.
    assert "secret-image" not in str(error)


def test_422_with_a_plain_string_detail_is_handled_too() -> None:
    error = error_from_response(reply(422, {"detail": "prompt must not be empty"}))

    assert type(error) is FalValidationError
    assert error.detail == "prompt must not be empty"
    assert "prompt must not be empty" in str(error)
    assert not error.retryable


def test_infrastructure_error_takes_error_type_from_the_body() -> None:
    body = {"detail": "Runner disconnected during the request", "error_type": "runner_disconnected"}
    error = error_from_response(reply(503, body, x_fal_error_type="something_else"))

    assert type(error) is FalServerError
    assert error.retryable
    assert error.error_type == "runner_disconnected"
    assert error.detail == "Runner disconnected during the request"
    assert "runner_disconnected" in str(error)


def test_infrastructure_error_falls_back_to_the_x_fal_error_type_header() -> None:
    error = error_from_response(reply(504, text="upstream timed out", x_fal_error_type="startup_timeout"))

    assert type(error) is FalServerError
    assert error.error_type == "startup_timeout"
    assert error.detail == "upstream timed out"
    assert error.retryable


def test_504_of_the_callers_own_start_deadline_is_not_retryable() -> None:
    body = {"detail": "Request timed out", "error_type": "request_timeout"}
    error = error_from_response(reply(504, body, x_fal_request_timeout_type="user", x_fal_request_id="r-9"))

    assert type(error) is FalRequestTimeoutError
    assert not error.retryable
    assert (error.error_type, error.request_id) == ("request_timeout", "r-9")


def test_504_without_the_user_timeout_header_is_a_retryable_server_error() -> None:
    error = error_from_response(reply(504, {"detail": "gateway timeout"}))

    assert type(error) is FalServerError
    assert error.retryable


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (429, "rate_limited", True),
        (500, "server_error", True),
        (400, "validation_error", False),
        (401, "authorization_error", False),
        (403, "authorization_error", False),
        (404, "not_found", False),
        (501, "not_implemented", False),
    ],
)
def test_platform_error_bodies_map_by_their_type(status: int, error_type: str, retryable: bool) -> None:
    body = {
        "error": {
            "type": error_type,
            "message": "something about the call",
            "docs_url": "https://docs.fal.ai/platform-apis/errors",
            "request_id": "plat-1",
        }
    }
    error = error_from_response(reply(status, body))

    assert type(error) is FalPlatformError
    assert (error.status, error.error_type, error.retryable) == (status, error_type, retryable)
    assert error.request_id == "plat-1"
    assert error.docs_url == "https://docs.fal.ai/platform-apis/errors"
    assert "something about the call" in str(error)


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (401, FalAuthError, False),
        (403, FalAuthError, False),
        (404, FalNotFoundError, False),
        (429, FalRateLimitedError, True),
        (500, FalServerError, True),
        (502, FalServerError, True),
        (503, FalServerError, True),
        (400, FalError, False),
        (408, FalError, True),
        (409, FalError, True),
        (413, FalError, False),
    ],
)
def test_status_codes_map_to_classes(status: int, cls: type[FalError], retryable: bool) -> None:
    error = error_from_response(reply(status, {"detail": "nope"}))

    assert type(error) is cls
    assert error.status == status
    assert error.retryable is retryable
    assert isinstance(error, FalError)


EXHAUSTED = "Exhausted balance. Top up your balance at fal.ai/dashboard/billing."


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        (f"User is locked. Reason: {EXHAUSTED}", EXHAUSTED),
        (
            "User is locked. Reason: Admin lock. Please contact support@fal.ai",
            "Admin lock. Please contact support@fal.ai",
        ),
        ("User is locked. Reason: TOP_UP.", "TOP_UP."),
        ("User is locked.", ""),
    ],
)
def test_a_locked_accounts_403_is_an_account_locked_error_with_fals_reason(detail: str, reason: str) -> None:
    error = error_from_response(reply(403, {"detail": detail}, x_fal_request_id="r-9"))

    assert type(error) is FalAccountLockedError
    assert isinstance(error, FalAuthError)  # callers that only know auth errors still stop
    assert (error.status, error.retryable, error.request_id) == (403, False, "r-9")
    assert error.lock_reason == reason
    assert error.detail == detail
    assert "locked" in str(error)


def test_a_locked_account_in_the_platform_error_shape_is_an_account_locked_error() -> None:
    body = {"error": {"type": "authorization_error", "message": f"User is locked. Reason: {EXHAUSTED}"}}
    error = error_from_response(reply(401, body))

    assert type(error) is FalAccountLockedError
    assert (error.status, error.error_type, error.retryable) == (401, "authorization_error", False)
    assert error.lock_reason == EXHAUSTED


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (403, {"detail": "Forbidden: the key lacks the ADMIN scope; User is locked. Reason: x"}),
        (401, {"detail": "No user found for Key ID and Secret"}),
        (429, {"detail": "User is locked. Reason: TOP_UP."}),
    ],
)
def test_only_a_401_or_403_that_starts_with_the_lock_text_is_an_account_lock(
    status: int, body: dict[str, Any]
) -> None:
    assert type(error_from_response(reply(status, body))) is not FalAccountLockedError


def test_html_ingress_page_becomes_a_bounded_text_detail() -> None:
    page = "<html><body><center>nginx</center>" + "x" * 5000 + "</body></html>"
    error = error_from_response(reply(502, text=page))

    assert type(error) is FalServerError
    assert isinstance(error.detail, str)
    assert error.detail.startswith("<html>")
    assert len(error.detail) <= 500


def _not_received(response: httpx.Response) -> bool:
    error = error_from_response(response)
    return isinstance(error, FalServerError) and error.not_received


@pytest.mark.parametrize("status", [502, 503, 504])
def test_only_nginx_s_page_without_a_request_id_is_evidence_that_fal_never_received_it(status: int) -> None:
    page = f"<html><center><h1>{status}</h1></center><hr><center>nginx</center></html>"
    assert _not_received(reply(status, text=page))
    # fal's client's rule: a request id means fal's server answered; no nginx page, no evidence.
    assert not _not_received(reply(status, text=page, x_fal_request_id="r-1"))
    assert not _not_received(reply(status, text="upstream request timeout"))
    assert not _not_received(reply(status, text=""))


def test_a_500_with_nginx_in_its_body_is_still_fal_s_own_error() -> None:
    assert not _not_received(reply(500, text="nginx"))


def test_a_failed_models_own_body_without_detail_is_kept_whole() -> None:
    body = {"message": "CUDA out of memory", "trace": "..."}
    error = error_from_response(reply(500, body))

    assert error.detail == body
    assert "CUDA out of memory" in str(error)


@pytest.mark.parametrize(
    ("exc_type", "ambiguous"),
    [
        (httpx.ConnectError, False),
        (httpx.ConnectTimeout, False),
        (httpx.PoolTimeout, False),
        (httpx.ReadTimeout, True),
        (httpx.WriteTimeout, True),
        (httpx.ReadError, True),
        (httpx.WriteError, True),
        (httpx.RemoteProtocolError, True),
    ],
)
def test_transport_errors_say_whether_the_request_may_have_reached_fal(
    exc_type: type[httpx.TransportError], ambiguous: bool
) -> None:
    cause = exc_type("boom", request=REQUEST)

    error = transport_error(cause)

    assert isinstance(error, FalTransportError)
    assert error.ambiguous is ambiguous
    assert error.retryable
    assert error.status is None
    assert error.__cause__ is cause
