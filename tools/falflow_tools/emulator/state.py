"""What the emulator knows: its jobs, the requests it received and the webhooks it sent.

All of it lives on the server's event loop and is only touched from there. The pydantic records
are also the JSON of the ``/_emulator`` inspection endpoints and what ``EmulatorControl`` returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from falflow_tools.emulator.acl import Lifecycle
from falflow_tools.emulator.catalogue import JSON, ModelSpec
from falflow_tools.emulator.endpoints import EndpointId
from falflow_tools.emulator.media import MediaFile
from falflow_tools.emulator.usage import costs

JobStatus = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
Priority = Literal["normal", "low"]
KeyKind = Literal["none", "api", "admin", "cdn_token", "invalid"]
DeliveryOutcome = Literal["delivered", "http_error", "timeout", "connection_error", "dropped"]


class RequestRecord(BaseModel):
    """One HTTP request the emulator received (the key itself is never recorded)."""

    at: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    key_kind: KeyKind
    body: Any = None
    group: str | None = None
    fault: str | None = None
    status_code: int | None = None


class WebhookAttempt(BaseModel):
    """One attempt to deliver a webhook, or the record that it was dropped."""

    request_id: str
    url: str
    delivery: Literal["original", "duplicate"]
    attempt: int
    at: float
    outcome: DeliveryOutcome
    status_code: int | None = None
    payload_status: Literal["OK", "ERROR"]
    payload_error: bool = False
    signing_kid: str | None = None
    error: str | None = None


class JobView(BaseModel):
    request_id: str
    gateway_request_id: str
    endpoint_id: str
    status: JobStatus
    sync: bool
    priority: Priority
    webhook_url: str | None
    submitted_at: float
    started_at: float | None
    completed_at: float | None
    result_status: int | None
    error: str | None
    error_type: str | None
    cancel_requested: bool
    billed_units: float
    store_io: bool
    fallbacks_allowed: bool
    served_from: str
    payloads_deleted: bool
    lifecycle: dict[str, Any]
    deliveries: list[WebhookAttempt]


class ServedFile(BaseModel):
    """An output file of a job as the CDN serves it: the ground truth a stored copy is checked against."""

    request_id: str
    name: str
    content_type: str
    size: int
    sha256: str


class Stats(BaseModel):
    jobs: int
    pending_jobs: int
    pending_webhooks: int
    requests: int

    @property
    def idle(self) -> bool:
        return self.pending_jobs == 0 and self.pending_webhooks == 0


@dataclass
class Outcome:
    """How a request ended: what its result URL answers, and what it bills."""

    status_code: int
    body: JSON
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    billed_units: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status_code < 300


def utc_iso(timestamp: float) -> str:
    """ISO8601 in UTC with a ``Z``, as fal writes timestamps."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


_sequence = itertools.count()


@dataclass(eq=False)
class Job:
    request_id: str
    gateway_request_id: str
    endpoint: EndpointId
    model: ModelSpec
    payload: Any
    api_key_id: str
    webhook_url: str | None = None
    priority: Priority = "normal"
    start_timeout_s: float | None = None
    store_io: bool = True
    runner_hint: str | None = None
    # ACL and expiry its output files get (the request's lifecycle preference or the account's).
    file_lifecycle: Lifecycle = field(default_factory=Lifecycle)
    payloads_deleted: bool = False  # DELETE /v1/models/requests/{id}/payloads
    fallbacks_allowed: bool = True
    served_from: str | None = None  # the endpoint that ran it (differs after a model fallback)
    sync: bool = False
    submitted_at: float = field(default_factory=time.time)
    seq: int = field(default_factory=lambda: next(_sequence))
    status: JobStatus = "IN_QUEUE"
    started_at: float | None = None
    completed_at: float | None = None
    logs: list[JSON] = field(default_factory=list)
    outcome: Outcome | None = None
    files: dict[str, MediaFile] = field(default_factory=dict)
    cancel_requested: bool = False
    result_expires_at: float | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def queue_key(self) -> tuple[int, int]:
        """Order in the app's queue: every normal request goes before any low-priority one."""
        return (0 if self.priority == "normal" else 1, self.seq)

    def billed_costs(self, percent_discount: float | None) -> dict[str, float]:
        """The cost fields of its billing event (all zero until it has billed units)."""
        units = self.outcome.billed_units if self.outcome is not None else 0.0
        return costs(units, self.model.unit_price, percent_discount)

    def log(self, message: str, level: str = "INFO") -> None:
        self.logs.append(
            {"message": message, "level": level, "source": "USER", "timestamp": utc_iso(time.time())}
        )

    def view(self, deliveries: list[WebhookAttempt]) -> JobView:
        outcome = self.outcome
        return JobView(
            request_id=self.request_id,
            gateway_request_id=self.gateway_request_id,
            endpoint_id=str(self.endpoint),
            status=self.status,
            sync=self.sync,
            priority=self.priority,
            webhook_url=self.webhook_url,
            submitted_at=self.submitted_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            result_status=outcome.status_code if outcome else None,
            error=outcome.error if outcome else None,
            error_type=outcome.error_type if outcome else None,
            cancel_requested=self.cancel_requested,
            billed_units=outcome.billed_units if outcome else 0.0,
            store_io=self.store_io,
            fallbacks_allowed=self.fallbacks_allowed,
            served_from=self.served_from or str(self.endpoint),
            payloads_deleted=self.payloads_deleted,
            lifecycle=self.file_lifecycle.model_dump(exclude_none=True),
            deliveries=deliveries,
        )


class EmulatorState:
    def __init__(self, request_log_limit: int) -> None:
        self.jobs: dict[str, Job] = {}
        self.requests: deque[RequestRecord] = deque(maxlen=request_log_limit)
        self.webhook_attempts: list[WebhookAttempt] = []

    def clear(self) -> None:
        self.jobs.clear()
        self.requests.clear()
        self.webhook_attempts.clear()

    def job_views(self) -> list[JobView]:
        by_request: dict[str, list[WebhookAttempt]] = {}
        for attempt in self.webhook_attempts:
            by_request.setdefault(attempt.request_id, []).append(attempt)
        return [job.view(by_request.get(job.request_id, [])) for job in self.jobs.values()]

    def served_files(self) -> list[ServedFile]:
        """Every job's output files with their digests (computed by producing their bytes again)."""
        served = []
        for job in self.jobs.values():
            for media in job.files.values():
                digest = hashlib.sha256()
                for chunk in media.chunks():
                    digest.update(chunk)
                served.append(
                    ServedFile(
                        request_id=job.request_id,
                        name=media.name,
                        content_type=media.content_type,
                        size=media.size,
                        sha256=digest.hexdigest(),
                    )
                )
        return served
