"""fal's queue API: submit with a webhook, status, result, cancel (docs/fal-contract.md §2)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote

import httpx

from falflow.fal.endpoints import EndpointId
from falflow.fal.errors import FalError
from falflow.fal.http import FalHttp, RetryPolicy, backup_origins, origin_of
from falflow.fal.model import FalModel
from falflow.settings import FalSettings

QueuePriority = Literal["normal", "low"]
AclDecision = Literal["allow", "forbid", "hide"]
# fal's reliability page names x-fal-disable-fallbacks; its headers page (per the research notes)
# x-app-fal-disable-fallback. Both are sent: either one is what fal reads (docs/fal-contract.md §2).
DISABLE_FALLBACK_HEADERS = ("X-Fal-Disable-Fallbacks", "X-App-Fal-Disable-Fallback")
SERVED_FROM_HEADER = "x-fal-served-from"
QueueState = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
# fal's clients refuse start timeouts of 1 s or less.
MIN_START_TIMEOUT_S = 1.0


class Submission(FalModel):
    """What submit returns. Store the three URLs: the docs prefer them to URLs built by hand."""

    request_id: str
    response_url: str
    status_url: str
    cancel_url: str
    queue_position: int | None = None
    # Equals request_id unless fal retried internally; always key on request_id.
    gateway_request_id: str | None = None
    status: str | None = None


class QueueLog(FalModel):
    message: str
    level: str | None = None
    source: str | None = None
    timestamp: str | None = None


class QueueStatus(FalModel):
    """A status poll. A failed request is COMPLETED with ``error``/``error_type`` set."""

    status: QueueState
    request_id: str | None = None
    response_url: str | None = None
    status_url: str | None = None
    cancel_url: str | None = None
    queue_position: int | None = None
    logs: list[QueueLog] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def completed(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def failed(self) -> bool:
        return self.completed and (self.error is not None or self.error_type is not None)


class OutputLifecycle(FalModel):
    """``X-Fal-Object-Lifecycle-Preference`` for the request's output CDN files (PY
    ``_normalize_upload_lifecycle``): who may read them and after how long fal deletes them."""

    initial_acl: AclDecision | None = None
    expiration_duration_seconds: int | None = None

    def header(self) -> str | None:
        body: dict[str, Any] = {}
        if self.expiration_duration_seconds is not None:
            body["expiration_duration_seconds"] = self.expiration_duration_seconds
        if self.initial_acl is not None:
            body["initial_acl"] = {"default": self.initial_acl, "rules": []}
        return json.dumps(body, separators=(",", ":")) if body else None


class CancelOutcome(StrEnum):
    CANCELLATION_REQUESTED = "CANCELLATION_REQUESTED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    NOT_FOUND = "NOT_FOUND"


class QueueUrls(FalModel):
    """The app-level URLs of one request, for when a stored URL is missing."""

    status_url: str
    response_url: str
    cancel_url: str


_CANCEL_OUTCOMES = {400: CancelOutcome.ALREADY_COMPLETED, 404: CancelOutcome.NOT_FOUND}


class FalQueueClient:
    def __init__(
        self,
        settings: FalSettings,
        api_key: Callable[[], str],
        http: httpx.Client | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._settings = settings
        # Stored URLs may be on fal's backup queue origin too (a submit that went there).
        queue_origin = origin_of(settings.queue_url)
        backup = backup_origins(settings).get(queue_origin)
        self._queue_origins = frozenset({queue_origin} | ({backup} if backup else set()))
        self._http = FalHttp(settings, api_key, http, retry)

    def submit(
        self,
        endpoint_id: str | EndpointId,
        input: Mapping[str, Any],  # fal's own name for the model input
        *,
        webhook_url: str | None = None,
        priority: QueuePriority | None = None,
        start_timeout: float | None = None,
        runner_hint: str | None = None,
        store_io: bool | None = None,
        max_queue_length: int | None = None,
        lifecycle: OutputLifecycle | None = None,
        allow_fallbacks: bool | None = None,
    ) -> Submission:
        """Queue one request. Never re-sent after an ambiguous failure (see ``FalHttp.request``).

        ``store_io=False`` asks fal not to keep the request's input and output; ``lifecycle`` sets
        the ACL and expiry of its output files; ``allow_fallbacks=False`` forbids fal to reroute
        it to an "equivalent" endpoint (None: fal's default, which allows it)."""
        endpoint = EndpointId.of(endpoint_id)
        headers = request_headers(store_io=store_io, lifecycle=lifecycle, allow_fallbacks=allow_fallbacks)
        params: dict[str, str | list[str]] = {}
        if webhook_url is not None:
            # A query parameter, never a body field: fal ignores a webhook put in the input.
            params["fal_webhook"] = webhook_url
        if max_queue_length is not None:
            if max_queue_length < 0:
                raise ValueError(f"max_queue_length must be >= 0, got {max_queue_length}")
            params["fal_max_queue_length"] = str(max_queue_length)
        if priority is not None:
            headers["X-Fal-Queue-Priority"] = priority
        if start_timeout is not None:
            if not start_timeout > MIN_START_TIMEOUT_S:
                raise ValueError(f"start_timeout must be > {MIN_START_TIMEOUT_S} s, got {start_timeout}")
            headers["X-Fal-Request-Timeout"] = str(start_timeout)
        if runner_hint is not None:
            headers["X-Fal-Runner-Hint"] = runner_hint

        response = self._http.request(
            "POST",
            f"{self._settings.queue_url.rstrip('/')}/{endpoint.submit_path}",
            idempotent=False,
            headers=headers,
            params=params,
            json=dict(input),
        )
        return Submission.model_validate(response.json())

    def status(self, status_url: str, *, logs: bool = False) -> QueueStatus:
        """Poll the stored ``status_url`` (202 while queued or running, 200 once done)."""
        url = httpx.URL(self._checked(status_url))
        if logs:
            # Merge rather than pass params=: httpx would replace a query the stored URL carries.
            url = url.copy_merge_params({"logs": "1"})
        response = self._http.request("GET", url, idempotent=True)
        return QueueStatus.model_validate(response.json())

    def result(self, response_url: str) -> dict[str, Any]:
        """The model's output. A failed request answers with the model's own status and body,
        which is raised as the matching ``FalError`` (e.g. ``FalValidationError`` for 422)."""
        response = self._http.request("GET", self._checked(response_url), idempotent=True)
        body = response.json()
        if not isinstance(body, dict):
            raise FalError(
                f"fal result is a JSON {type(body).__name__}, not an object",
                status=response.status_code,
                detail=body,
                request_id=response.headers.get("x-fal-request-id"),
            )
        return body

    def served_from(self, response_url: str) -> str | None:
        """The endpoint that actually ran the request, as the result's ``X-Fal-Served-From``
        header reports it (None when fal sends none). Costs one result read."""
        response = self._http.request("GET", self._checked(response_url), idempotent=True)
        served: str | None = response.headers.get(SERVED_FROM_HEADER)
        return served

    def run(
        self,
        endpoint_id: str | EndpointId,
        input: Mapping[str, Any],
        *,
        store_io: bool | None = None,
        lifecycle: OutputLifecycle | None = None,
        allow_fallbacks: bool | None = None,
    ) -> tuple[dict[str, Any], str | None]:
        """One synchronous call on ``fal.run``: the output and the endpoint that served it. No
        queue, no webhook, no server-side retry; like a submit, it is never re-sent once sent."""
        endpoint = EndpointId.of(endpoint_id)
        response = self._http.request(
            "POST",
            f"{self._settings.run_url.rstrip('/')}/{endpoint.submit_path}",
            idempotent=False,
            headers=request_headers(store_io=store_io, lifecycle=lifecycle, allow_fallbacks=allow_fallbacks),
            json=dict(input),
        )
        body = response.json()
        if not isinstance(body, dict):
            raise FalError(f"fal output is a JSON {type(body).__name__}, not an object", detail=body)
        return body, response.headers.get(SERVED_FROM_HEADER)

    def cancel(self, cancel_url: str) -> CancelOutcome:
        """Ask fal to cancel. A running request only gets a signal and may still finish (and bill)."""
        response = self._http.request(
            "PUT", self._checked(cancel_url), idempotent=True, expected=_CANCEL_OUTCOMES.keys()
        )
        return _CANCEL_OUTCOMES.get(response.status_code, CancelOutcome.CANCELLATION_REQUESTED)

    def urls_for(self, endpoint_id: str | EndpointId, request_id: str) -> QueueUrls:
        """Build a request's URLs from the app path (no subpath). Prefer the URLs submit returned."""
        endpoint = EndpointId.of(endpoint_id)
        if not request_id:
            raise ValueError("request_id must not be empty")
        app_url = f"{self._settings.queue_url.rstrip('/')}/{endpoint.app_path}"
        base = f"{app_url}/requests/{quote(request_id, safe='')}"
        return QueueUrls(status_url=f"{base}/status", response_url=base, cancel_url=f"{base}/cancel")

    def _checked(self, url: str) -> str:
        # Stored URLs get the API key attached; refuse to send it anywhere but fal's queue hosts.
        origin = origin_of(url)
        if origin not in self._queue_origins:
            raise ValueError(f"refusing to send the fal key to {origin}: not fal's queue host")
        return url


def request_headers(
    *, store_io: bool | None, lifecycle: OutputLifecycle | None, allow_fallbacks: bool | None
) -> dict[str, str]:
    """fal's platform headers for what a request may keep and where it may run."""
    headers: dict[str, str] = {}
    if store_io is False:
        headers["X-Fal-Store-IO"] = "0"
    preference = lifecycle.header() if lifecycle is not None else None
    if preference is not None:
        headers["X-Fal-Object-Lifecycle-Preference"] = preference
    if allow_fallbacks is False:
        headers.update(dict.fromkeys(DISABLE_FALLBACK_HEADERS, "true"))
    return headers
