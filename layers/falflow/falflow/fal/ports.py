"""The fal ports the domain code depends on, each listing only the methods the domain calls; the
httpx clients in this package implement them (and keep more methods, for the operator CLI), and unit
tests of the domain code pass small in-memory fakes instead."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, Protocol

# Types only: a port names the clients' types without importing them, so a function that uses only
# the queue does not load the platform client's models (its largest module) at cold start.
if TYPE_CHECKING:
    from falflow.fal.endpoints import EndpointId
    from falflow.fal.platform import (
        AccountBilling,
        AnalyticsReport,
        BillingEvent,
        ComputeInstance,
        ModelInfo,
        PayloadDeletion,
        Price,
        RequestHistoryItem,
        TimeBound,
        Timeframe,
        UsageReport,
    )
    from falflow.fal.queue import (
        CancelOutcome,
        OutputLifecycle,
        QueuePriority,
        QueueStatus,
        QueueUrls,
        Submission,
    )


class FalQueue(Protocol):
    def submit(
        self,
        endpoint_id: str | EndpointId,
        input: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        priority: QueuePriority | None = None,
        start_timeout: float | None = None,
        runner_hint: str | None = None,
        store_io: bool | None = None,
        max_queue_length: int | None = None,
        lifecycle: OutputLifecycle | None = None,
        allow_fallbacks: bool | None = None,
    ) -> Submission: ...

    def status(self, status_url: str, *, logs: bool = False) -> QueueStatus: ...

    def result(self, response_url: str) -> dict[str, Any]: ...

    def served_from(self, response_url: str) -> str | None: ...

    def cancel(self, cancel_url: str) -> CancelOutcome: ...

    def urls_for(self, endpoint_id: str | EndpointId, request_id: str) -> QueueUrls: ...


class FalPlatform(Protocol):
    """The part of the Platform API the collect function calls (the operator CLI holds the client)."""

    def account_billing(self) -> AccountBilling: ...

    def pricing(self, endpoint_ids: Sequence[str]) -> list[Price]: ...

    def usage(
        self,
        start: TimeBound,
        end: TimeBound,
        *,
        endpoint_ids: Sequence[str] | None = None,
        timeframe: Timeframe | None = None,
        bound_to_timeframe: bool | None = None,
        expand: Sequence[str] = ("time_series",),
    ) -> UsageReport: ...

    def iter_billing_events(
        self,
        start: TimeBound,
        end: TimeBound,
        *,
        endpoint_ids: Sequence[str] | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> Iterator[BillingEvent]: ...

    def iter_models(
        self,
        q: str | None = None,
        *,
        category: str | None = None,
        status: Literal["active", "deprecated"] | None = None,
        endpoint_ids: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[ModelInfo]: ...

    def analytics(
        self,
        endpoint_ids: Sequence[str],
        start: TimeBound,
        end: TimeBound,
        *,
        timeframe: Timeframe | None = None,
        bound_to_timeframe: bool | None = None,
        metrics: Sequence[str] = ...,  # the client's DEFAULT_ANALYTICS_METRICS
        expand: Sequence[str] = ("time_series",),
    ) -> AnalyticsReport: ...

    def iter_compute_instances(self) -> Iterator[ComputeInstance]: ...


class FalAccount(Protocol):
    """The account's credit balance (the Platform API with the ADMIN key), for spend control."""

    def account_billing(self) -> AccountBilling: ...


class FalRequestPayloads(Protocol):
    """Deleting what fal keeps of a request (the Platform API with the ADMIN key)."""

    def delete_request_payloads(self, request_id: str, *, idempotency_key: str) -> PayloadDeletion: ...


class FalRequestHistory(Protocol):
    """The Platform API's request history, where the submit path looks for a request whose reply
    was lost (docs/adr/0017-a-lost-submit-reply-is-looked-up-in-fals-request-history.md)."""

    def iter_requests(
        self,
        endpoint_ids: Sequence[str],
        *,
        start: TimeBound | None = None,
        end: TimeBound | None = None,
        status: Literal["success", "error", "user_error"] | None = None,
        request_id: str | None = None,
        payloads: bool = False,
        page_size: int | None = None,
    ) -> Iterator[RequestHistoryItem]: ...


class FalStorage(Protocol):
    def upload(
        self,
        source: bytes | BinaryIO,
        *,
        content_type: str,
        file_name: str | None = None,
        size: int | None = None,
    ) -> str: ...
