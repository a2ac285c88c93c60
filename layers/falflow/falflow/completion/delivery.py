"""What fal tells us when a request ends: the webhook body (docs/fal-contract.md §3), parsed once.

``{request_id, gateway_request_id, status: "OK"|"ERROR", payload, error?, payload_error?}``. The
reconciler writes the same shape for a result it fetched itself, so the store reads one format. A
signed delivery with any other status is not a completion (``terminal`` is False): the webhook
notes it on the job and answers 2xx, so fal does not retry it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ConfigDict, ValidationError

from falflow.deferred import DeferredModel
from falflow.jobs import JobError

# Our own error types (fal's are kept as fal sends them).
RESULT_UNAVAILABLE = "result_unavailable"
FAL_ERROR = "fal_error"


TERMINAL_STATUSES = frozenset({"OK", "ERROR"})


class InvalidDeliveryError(ValueError):
    """A body that is not a fal completion (not JSON, or not the webhook's shape)."""


class FalDelivery(DeferredModel):
    model_config = ConfigDict(extra="allow")

    request_id: str | None = None
    gateway_request_id: str | None = None
    status: str
    payload: Any = None
    error: str | None = None
    error_type: str | None = None
    payload_error: str | None = None

    @classmethod
    def parse(cls, raw: bytes) -> FalDelivery:
        try:
            return cls.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as error:  # JSONDecodeError and UnicodeError are ValueErrors
            raise InvalidDeliveryError(f"not a fal completion body: {type(error).__name__}") from None

    @property
    def terminal(self) -> bool:
        """A completion (OK or ERROR); fal documents no other status for webhooks."""
        return self.status in TERMINAL_STATUSES

    @property
    def failed(self) -> bool:
        return self.status == "ERROR"

    @property
    def needs_fetch(self) -> bool:
        """fal could not put the payload in the webhook (``payload: null``): read the queue result."""
        return self.status == "OK" and self.payload is None

    def job_error(self) -> JobError:
        """fal's error, kept whole: its type where it names one, its message, the payload as detail."""
        return JobError(
            type=self.error_type or error_type_of(self.payload) or FAL_ERROR,
            message=self.error or "fal reported an error",
            detail=self.payload,
        )


def error_type_of(detail: Any) -> str | None:
    """The machine-readable type fal puts in an error body: ``error_type`` (infrastructure errors)
    or the first ``detail[].type`` (model validation errors)."""
    if not isinstance(detail, dict):
        return None
    if isinstance(detail.get("error_type"), str):
        return str(detail["error_type"])
    items = detail.get("detail")
    if (
        isinstance(items, list)
        and items
        and isinstance(items[0], dict)
        and isinstance(items[0].get("type"), str)
    ):
        return str(items[0]["type"])
    return None


def delivery_body(
    request_id: str,
    *,
    payload: Any = None,
    error: str | None = None,
    error_type: str | None = None,
    payload_error: str | None = None,
) -> bytes:
    """A completion body in the webhook's shape, for results the reconciler fetched itself."""
    body: dict[str, Any] = {
        "request_id": request_id,
        "status": "ERROR" if error else "OK",
        "payload": payload,
    }
    if error:
        body["error"] = error
    if error_type:
        body["error_type"] = error_type
    if payload_error:
        body["payload_error"] = payload_error
    return json.dumps(body, separators=(",", ":")).encode()
