"""In-memory stand-ins for the collector's ports: fal's Platform API, the usage table, S3."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from falflow.collect.model import AnalyticsRow, CatalogueEntry, PriceRow, RunRecord, UsageRow
from falflow.fal.errors import FalPlatformError
from falflow.fal.platform import (
    DEFAULT_ANALYTICS_METRICS,
    AccountBilling,
    AnalyticsBucket,
    AnalyticsReport,
    AnalyticsResult,
    BillingEvent,
    ComputeInstance,
    CostEstimate,
    Credits,
    ModelInfo,
    Price,
    TimeBound,
    Timeframe,
    UsageBucket,
    UsageLineItem,
    UsageReport,
)


def _instant(value: TimeBound) -> datetime:
    assert isinstance(value, datetime)
    return value


@dataclass
class FakePlatform:
    """fal's Platform API over in-memory data; `errors[method]` is raised instead of answering.

    Usage is kept per hourly bucket as fal's *current* figure: a test raises a bucket's quantity
    between runs the way fal's counters grow, and the collector must overwrite, not add.
    """

    models: list[ModelInfo] = field(default_factory=list)
    prices: dict[str, Price] = field(default_factory=dict)
    usage_buckets: dict[datetime, list[UsageLineItem]] = field(default_factory=dict)
    billing_events: list[BillingEvent] = field(default_factory=list)
    analytics_buckets: dict[datetime, list[AnalyticsResult]] = field(default_factory=dict)
    instances: list[ComputeInstance] = field(default_factory=list)
    balance_usd: float = 42.5
    errors: dict[str, Exception] = field(default_factory=dict)
    unknown_to_analytics: set[str] = field(default_factory=set)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _call(self, method: str, **arguments: Any) -> None:
        self.calls.append((method, arguments))
        if method in self.errors:
            raise self.errors[method]

    def called(self, method: str) -> list[dict[str, Any]]:
        return [arguments for name, arguments in self.calls if name == method]

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
        self._call("iter_models")
        yield from self.models

    def pricing(self, endpoint_ids: Sequence[str]) -> list[Price]:
        self._call("pricing", endpoint_ids=list(endpoint_ids))
        unknown = [e for e in endpoint_ids if e not in self.prices]
        if unknown:  # as fal's emulator does: one unknown id refuses the whole request
            raise FalPlatformError(
                f"Unknown endpoint_id: {', '.join(unknown)}", status=404, error_type="not_found"
            )
        return [self.prices[e] for e in endpoint_ids]

    def estimate_cost(
        self,
        *,
        call_quantities: Mapping[str, int] | None = None,
        unit_quantities: Mapping[str, float] | None = None,
    ) -> CostEstimate:
        raise AssertionError("the collector estimates from unit prices itself")

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
        self._call("usage", start=start, end=end, timeframe=timeframe, bound_to_timeframe=bound_to_timeframe)
        lo, hi = _instant(start), _instant(end)
        return UsageReport(
            time_series=[
                UsageBucket(bucket=at.isoformat(), results=items)
                for at, items in sorted(self.usage_buckets.items())
                if lo <= at < hi
            ]
        )

    def iter_billing_events(
        self,
        start: TimeBound,
        end: TimeBound,
        *,
        endpoint_ids: Sequence[str] | None = None,
        request_ids: Sequence[str] | None = None,
    ) -> Iterator[BillingEvent]:
        self._call("iter_billing_events", start=start, end=end, request_ids=list(request_ids or []))
        lo, hi = _instant(start), _instant(end)
        for event in self.billing_events:
            at = datetime.fromisoformat(event.timestamp)
            if lo <= at < hi and (request_ids is None or event.request_id in request_ids):
                yield event

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
        self._call("analytics", endpoint_ids=list(endpoint_ids), start=start, end=end, metrics=list(metrics))
        unknown = [e for e in endpoint_ids if e in self.unknown_to_analytics]
        if unknown:
            raise FalPlatformError(f"Unknown endpoint_id: {', '.join(unknown)}", status=400)
        lo, hi = _instant(start), _instant(end)
        return AnalyticsReport(
            time_series=[
                AnalyticsBucket(
                    bucket=at.isoformat(), results=[r for r in results if r.endpoint_id in endpoint_ids]
                )
                for at, results in sorted(self.analytics_buckets.items())
                if lo <= at < hi
            ]
        )

    def iter_compute_instances(self) -> Iterator[ComputeInstance]:
        self._call("iter_compute_instances")
        yield from self.instances

    def account_billing(self) -> AccountBilling:
        self._call("account_billing")
        return AccountBilling(
            username="me", credits=Credits(current_balance=self.balance_usd, currency="USD")
        )


@dataclass
class MemoryUsageTable:
    """`Watermarks`, `EndpointRegistry` and `Aggregates` in dicts, keyed like the DynamoDB adapter."""

    marks: dict[str, datetime] = field(default_factory=dict)
    endpoints: dict[str, datetime] = field(default_factory=dict)
    usage: dict[tuple[str, str, str], UsageRow] = field(default_factory=dict)
    analytics: dict[tuple[str, str], AnalyticsRow] = field(default_factory=dict)
    prices: dict[str, PriceRow] = field(default_factory=dict)
    catalogue: dict[str, CatalogueEntry] = field(default_factory=dict)
    catalogue_taken_at: datetime | None = None
    compute: dict[str, ComputeInstance] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    errors: dict[str, Exception] = field(default_factory=dict)

    def _check(self, method: str) -> None:
        if method in self.errors:
            raise self.errors[method]

    def get(self, name: str) -> datetime | None:
        return self.marks.get(name)

    def advance(self, name: str, to: datetime, *, run_id: str) -> bool:
        self._check("advance")
        if name in self.marks and self.marks[name] >= to:
            return False
        self.marks[name] = to
        return True

    def record_used(self, last_used: Mapping[str, datetime]) -> None:
        for endpoint_id, at in last_used.items():
            self.endpoints[endpoint_id] = max(at, self.endpoints.get(endpoint_id, at))

    def used_endpoints(self) -> list[str]:
        self._check("used_endpoints")
        return list(self.endpoints)

    def put_usage(self, rows: Sequence[UsageRow]) -> None:
        self._check("put_usage")
        self.usage.update({row.key: row for row in rows})

    def put_analytics(self, rows: Sequence[AnalyticsRow]) -> None:
        self.analytics.update({(row.bucket, row.endpoint_id): row for row in rows})

    def put_prices(self, rows: Sequence[PriceRow]) -> None:
        self.prices.update({row.endpoint_id: row for row in rows})

    def stored_prices(self) -> dict[str, PriceRow]:
        return dict(self.prices)

    def replace_catalogue(self, entries: Iterable[CatalogueEntry], *, taken_at: datetime) -> int:
        wanted = {entry.endpoint_id: entry for entry in entries}
        if not wanted:
            raise ValueError("refusing to replace the model catalogue with an empty listing")
        changed = sum(1 for k, v in wanted.items() if self.catalogue.get(k) != v)
        changed += sum(1 for k in self.catalogue if k not in wanted)
        self.catalogue, self.catalogue_taken_at = wanted, taken_at
        return changed

    def replace_compute_instances(self, instances: Sequence[ComputeInstance]) -> None:
        self.compute = {instance.id: instance for instance in instances}

    def put_run(self, record: RunRecord) -> None:
        self._check("put_run")
        self.runs.append(record)


@dataclass
class MemorySnapshots:
    objects: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def write(self, kind: str, day: date, run_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
        key = f"{kind}/date={day.isoformat()}/run={run_id}.jsonl"
        self.objects[key] = [dict(row) for row in rows]
        return key

    def rows(self, kind: str) -> list[dict[str, Any]]:
        return [
            row for key, rows in sorted(self.objects.items()) if key.startswith(f"{kind}/") for row in rows
        ]


@dataclass
class Recorded:
    level: str
    message: str
    extra: Mapping[str, object] | None


@dataclass
class RecordingLog:
    records: list[Recorded] = field(default_factory=list)

    def info(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None:
        self.records.append(Recorded("INFO", str(msg), extra))

    def warning(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None:
        self.records.append(Recorded("WARNING", str(msg), extra))

    def error(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None:
        self.records.append(Recorded("ERROR", str(msg), extra))

    def at(self, level: str) -> list[str]:
        return [r.message for r in self.records if r.level == level]


@dataclass
class RecordingMetrics:
    values: dict[str, float] = field(default_factory=dict)

    def add_metric(self, name: str, unit: str, value: float) -> None:
        self.values[name] = self.values.get(name, 0) + value
