"""fal's Platform API (``{api_url}`` = ``https://api.fal.ai/v1``): models, pricing, usage, billing,
request history.

Shapes follow fal's OpenAPI spec (``fal/platform-openapi.json``). Every list endpoint pages with
``limit``/``cursor`` → ``next_cursor``/``has_more``; iterators walk all pages lazily and reports
merge them. Usage, billing events, account billing and compute instances need an ADMIN key (the
caller's provider).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

from falflow.fal.errors import FalError
from falflow.fal.http import FalHttp, RetryPolicy
from falflow.fal.model import FalModel
from falflow.settings import FalSettings

Timeframe = Literal["minute", "hour", "day", "week", "month"]
TimeBound = datetime | date | str
Params = dict[str, str | list[str]]
# fal accepts 1-50 values per id filter.
MAX_IDS_PER_CALL = 50
# The analytics metrics falflow reads (GET /v1/models/analytics, in `expand`): the counts, and the
# latencies collect keeps and `falflow fal analytics` shows. The emulator keeps its own list, from
# the OpenAPI.
DEFAULT_ANALYTICS_METRICS = ("request_count", "success_count", "user_error_count", "error_count")
ANALYTICS_METRICS = (
    *DEFAULT_ANALYTICS_METRICS,
    "p50_duration",
    "p90_duration",
    "p99_duration",
    "p50_prepare_duration",
    "p90_prepare_duration",
)


class ModelMetadata(FalModel):
    display_name: str | None = None
    category: str | None = None
    description: str | None = None
    status: str | None = None
    tags: list[str] = Field(default_factory=list)
    updated_at: str | None = None
    thumbnail_url: str | None = None
    model_url: str | None = None
    license_type: str | None = None
    kind: str | None = None
    duration_estimate: float | None = None


class ModelInfo(FalModel):
    endpoint_id: str
    metadata: ModelMetadata | None = None
    # Present with expand=openapi-3.0 / enterprise_status; either may be an {"error": …} object.
    openapi: dict[str, Any] | None = None
    enterprise_status: str | dict[str, Any] | None = None


class Price(FalModel):
    endpoint_id: str
    unit_price: float
    unit: str
    currency: str


class CostEstimate(FalModel):
    estimate_type: str
    total_cost: float
    currency: str


class AuthMethodStructured(FalModel):
    detail: str
    api_key_id: str | None = None
    login_username: str | None = None


class UsageLineItem(FalModel):
    endpoint_id: str
    unit: str | None = None
    quantity: float | None = None
    unit_price: float | None = None
    percent_discount: float | None = None
    cost_subtotal: float | None = None
    cost_discount: float | None = None
    cost_total: float | None = None
    cost: float | None = None  # deprecated by fal in favour of cost_total; older replies have only this
    currency: str | None = None
    auth_method: str | None = None
    auth_method_structured: AuthMethodStructured | None = None


class UsageBucket(FalModel):
    bucket: str  # ISO 8601 with offset
    results: list[UsageLineItem] = Field(default_factory=list)


class UsageReport(FalModel):
    time_series: list[UsageBucket] = Field(default_factory=list)
    summary: list[UsageLineItem] = Field(default_factory=list)


class BillingEvent(FalModel):
    request_id: str
    endpoint_id: str
    timestamp: str
    output_units: float | None = None
    unit_price: float | None = None
    percent_discount: float | None = None
    cost_subtotal: float | None = None
    cost_discount: float | None = None
    cost_total: float | None = None
    cost_estimate_nano_usd: float | None = None
    auth_method: str | None = None
    auth_method_structured: AuthMethodStructured | None = None


class AnalyticsResult(FalModel):
    """Metrics of one endpoint; only the metrics asked for in ``expand`` are filled in."""

    endpoint_id: str
    request_count: int | None = None
    success_count: int | None = None
    user_error_count: int | None = None
    error_count: int | None = None
    startup_error_count: int | None = None
    connection_error_count: int | None = None
    timeout_error_count: int | None = None
    runtime_error_count: int | None = None
    cold_boot_count: int | None = None
    total_billable_duration: float | None = None
    # Latency percentiles (p50_duration, p90_prepare_duration, …) arrive as extra fields.


class AnalyticsBucket(FalModel):
    bucket: str
    results: list[AnalyticsResult] = Field(default_factory=list)


class AnalyticsReport(FalModel):
    time_series: list[AnalyticsBucket] = Field(default_factory=list)
    summary: list[AnalyticsResult] = Field(default_factory=list)


class ComputeInstance(FalModel):
    id: str
    instance_type: str
    region: str
    status: str
    sector: str | None = None
    ip: str | None = None
    creator_user_nickname: str | None = None


class Meta(FalModel):
    webhook_ip_ranges: list[str]


class Credits(FalModel):
    current_balance: float
    currency: str


class AccountBilling(FalModel):
    """``GET /account/billing``; ``credits`` only when expanded (``account_billing`` always asks)."""

    username: str
    credits: Credits | None = None


class PayloadDeletion(FalModel):
    """``DELETE /models/requests/{id}/payloads``: one line per output CDN file fal deleted."""

    cdn_delete_results: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [str(r.get("exception")) for r in self.cdn_delete_results if r.get("exception")]


# The longest a signed file URL may live (SPEC signStorageFileUrl: 7 days).
MAX_SIGNED_URL_SECONDS = 7 * 86400
RequestStatus = Literal["success", "error", "user_error"]


class RequestHistoryItem(FalModel):
    """One request of ``GET /models/requests/by-endpoint``; the payloads only with ``expand=payloads``
    and only where fal kept them (not for a request sent with ``X-Fal-Store-IO: 0``)."""

    request_id: str
    endpoint_id: str
    started_at: str
    sent_at: str
    ended_at: str | None = None
    status_code: int | None = None
    duration: float | None = None
    json_input: Any = None
    json_output: Any = None


class _Page(FalModel):
    next_cursor: str | None = None
    has_more: bool = False


class _ModelsPage(_Page):
    models: list[ModelInfo] = Field(default_factory=list)


class _PricesPage(_Page):
    prices: list[Price] = Field(default_factory=list)


class _UsagePage(_Page, UsageReport):
    pass


class _BillingEventsPage(_Page):
    billing_events: list[BillingEvent] = Field(default_factory=list)


class _AnalyticsPage(_Page, AnalyticsReport):
    pass


class _RequestsPage(_Page):
    items: list[RequestHistoryItem] = Field(default_factory=list)


class _InstancesPage(_Page):
    instances: list[ComputeInstance] = Field(default_factory=list)


class FalPlatformClient:
    def __init__(
        self,
        settings: FalSettings,
        api_key: Callable[[], str],
        http: httpx.Client | None = None,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._base = settings.api_url.rstrip("/")
        self._http = FalHttp(settings, api_key, http, retry)

    def iter_models(
        self,
        q: str | None = None,
        *,
        category: str | None = None,
        status: Literal["active", "deprecated"] | None = None,
        endpoint_ids: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[ModelInfo]:
        params = _params(
            q=q,
            category=category,
            status=status,
            endpoint_id=_ids("endpoint_ids", endpoint_ids),
            expand=list(expand) if expand else None,
            limit=str(page_size) if page_size is not None else None,
        )
        for page in self._pages("/models", params, _ModelsPage):
            yield from page.models

    def pricing(self, endpoint_ids: Sequence[str]) -> list[Price]:
        """Unit prices (possibly with account discounts), in batches of 50 ids, all pages."""
        prices: list[Price] = []
        for batch in _batches(endpoint_ids):
            for page in self._pages("/models/pricing", {"endpoint_id": batch}, _PricesPage):
                prices.extend(page.prices)
        return prices

    def estimate_cost(
        self,
        *,
        call_quantities: Mapping[str, int] | None = None,
        unit_quantities: Mapping[str, float] | None = None,
    ) -> CostEstimate:
        """Estimate from historical price per call (``call_quantities``) or from unit prices
        (``unit_quantities``); exactly one must be given."""
        if (call_quantities is None) == (unit_quantities is None):
            raise ValueError("give exactly one of call_quantities or unit_quantities")
        if call_quantities is not None:
            body: dict[str, Any] = {
                "estimate_type": "historical_api_price",
                "endpoints": {eid: {"call_quantity": n} for eid, n in call_quantities.items()},
            }
        else:
            assert unit_quantities is not None
            body = {
                "estimate_type": "unit_price",
                "endpoints": {eid: {"unit_quantity": x} for eid, x in unit_quantities.items()},
            }
        if not body["endpoints"]:
            raise ValueError("no endpoints to estimate")
        # A pure computation on fal's side, so retrying the POST is safe.
        response = self._http.request(
            "POST", f"{self._base}/models/pricing/estimate", idempotent=True, json=body
        )
        return CostEstimate.model_validate(response.json())

    def usage(
        self,
        start: TimeBound,
        end: TimeBound,
        *,
        endpoint_ids: Sequence[str] | None = None,
        timeframe: Timeframe | None = None,
        bound_to_timeframe: bool | None = None,
        expand: Sequence[str] = ("time_series",),
    ) -> UsageReport:
        """Usage line items between ``start`` and ``end`` (exclusive), all pages merged. ADMIN key."""
        params = _params(
            start=_iso(start),
            end=_iso(end),
            endpoint_id=_ids("endpoint_ids", endpoint_ids),
            timeframe=timeframe,
            bound_to_timeframe=_flag(bound_to_timeframe),
            expand=list(expand),
        )
        report = UsageReport()
        for page in self._pages("/models/usage", params, _UsagePage):
            report.time_series = _merge_buckets(report.time_series, page.time_series)
            report.summary.extend(page.summary)
        return report

    def iter_billing_events(
        self,
        start: TimeBound,
        end: TimeBound,
        *,
        endpoint_ids: Sequence[str] | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> Iterator[BillingEvent]:
        """Per-request cost records (at most 90 days per call), request ids in batches of 50. ADMIN key."""
        base = _params(start=_iso(start), end=_iso(end), endpoint_id=_ids("endpoint_ids", endpoint_ids))
        request_batches: list[list[str] | None] = list(_batches(request_ids)) if request_ids else [None]
        for batch in request_batches:
            params = {**base, **({"request_id": batch} if batch else {})}
            for page in self._pages("/models/billing-events", params, _BillingEventsPage):
                yield from page.billing_events

    def analytics(
        self,
        endpoint_ids: Sequence[str],
        start: TimeBound,
        end: TimeBound,
        *,
        timeframe: Timeframe | None = None,
        bound_to_timeframe: bool | None = None,
        metrics: Sequence[str] = DEFAULT_ANALYTICS_METRICS,
        expand: Sequence[str] = ("time_series",),
    ) -> AnalyticsReport:
        """Request counts, errors and latencies per endpoint; metrics and views both go in ``expand``."""
        ids = _ids("endpoint_ids", endpoint_ids)
        if not ids:
            raise ValueError("analytics needs at least one endpoint id")
        if not metrics:
            raise ValueError("analytics needs at least one metric")
        params = _params(
            endpoint_id=ids,
            start=_iso(start),
            end=_iso(end),
            timeframe=timeframe,
            bound_to_timeframe=_flag(bound_to_timeframe),
            expand=[*expand, *metrics],
        )
        report = AnalyticsReport()
        for page in self._pages("/models/analytics", params, _AnalyticsPage):
            report.time_series = _merge_buckets(report.time_series, page.time_series)
            report.summary.extend(page.summary)
        return report

    def iter_requests(
        self,
        endpoint_ids: Sequence[str],
        *,
        start: TimeBound | None = None,
        end: TimeBound | None = None,
        status: RequestStatus | None = None,
        request_id: str | None = None,
        payloads: bool = False,
        page_size: int | None = None,
    ) -> Iterator[RequestHistoryItem]:
        """The account's requests to ``endpoint_ids`` (1-50) sent in the window, all pages; fal's
        default window is the last 24 h (90 days with ``request_id``). Any API key."""
        ids = _ids("endpoint_ids", endpoint_ids)
        if not ids:
            raise ValueError("the request history needs at least one endpoint id")
        params = _params(
            endpoint_id=ids,
            start=_iso(start) if start is not None else None,
            end=_iso(end) if end is not None else None,
            status=status,
            request_id=request_id,
            expand=["payloads"] if payloads else None,
            limit=str(page_size) if page_size is not None else None,
        )
        for page in self._pages("/models/requests/by-endpoint", params, _RequestsPage):
            yield from page.items

    def iter_compute_instances(self) -> Iterator[ComputeInstance]:
        for page in self._pages("/compute/instances", {}, _InstancesPage):
            yield from page.instances

    def compute_instance(self, instance_id: str) -> ComputeInstance:
        response = self._http.request("GET", self._instance_url(instance_id), idempotent=True)
        return ComputeInstance.model_validate(response.json())

    def create_compute_instance(
        self, instance_type: str, ssh_key: str, *, sector: str | None = None, idempotency_key: str
    ) -> ComputeInstance:
        """Create an instance (it bills until deleted). The idempotency key makes a retry safe."""
        body = {"instance_type": instance_type, "ssh_key": ssh_key, **({"sector": sector} if sector else {})}
        response = self._http.request(
            "POST",
            f"{self._base}/compute/instances",
            idempotent=True,  # fal answers a repeated Idempotency-Key with the first reply
            headers={"Idempotency-Key": idempotency_key},
            json=body,
        )
        return ComputeInstance.model_validate(response.json())

    def delete_compute_instance(self, instance_id: str) -> None:
        self._http.request("DELETE", self._instance_url(instance_id), idempotent=True)

    def _instance_url(self, instance_id: str) -> str:
        if not instance_id:
            raise ValueError("instance id must not be empty")
        return f"{self._base}/compute/instances/{quote(instance_id, safe='')}"

    def sign_file_url(self, url: str, *, expiration_seconds: int) -> str:
        """A URL reading the fal CDN file ``url`` whatever its ACL, for ``expiration_seconds``."""
        if not 1 <= expiration_seconds <= MAX_SIGNED_URL_SECONDS:
            raise ValueError(f"expiration_seconds must be 1..{MAX_SIGNED_URL_SECONDS}")
        response = self._http.request(
            "POST",
            f"{self._base}/storage/files/sign",
            idempotent=True,
            params={"url": url},
            json={"expiration_seconds": expiration_seconds},
        )
        return str(response.json()["signed_url"])

    def delete_request_payloads(self, request_id: str, *, idempotency_key: str) -> PayloadDeletion:
        """Delete what fal keeps of a request: its input/output and its output CDN files (ADMIN)."""
        if not request_id:
            raise ValueError("request_id must not be empty")
        response = self._http.request(
            "DELETE",
            f"{self._base}/models/requests/{quote(request_id, safe='')}/payloads",
            idempotent=True,
            headers={"Idempotency-Key": idempotency_key},
        )
        return PayloadDeletion.model_validate(response.json())

    def meta(self) -> Meta:
        """fal's webhook source IP ranges; the endpoint needs no key, so none is sent."""
        response = self._http.request("GET", f"{self._base}/meta", idempotent=True, authorized=False)
        return Meta.model_validate(response.json())

    def account_billing(self) -> AccountBilling:
        """The account's username and credit balance (``expand=credits``). ADMIN key."""
        response = self._http.request(
            "GET", f"{self._base}/account/billing", idempotent=True, params={"expand": "credits"}
        )
        return AccountBilling.model_validate(response.json())

    def _pages[PageT: _Page](self, path: str, params: Params, page_type: type[PageT]) -> Iterator[PageT]:
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            query = {**params, "cursor": cursor} if cursor else params
            response = self._http.request("GET", f"{self._base}{path}", idempotent=True, params=query)
            page = page_type.model_validate(response.json())
            yield page
            if not page.has_more or not page.next_cursor:
                return
            # Bounded: a cursor fal already gave us would loop forever.
            if page.next_cursor in seen:
                raise FalError(f"fal repeated pagination cursor {page.next_cursor!r} on {path}")
            seen.add(page.next_cursor)
            cursor = page.next_cursor


