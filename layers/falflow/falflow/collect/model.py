"""What the collector produces: rows of usage, analytics, prices and the catalogue, and the
report of one run. Rows are flat so their JSON lines read straight into Athena."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import ConfigDict, Field

from falflow.catalogue import CatalogueStatus, catalogue_status
from falflow.deferred import DeferredModel
from falflow.fal.platform import AnalyticsReport, ModelInfo, Price, UsageLineItem, UsageReport
from falflow.jobs import isoformat

# ------------------------------------------------------------------------------------------ time


def parse_instant(value: str) -> datetime:
    """An ISO 8601 timestamp from fal (``Z`` or an offset) as an aware UTC datetime."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:  # fal documents UTC for every timestamp it returns
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def run_id_for(moment: datetime) -> str:
    """A run's id: its start time to the microsecond, so no two runs share a snapshot object."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def day_of(timestamp: str) -> date:
    return parse_instant(timestamp).date()


# ------------------------------------------------------------------------------------------ rows


class _Row(DeferredModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UsageRow(_Row):
    """fal's usage of one endpoint and unit in one time bucket, as fal reports it now."""

    bucket: str  # start of the bucket, UTC, `isoformat`
    endpoint_id: str
    unit: str
    quantity: float
    unit_price: float | None = None
    cost_subtotal: float | None = None
    cost_discount: float | None = None
    cost_total: float | None = None
    currency: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.bucket, self.endpoint_id, self.unit)


class AnalyticsRow(DeferredModel):
    """One endpoint's request counts and latency percentiles in one bucket (metrics as fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    bucket: str
    endpoint_id: str

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PriceRow(_Row):
    endpoint_id: str
    unit_price: float
    unit: str
    currency: str


class CatalogueEntry(_Row):
    endpoint_id: str
    status: CatalogueStatus
    fal_status: str | None = None
    display_name: str | None = None
    category: str | None = None
    kind: str | None = None


def add_exact(a: float | None, b: float | None) -> float | None:
    """a + b in decimal (through repr), so sums of money do not grow binary noise; None is absent."""
    if a is None or b is None:
        return a if b is None else b
    return float(Decimal(repr(a)) + Decimal(repr(b)))


def _line_total(item: UsageLineItem) -> float | None:
    return item.cost_total if item.cost_total is not None else item.cost


def usage_rows(report: UsageReport) -> list[UsageRow]:
    """One row per (bucket, endpoint, unit); line items fal splits further are summed."""
    rows: dict[tuple[str, str, str], UsageRow] = {}
    for bucket in report.time_series:
        at = isoformat(parse_instant(bucket.bucket))
        for item in bucket.results:
            row = UsageRow(
                bucket=at,
                endpoint_id=item.endpoint_id,
                unit=item.unit or "",
                quantity=item.quantity or 0.0,
                unit_price=item.unit_price,
                cost_subtotal=item.cost_subtotal,
                cost_discount=item.cost_discount,
                cost_total=_line_total(item),
                currency=item.currency,
            )
            seen = rows.get(row.key)
            if seen is not None:
                row = seen.model_copy(
                    update={
                        "quantity": add_exact(seen.quantity, row.quantity),
                        "cost_subtotal": add_exact(seen.cost_subtotal, row.cost_subtotal),
                        "cost_discount": add_exact(seen.cost_discount, row.cost_discount),
                        "cost_total": add_exact(seen.cost_total, row.cost_total),
                        "unit_price": seen.unit_price if seen.unit_price == row.unit_price else None,
                    }
                )
            rows[row.key] = row
    return list(rows.values())


def analytics_rows(report: AnalyticsReport) -> list[AnalyticsRow]:
    rows: dict[tuple[str, str], AnalyticsRow] = {}
    for bucket in report.time_series:
        at = isoformat(parse_instant(bucket.bucket))
        for result in bucket.results:
            metrics = result.model_dump(exclude_none=True, exclude={"endpoint_id"})
            # A bucket split across pages repeats an endpoint with the rest of its metrics.
            previous = rows.get((at, result.endpoint_id))
            merged = {**(previous.metrics if previous else {}), **metrics}
            rows[(at, result.endpoint_id)] = AnalyticsRow(bucket=at, endpoint_id=result.endpoint_id, **merged)
    return list(rows.values())


def price_rows(prices: Iterable[Price]) -> list[PriceRow]:
    return [
        PriceRow(endpoint_id=p.endpoint_id, unit_price=p.unit_price, unit=p.unit, currency=p.currency)
        for p in prices
    ]


def catalogue_entries(models: Iterable[ModelInfo]) -> list[CatalogueEntry]:
    """The listing as catalogue entries, one per endpoint id (a repeat across pages counts once)."""
    entries: dict[str, CatalogueEntry] = {}
    for model in models:
        meta = model.metadata
        fal_status = meta.status if meta else None
        entries[model.endpoint_id] = CatalogueEntry(
            endpoint_id=model.endpoint_id,
            status=catalogue_status(fal_status),
            fal_status=fal_status,
            display_name=meta.display_name if meta else None,
            category=meta.category if meta else None,
            kind=meta.kind if meta else None,
        )
    return list(entries.values())


# ------------------------------------------------------------------------------------------ runs


class Outcome(StrEnum):
    OK = "ok"
    SKIPPED = "skipped"  # a known permission gap: no ADMIN key, or fal answered 403
    FAILED = "failed"


class PartResult(DeferredModel):
    name: str
    outcome: Outcome
    detail: str = ""
    counts: dict[str, float] = Field(default_factory=dict)
    # Permission gaps met inside a part that otherwise ran (costs without billing events).
    gaps: list[str] = Field(default_factory=list)


class RunRecord(DeferredModel):
    run_id: str
    started_at: str
    finished_at: str
    failed: bool
    parts: list[PartResult]


class CollectReport(DeferredModel):
    run_id: str
    started_at: datetime
    finished_at: datetime
    parts: list[PartResult]

    def part(self, name: str) -> PartResult:
        return next(p for p in self.parts if p.name == name)

    @property
    def failed(self) -> list[PartResult]:
        return [p for p in self.parts if p.outcome is Outcome.FAILED]

    @property
    def duration(self) -> timedelta:
        return self.finished_at - self.started_at

    def record(self) -> RunRecord:
        return RunRecord(
            run_id=self.run_id,
            started_at=isoformat(self.started_at),
            finished_at=isoformat(self.finished_at),
            failed=bool(self.failed),
            parts=self.parts,
        )

    def summary(self) -> dict[str, Any]:
        """What the handler returns and logs: each part's outcome and counts, nothing secret."""
        return {
            "run_id": self.run_id,
            "failed": [p.name for p in self.failed],
            "parts": {p.name: p.model_dump(mode="json", exclude={"name"}) for p in self.parts},
        }
