"""Typed fal errors that say whether trying again can help.

``error_from_response`` is the one place that turns an HTTP reply from fal into an exception; the
retry loop (``fal.http``) and every caller decide on ``retryable`` alone.
"""

from __future__ import annotations

from typing import Any

import httpx

# Platform API error types after which the same request may succeed later.
_RETRYABLE_PLATFORM_TYPES = frozenset({"rate_limited", "server_error"})
# Error bodies can echo model input; keep only a bounded prefix of non-JSON text.
_MAX_TEXT_DETAIL = 500
# What an ingress proxy in front of fal's queue answers with when it could not reach the queue.
INGRESS_STATUSES = frozenset({502, 503, 504})
# How fal's 401/403 for a locked account begins: "User is locked. Reason: <why>" (docs/fal-contract.md §6).
_ACCOUNT_LOCKED_PREFIX = "User is locked"
_LOCK_REASON_MARKER = "Reason:"


class FalError(Exception):
    """A call to fal failed. ``retryable`` says whether the same call may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        error_type: str | None = None,
        detail: Any = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.error_type = error_type
        self.detail = detail
        self.request_id = request_id


class FalValidationError(FalError):
    """422: fal (or the model) rejected the input. ``detail`` is a list of issues or a string."""


class FalAuthError(FalError):
    """401/403: the key is missing, wrong, or lacks the scope (ADMIN) the call needs."""


class FalAccountLockedError(FalAuthError):
    """401/403 "User is locked. Reason: ...": the key is fine but fal refuses the account's billable
    calls (an exhausted balance, an admin lock) until it is unlocked; status reads still work.

    ``lock_reason`` is fal's text after "Reason:", e.g. "Exhausted balance. Top up your balance at
    fal.ai/dashboard/billing." or "Admin lock. Please contact support@fal.ai" (empty if none given).
    """

    def __init__(self, message: str, *, lock_reason: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.lock_reason = lock_reason


class FalNotFoundError(FalError):
    """404: unknown endpoint, request id, or expired result."""


class FalRateLimitedError(FalError):
    """429: over a limit (``fal_max_queue_length`` on submit, or a rate limit); back off and retry."""


class FalServerError(FalError):
    """5xx: a fault on fal's side; ``error_type`` carries fal's classification when given.

    ``not_received`` is True only for a reply that carries fal's own evidence that the request
    never got past the ingress (`is_ingress_error`); any other 5xx may come after fal queued it.
    """

    def __init__(self, message: str, *, not_received: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.not_received = not_received


class FalRequestTimeoutError(FalError):
    """504 with ``X-Fal-Request-Timeout-Type: user``: the caller's own start deadline passed.

    fal has already stopped retrying it, and resending would hit the same deadline again.
    """


class FalPlatformError(FalError):
    """A Platform API error body ``{"error": {type, message, docs_url?, request_id?}}``."""

    def __init__(self, message: str, *, docs_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.docs_url = docs_url


class FalTransportError(FalError):
    """No usable HTTP reply: connect failure, timeout, reset.

    ``ambiguous`` is True when the request may have reached fal (it was at least partly sent), so a
    non-idempotent call such as a submit may have taken effect; False when it certainly did not.
    """

    def __init__(self, message: str, *, ambiguous: bool) -> None:
        super().__init__(message, retryable=True)
        self.ambiguous = ambiguous


def transport_error(exc: httpx.TransportError) -> FalTransportError:
    """Classify an httpx failure by whether the request can have reached fal."""
    # Connect errors and pool timeouts happen before a byte of the request is written.
    certainly_unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    error = FalTransportError(f"{type(exc).__name__} talking to fal: {exc}", ambiguous=not certainly_unsent)
    error.__cause__ = exc
    return error


def is_ingress_error(response: httpx.Response) -> bool:
    """fal's own client's test for "the ingress answered, fal never received the request"
    (``_is_ingress_error`` in fal-ai/fal ``projects/fal_client/src/fal_client/client.py``): a 502,
    503 or 504 without an ``x-fal-request-id`` header whose body is nginx's error page. A proxy
    504 that does not look like that (an empty body, another proxy's text) may come after fal
    queued the request, so it is no evidence of anything (docs/fal-contract.md, section 6)."""
    if response.status_code not in INGRESS_STATUSES or "x-fal-request-id" in response.headers:
        return False
    return "nginx" in response.text


def error_from_response(response: httpx.Response) -> FalError:
    """Map a non-2xx reply from any fal API to the matching exception."""
    status = response.status_code
    body = _body(response)
    request_id = response.headers.get("x-fal-request-id")

    platform = _platform_error(body)
    if platform is not None:
        error_type = platform.get("type") if isinstance(platform.get("type"), str) else None
        lock_reason = _lock_reason(status, platform.get("message"))
        if lock_reason is not None:
            return FalAccountLockedError(
                f"fal account is locked ({status}): {lock_reason}",
                lock_reason=lock_reason,
                status=status,
                error_type=error_type,
                detail=platform,
                request_id=_str_or_none(platform.get("request_id")) or request_id,
            )
        return FalPlatformError(
            f"fal platform error {status} {error_type}: {platform.get('message', '')}",
            status=status,
            retryable=(
                error_type in _RETRYABLE_PLATFORM_TYPES if error_type else _status_is_retryable(status)
            ),
            error_type=error_type,
            detail=platform,
            request_id=_str_or_none(platform.get("request_id")) or request_id,
            docs_url=_str_or_none(platform.get("docs_url")),
        )

    detail = body.get("detail", body) if isinstance(body, dict) else body
    error_type = _str_or_none(body.get("error_type") if isinstance(body, dict) else None)
    error_type = error_type or response.headers.get("x-fal-error-type")
    common: dict[str, Any] = {
        "status": status,
        "error_type": error_type,
        "detail": detail,
        "request_id": request_id,
    }
    summary = _summary(detail)

    if status == 422:
        return FalValidationError(f"fal rejected the input (422): {summary}", **common)
    lock_reason = _lock_reason(status, detail)
    if lock_reason is not None:
        return FalAccountLockedError(
            f"fal account is locked ({status}): {lock_reason}", lock_reason=lock_reason, **common
        )
    if status in (401, 403):
        return FalAuthError(f"fal refused the credentials ({status}): {summary}", **common)
    if status == 404:
        return FalNotFoundError(f"not found at fal (404): {summary}", **common)
    if status == 429:
        return FalRateLimitedError(f"rate limited by fal (429): {summary}", retryable=True, **common)
    if status == 504 and response.headers.get("x-fal-request-timeout-type", "").lower() == "user":
        return FalRequestTimeoutError(
            f"the request did not start before its X-Fal-Request-Timeout (504): {summary}", **common
        )
    if status >= 500:
        not_received = is_ingress_error(response)
        return FalServerError(
            f"fal server error ({status}{f' {error_type}' if error_type else ''}"
            f"{', ingress: not received' if not_received else ''}): {summary}",
            retryable=True,
            not_received=not_received,
            **common,
        )
    return FalError(
        f"fal returned HTTP {status}: {summary}", retryable=_status_is_retryable(status), **common
    )


def _status_is_retryable(status: int) -> bool:
    # 408/409 are what fal's own client retries besides 429 and 5xx.
    return status in (408, 409, 429) or status >= 500


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text[:_MAX_TEXT_DETAIL] or None


def _lock_reason(status: int, message: Any) -> str | None:
    """fal's reason for a locked account, or None when this is not a locked account's refusal."""
    if status not in (401, 403) or not isinstance(message, str):
        return None
    text = message.strip()
    if not text.startswith(_ACCOUNT_LOCKED_PREFIX):
        return None
    _, marker, reason = text.partition(_LOCK_REASON_MARKER)
    return reason.strip()[:_MAX_TEXT_DETAIL] if marker else ""


def _platform_error(body: Any) -> dict[str, Any] | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "type" in error and "message" in error:
            return error
    return None


def _summary(detail: Any) -> str:
    """A short human summary of ``detail``: only the messages, never echoed input values."""
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                msg = item.get("msg", item.get("type", ""))
                parts.append(f"{loc}: {msg}" if loc else str(msg))
            else:
                parts.append(str(item))
        return "; ".join(parts)[:_MAX_TEXT_DETAIL]
    if isinstance(detail, dict):
        # A model's own error body: prefer its message field over dumping the whole object.
        message = detail.get("message", detail.get("error"))
        return str(message)[:_MAX_TEXT_DETAIL] if isinstance(message, str) else "see detail"
    if detail is None:
        return "no detail"
    return str(detail)[:_MAX_TEXT_DETAIL]


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