def _params(**values: str | list[str] | None) -> Params:
    return {key: value for key, value in values.items() if value is not None}


def _ids(name: str, ids: Sequence[str] | None) -> list[str] | None:
    if ids is None:
        return None
    if isinstance(ids, str):
        raise TypeError(f"{name} must be a sequence of ids, not one string")
    if len(ids) > MAX_IDS_PER_CALL:
        raise ValueError(f"{name}: fal accepts at most {MAX_IDS_PER_CALL} ids, got {len(ids)}")
    return list(ids) or None


def _batches(ids: Sequence[str]) -> Iterator[list[str]]:
    if isinstance(ids, str):
        raise TypeError("expected a sequence of ids, not one string")
    for start in range(0, len(ids), MAX_IDS_PER_CALL):
        yield list(ids[start : start + MAX_IDS_PER_CALL])


def _iso(value: TimeBound) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("use a timezone-aware datetime: fal would read a naive one in its own zone")
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _flag(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


def _merge_buckets[BucketT: (UsageBucket, AnalyticsBucket)](
    merged: list[BucketT], page: list[BucketT]
) -> list[BucketT]:
    """Append a page's buckets; a bucket split across two pages becomes one."""
    by_key = {bucket.bucket: bucket for bucket in merged}
    for bucket in page:
        if bucket.bucket in by_key:
            by_key[bucket.bucket].results.extend(bucket.results)
        else:
            by_key[bucket.bucket] = bucket
            merged.append(bucket)
    return merged
