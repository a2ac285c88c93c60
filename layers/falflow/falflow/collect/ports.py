"""The collect function's ports: fal's Platform API, its state in the usage table, snapshots,
logs and metrics. Adapters: `FalPlatformClient`, `DynamoUsageTable`, `S3SnapshotSink`, a
Powertools Logger and Metrics; unit tests pass in-memory fakes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any, Protocol

from falflow.collect.model import AnalyticsRow, CatalogueEntry, PriceRow, RunRecord, UsageRow
from falflow.fal.platform import ComputeInstance


class Watermarks(Protocol):
    """How far each windowed part has collected; a mark only ever moves forward."""

    def get(self, name: str) -> datetime | None: ...

    def advance(self, name: str, to: datetime, *, run_id: str) -> bool:
        """Move the mark to `to` unless it already is there or later; True when it moved."""
        ...


class EndpointRegistry(Protocol):
    """Every fal endpoint falflow has sent a job to, kept across runs."""

    def record_used(self, last_used: Mapping[str, datetime]) -> None: ...

    def used_endpoints(self) -> list[str]: ...


class Aggregates(Protocol):
    """The current figures in the usage table; every write is keyed, so writing again overwrites."""

    def put_usage(self, rows: Sequence[UsageRow]) -> None: ...

    def put_analytics(self, rows: Sequence[AnalyticsRow]) -> None: ...

    def put_prices(self, rows: Sequence[PriceRow]) -> None: ...

    def stored_prices(self) -> dict[str, PriceRow]: ...

    def replace_catalogue(self, entries: Iterable[CatalogueEntry], *, taken_at: datetime) -> int:
        """Make the catalogue exactly `entries`, then mark the snapshot; returns items changed."""
        ...

    def replace_compute_instances(self, instances: Sequence[ComputeInstance]) -> None: ...

    def put_run(self, record: RunRecord) -> None: ...


class SnapshotSink(Protocol):
    def write(self, kind: str, day: date, run_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
        """Store `rows` as one JSON-lines object of partition `kind`/`day`; returns its key."""
        ...


class Log(Protocol):
    """What the collector logs through: a stdlib logger or a Powertools Logger."""

    def info(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None: ...

    def warning(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None: ...

    def error(self, msg: object, *args: object, extra: Mapping[str, object] | None = None) -> None: ...


class MetricsSink(Protocol):
    """Powertools `Metrics` (or a recorder in tests)."""

    def add_metric(self, name: str, unit: str, value: float) -> None: ...
