"""Who is calling: fal keys (``Authorization: Key id:secret``, API or ADMIN scope) and the
short-lived CDN upload tokens handed out by ``POST /storage/auth/token``; plus the error bodies
fal's two API families answer with."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from falflow_tools.emulator.config import EmulatorConfig
from falflow_tools.emulator.state import KeyKind

CDN_TOKEN_TYPE = "Bearer"  # noqa: S105  # an auth scheme, not a secret


@dataclass(frozen=True)
class Principal:
    kind: KeyKind
    # The public half of the key ("id" of "id:secret"), as usage records name it.
    key_id: str | None = None

    @property
    def is_key(self) -> bool:
        return self.kind in ("api", "admin")


def _key_id(key: str) -> str:
    return key.split(":", 1)[0]


class Auth:
    def __init__(self, config: EmulatorConfig) -> None:
        self._admin_keys = set(config.admin_keys)
        self._api_keys = set(config.api_keys)
        self._token_ttl_s = config.cdn_token_ttl_s
        self._cdn_tokens: dict[str, float] = {}

    def identify(self, authorization: str | None) -> Principal:
        if not authorization:
            return Principal("none")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "key":
            if credential in self._admin_keys:
                return Principal("admin", _key_id(credential))
            if credential in self._api_keys:
                return Principal("api", _key_id(credential))
        elif scheme == CDN_TOKEN_TYPE and self._cdn_tokens.get(credential, 0) > time.time():
            return Principal("cdn_token")
        return Principal("invalid")

    def __call__(self, request: Request) -> Principal:
        return self.identify(request.headers.get("authorization"))

    def issue_cdn_token(self) -> tuple[str, float]:
        token = secrets.token_urlsafe(24)
        expires_at = time.time() + self._token_ttl_s
        self._cdn_tokens[token] = expires_at
        return token, expires_at

    def reset(self) -> None:
        self._cdn_tokens.clear()


# ------------------------------------------------------------------------------------ errors


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
