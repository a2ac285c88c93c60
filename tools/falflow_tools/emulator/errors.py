"""The error responses fal's hosts answer with: ``{"detail": ...}`` from the queue, run, storage
and CDN hosts, ``{"error": {"type", "message"}}`` from the Platform API."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from falflow_tools.emulator.auth import Principal


def fal_error(status_code: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """The queue, run, storage and CDN hosts answer errors as ``{"detail": ...}``."""
    return JSONResponse({"detail": detail}, status_code=status_code, headers=headers)


def invalid_body(exc: ValidationError) -> JSONResponse:
    """422 for a request body that does not parse into the expected model."""
    return fal_error(422, exc.errors(include_url=False, include_context=False))


def request_error(status_code: int, error_type: str, detail: str) -> JSONResponse:
    """fal's infrastructure ("request") errors: detail string + error_type, mirrored in a header."""
    return JSONResponse(
        {"detail": detail, "error_type": error_type},
        status_code=status_code,
        headers={"X-Fal-Error-Type": error_type},
    )


def concurrency_limited() -> JSONResponse:
    """fal.run's answer when every runner is busy: retry with backoff (the queue would wait)."""
    return JSONResponse(
        {"detail": "Too many concurrent requests, retry later", "error_type": "concurrent_requests_limit"},
        status_code=429,
        headers={"X-Fal-Needs-Retry": "1", "X-Fal-Error-Type": "concurrent_requests_limit"},
    )


def account_locked(reason: str) -> JSONResponse:
    """403 for every billable call of a locked account (docs/fal-contract.md §6)."""
    return fal_error(403, f"User is locked. Reason: {reason}")


def unauthorized(principal: Principal, app: str | None = None) -> JSONResponse:
    """401 of the queue, run and storage hosts: no key at all, or one fal does not know."""
    if principal.kind == "none":
        target = f"application '{app}'" if app else "this resource"
        return fal_error(401, f"Cannot access {target}. Authentication is required to access it.")
    return fal_error(401, "No user found for Key ID and Secret")


PLATFORM_ERROR_TYPES = {
    400: "validation_error",
    401: "authorization_error",
    403: "authorization_error",
    404: "not_found",
    429: "rate_limited",
    500: "server_error",
    503: "server_error",
}


def platform_error(status_code: int, message: str) -> JSONResponse:
    """The Platform API's error body: ``{"error": {"type", "message"}}``."""
    error_type = PLATFORM_ERROR_TYPES[status_code]
    return JSONResponse({"error": {"type": error_type, "message": message}}, status_code=status_code)
