"""One collect run: fal usage, pricing, per-job cost, analytics, the model catalogue and compute
instances, each written to the usage table (current figures) and to S3 (snapshots).

Parts are independent: one failing does not stop the others. A part is
- ``ok``;
- ``skipped`` for a known permission gap — no ADMIN key configured or readable
  (`MissingSecretError`), or fal answering 403 — logged as a warning and counted as a metric,
  never failing the run (a stack without an ADMIN key is a supported setup);
- ``failed`` for anything else (fal 5xx/429 left after the client's retries, a bad API key (401),
  AWS errors, too little time left). The run then reports failure, after every other part ran,
  so the function's Errors alarm fires.

Watermarks and idempotency. Usage and analytics are read per hourly bucket from the part's
watermark minus an overlap (fal's latest buckets keep filling in) up to now, and each (bucket,
endpoint[, unit]) is written with a plain put of fal's current figure, so re-reading a bucket
overwrites it and nothing is ever added twice. A watermark moves only forward, and only after
the part's writes succeeded; a failed part is simply read again next run.

Endpoints falflow used are found from job records through the sharded ByStateShard index (never a table scan):
each run records the endpoints of jobs that reached fal since its last run in an endpoint
registry, and pricing and analytics cover every endpoint in that registry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from falflow.collect.costs import BILLABLE_STATES, billing_window, needs_cost, request_ids_of, settle_costs
from falflow.collect.model import (
    AnalyticsRow,
    CatalogueEntry,
    CollectReport,
    Outcome,
    PartResult,
    PriceRow,
    analytics_rows,
    catalogue_entries,
    day_of,
    floor_hour,
    price_rows,
    usage_rows,
)
from falflow.collect.ports import (
    Aggregates,
    EndpointRegistry,
    Log,
    MetricsSink,
    SnapshotSink,
    Watermarks,
)
from falflow.collect.settings import CollectSettings
from falflow.collect.snapshots import write_partitioned
from falflow.fal.errors import FalError
from falflow.fal.platform import ANALYTICS_METRICS, MAX_IDS_PER_CALL, BillingEvent
from falflow.fal.ports import FalPlatform
from falflow.jobs import Job, JobCost, JobState, JobStore, isoformat, utcnow
from falflow.secrets import MissingSecretError
from falflow.spend.gate import settle

PARTS = ("endpoints", "catalogue", "pricing", "usage", "analytics", "costs", "compute", "balance")
# Parts that need the ADMIN key.
ADMIN_PARTS = frozenset({"usage", "compute", "balance"})
# States a job that reached fal (it has a request id) can be in; its endpoint counts as used.
USED_STATES = (
    JobState.SUBMITTED,
    JobState.IN_PROGRESS,
    JobState.STORING,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
)
# How fal answers an id filter naming an endpoint it does not know.
UNKNOWN_ID_STATUSES = frozenset({400, 404})
NO_ADMIN_KEY = "no ADMIN key configured (FAL_ADMIN_KEY_SECRET_ID is empty)"


def permission_gap(error: BaseException, *, admin: bool) -> str | None:
    """Why `error` is a known permission gap rather than a fault; None when it is a fault."""
    if admin and isinstance(error, MissingSecretError):
        return f"no usable ADMIN key: {error}"
    if isinstance(error, FalError) and error.status == 403:
        return f"fal refused access (403{f' {error.error_type}' if error.error_type else ''})"
    return None


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def collection_window(
    mark: datetime | None,
    now: datetime,
    *,
    overlap: timedelta,
    initial_lookback: timedelta,
    max_window: timedelta,
) -> Window:
    """Whole hours from the mark (less the overlap), or the initial lookback, up to now."""
    start = floor_hour(min(mark - overlap if mark else now - initial_lookback, now))
    return Window(start=start, end=min(now, start + max_window))


def _batches(items: Sequence[str], size: int = MAX_IDS_PER_CALL) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


@dataclass
class _Progress:
    """What a part did so far; kept even when the part fails halfway."""

    counts: dict[str, float] = field(default_factory=dict)
    gaps: list[str] = field(default_factory=list)


@dataclass
class _Run:
    now: datetime
    run_id: str
    endpoints: list[str] | None = None
    candidates: list[Job] | None = None
    prices: dict[str, PriceRow] | None = None

    def stamp(self, row: dict[str, Any]) -> dict[str, Any]:
        """A snapshot row: the data plus which run collected it and when."""
        return {**row, "run_id": self.run_id, "collected_at": isoformat(self.now)}


class Collector:
    def __init__(
        self,
        *,
        platform: FalPlatform,
        admin_platform: FalPlatform | None,
        jobs: JobStore,
        watermarks: Watermarks,
        registry: EndpointRegistry,
        aggregates: Aggregates,
        snapshots: SnapshotSink,
        settings: CollectSettings,
        log: Log | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._platform = platform
        self._admin = admin_platform
        self._jobs = jobs
        self._watermarks = watermarks
        self._registry = registry
        self._aggregates = aggregates
        self._snapshots = snapshots
        self._settings = settings
        self._job_metrics = settings.job_metrics()
        self._log: Log = log or logging.getLogger(__name__)
        self._clock = clock

    def run(
        self,
        *,
        run_id: str,
        now: datetime | None = None,
        time_left: Callable[[], float] = lambda: math.inf,
    ) -> CollectReport:
        started = now or self._clock()
        run = _Run(now=started, run_id=run_id)
        actions: dict[str, Callable[[_Run, _Progress], None]] = {
            "endpoints": self._endpoints,
            "catalogue": self._catalogue,
            "pricing": self._pricing,
            "usage": self._usage,
            "analytics": self._analytics,
            "costs": self._costs,
            "compute": self._compute,
            "balance": self._balance,
        }
        parts = [self._attempt(name, actions[name], run, time_left) for name in PARTS]
        report = CollectReport(run_id=run_id, started_at=started, finished_at=self._clock(), parts=parts)
        try:
            self._aggregates.put_run(report.record())
        except Exception as error:  # noqa: BLE001 - the run's own outcome must still be reported
            self._log.error("collect: could not record the run", extra={"error": _describe(error)})
            report.parts.append(
                PartResult(name="run_record", outcome=Outcome.FAILED, detail=_describe(error))
            )
        return report

    def _attempt(
        self,
        name: str,
        action: Callable[[_Run, _Progress], None],
        run: _Run,
        time_left: Callable[[], float],
    ) -> PartResult:
        admin = name in ADMIN_PARTS
        if time_left() < self._settings.reserve_seconds:
            detail = f"not started: less than {self._settings.reserve_seconds:g}s of the invocation left"
            self._log.error(f"collect {name} failed: {detail}", extra={"part": name})
            return PartResult(name=name, outcome=Outcome.FAILED, detail=detail)
        if admin and self._admin is None:
            return self._skipped(name, NO_ADMIN_KEY, _Progress())
        progress = _Progress()
        try:
            action(run, progress)
        except Exception as error:  # noqa: BLE001 - one part failing must not stop the others
            gap = permission_gap(error, admin=admin)
            if gap is not None:
                return self._skipped(name, gap, progress)
            detail = _describe(error)
            self._log.error(
                f"collect {name} failed: {detail}", extra={"part": name, "counts": progress.counts}
            )
            return PartResult(
                name=name, outcome=Outcome.FAILED, detail=detail, counts=progress.counts, gaps=progress.gaps
            )
        for gap in progress.gaps:
            self._log.warning(f"collect {name}: {gap}", extra={"part": name})
        return PartResult(name=name, outcome=Outcome.OK, counts=progress.counts, gaps=progress.gaps)

    def _skipped(self, name: str, reason: str, progress: _Progress) -> PartResult:
        self._log.warning(
            f"collect {name} skipped: {reason}; the other parts still run", extra={"part": name}
        )
        return PartResult(name=name, outcome=Outcome.SKIPPED, detail=reason, counts=progress.counts)

    # ---------------------------------------------------------------------------------- parts

    def _endpoints(self, run: _Run, progress: _Progress) -> None:
        """Record the endpoints of jobs that reached fal since the last run; find cost candidates."""
        cost_since = run.now - self._settings.cost_lookback
        mark = self._watermarks.get("jobs")
        # Jobs that changed since the last run (less the overlap) tell which endpoints were used;
        # finished jobs are read as far back as the cost lookback, their billing may still be due.
        discover_since = mark - self._settings.usage_overlap if mark else cost_since
        last_used: dict[str, datetime] = {}
        candidates: list[Job] = []
        seen = 0
        for state in USED_STATES:
            since = min(discover_since, cost_since) if state in BILLABLE_STATES else discover_since
            for job in self._jobs.list_by_state(state, changed_after=since):
                seen += 1
                changed_at = datetime.fromisoformat(job.state_changed_at)
                if job.model and job.request_id and changed_at > last_used.get(job.model, since):
                    last_used[job.model] = changed_at
                if changed_at >= cost_since and needs_cost(job):
                    candidates.append(job)
        self._registry.record_used(last_used)
        run.candidates = candidates
        run.endpoints = sorted(self._registry.used_endpoints())
        self._watermarks.advance("jobs", run.now, run_id=run.run_id)
        progress.counts.update(
            jobs_seen=seen, endpoints_used=len(run.endpoints), cost_candidates=len(candidates)
        )

    def _used_endpoints(self, run: _Run) -> list[str]:
        # When the job scan failed, the registry still knows every endpoint of earlier runs.
        return run.endpoints if run.endpoints is not None else sorted(self._registry.used_endpoints())

    def _catalogue(self, run: _Run, progress: _Progress) -> None:
        entries: list[CatalogueEntry] = catalogue_entries(self._platform.iter_models())
        progress.counts["models"] = len(entries)
        progress.counts["deprecated"] = sum(1 for entry in entries if entry.status == "deprecated")
        progress.counts["catalogue_changes"] = self._aggregates.replace_catalogue(entries, taken_at=run.now)
        self._snapshots.write(
            "catalogue", run.now.date(), run.run_id, [run.stamp(e.model_dump(mode="json")) for e in entries]
        )

    def _pricing(self, run: _Run, progress: _Progress) -> None:
        endpoints = self._used_endpoints(run)
        prices = price_rows(
            price
            for batch in _batches(endpoints)
            for price in _skip_unknown_ids(self._platform.pricing, batch)
        )
        self._aggregates.put_prices(prices)
        run.prices = {price.endpoint_id: price for price in prices}
        progress.counts.update(prices=len(prices), unpriced=len(set(endpoints) - set(run.prices)))
        if prices:
            self._snapshots.write(
                "pricing", run.now.date(), run.run_id, [run.stamp(p.model_dump(mode="json")) for p in prices]
            )

    def _window(self, name: str, now: datetime) -> Window:
        settings = self._settings
        return collection_window(
            self._watermarks.get(name),
            now,
            overlap=settings.usage_overlap,
            initial_lookback=settings.initial_lookback,
            max_window=settings.max_window,
        )

    def _usage(self, run: _Run, progress: _Progress) -> None:
        assert self._admin is not None  # _attempt skips admin parts without an ADMIN client
        window = self._window("usage", run.now)
        report = self._admin.usage(
            window.start, window.end, timeframe="hour", bound_to_timeframe=False, expand=("time_series",)
        )
        rows = usage_rows(report)
        self._aggregates.put_usage(rows)
        write_partitioned(
            self._snapshots,
            "usage",
            run.run_id,
            [run.stamp(row.model_dump(mode="json")) for row in rows],
            lambda row: day_of(row["bucket"]),
        )
        self._watermarks.advance("usage", window.end, run_id=run.run_id)
        progress.counts.update(usage_rows=len(rows), usage_window_hours=_hours(window))

    def _analytics(self, run: _Run, progress: _Progress) -> None:
        endpoints = self._used_endpoints(run)
        window = self._window("analytics", run.now)

        def analytics_of(ids: list[str]) -> list[AnalyticsRow]:
            return analytics_rows(
                self._platform.analytics(
                    ids,
                    window.start,
                    window.end,
                    timeframe="hour",
                    bound_to_timeframe=False,
                    metrics=ANALYTICS_METRICS,
                )
            )

        rows = [row for batch in _batches(endpoints) for row in _skip_unknown_ids(analytics_of, batch)]
        self._aggregates.put_analytics(rows)
        write_partitioned(
            self._snapshots,
            "analytics",
            run.run_id,
            [run.stamp(row.model_dump(mode="json")) for row in rows],
            lambda row: day_of(row["bucket"]),
        )
        self._watermarks.advance("analytics", window.end, run_id=run.run_id)
        progress.counts.update(analytics_rows=len(rows), analytics_window_hours=_hours(window))

    def _costs(self, run: _Run, progress: _Progress) -> None:
        if run.candidates is None:
            raise RuntimeError("no cost candidates: the job scan (endpoints part) failed")
        candidates = run.candidates
        prices = run.prices if run.prices is not None else self._aggregates.stored_prices()
        events: list[BillingEvent] = []
        billing_error: Exception | None = None
        if candidates and self._admin is None:
            progress.gaps.append(f"billing events not read, estimates only: {NO_ADMIN_KEY}")
        elif candidates and self._admin is not None:
            start, end = billing_window(candidates, run.now)
            request_ids = list(dict.fromkeys(rid for job in candidates for rid in request_ids_of(job)))
            try:
                events = list(self._admin.iter_billing_events(start, end, request_ids=request_ids))
            except Exception as error:  # noqa: BLE001 - estimates still go out; re-raised below
                gap = permission_gap(error, admin=True)
                if gap is None:
                    billing_error = error
                else:
                    progress.gaps.append(f"billing events not read, estimates only: {gap}")
        progress.counts["billing_events"] = len(events)
        tally = settle_costs(self._jobs, candidates, events, prices)
        progress.counts.update(tally.counts())
        if self._settings.spend_table:
            progress.counts["reservations_settled"] = self._settle_reservations(
                candidates, tally.by_job, run.now
            )
        for model, amount in tally.changes:
            self._job_metrics.cost_recorded(model, amount)
        if events:
            job_of = {rid: job.job_id for job in candidates for rid in request_ids_of(job)}
            write_partitioned(
                self._snapshots,
                "billing",
                run.run_id,
                [
                    run.stamp({**event.model_dump(mode="json"), "job_id": job_of.get(event.request_id)})
                    for event in events
                ],
                lambda row: day_of(row["timestamp"]),
            )
        if billing_error is not None:
            raise billing_error

    def _settle_reservations(self, jobs: Sequence[Job], costs: Mapping[str, JobCost], now: datetime) -> int:
        """Budgets count billed costs, not estimates, once fal's billing event is in (falflow.spend)."""
        settled = 0
        for job in jobs:
            cost = costs.get(job.job_id)
            if cost is not None and cost.source == "billing_event":
                settled += settle(self._jobs, job, cost.amount, self._settings.spend_table, now)
        return settled

    def _compute(self, run: _Run, progress: _Progress) -> None:
        assert self._admin is not None
        instances = list(self._admin.iter_compute_instances())
        self._aggregates.replace_compute_instances(instances)
        progress.counts["compute_instances"] = len(instances)
        if instances:
            self._snapshots.write(
                "compute",
                run.now.date(),
                run.run_id,
                [run.stamp(i.model_dump(mode="json")) for i in instances],
            )

    def _balance(self, run: _Run, progress: _Progress) -> None:
        """fal's credit balance, as metric ``FalCreditBalance`` (FalBalanceLowAlarm watches it)."""
        assert self._admin is not None
        credits = self._admin.account_billing().credits
        if credits is None:
            progress.gaps.append("fal's account billing answered without credits")
            return
        progress.counts["fal_credit_balance"] = credits.current_balance


def _skip_unknown_ids[T](call: Callable[[list[str]], list[T]], ids: list[str]) -> list[T]:
    """``call(ids)``; fal refuses a whole id filter for one id it does not know (a private app, a
    retired model), so such a call is made again id by id and the unknown ids are left out."""
    try:
        return call(ids)
    except FalError as error:
        if error.status not in UNKNOWN_ID_STATUSES:
            raise
        if len(ids) == 1:
            return []
        return [item for endpoint_id in ids for item in _skip_unknown_ids(call, [endpoint_id])]


def _hours(window: Window) -> float:
    return (window.end - window.start).total_seconds() / 3600


def _describe(error: BaseException) -> str:
    """An error for logs and the run record: its type and message (fal's carry no secrets)."""
    return f"{type(error).__name__}: {error}"[:500]


def _metric_name(key: str) -> str:
    return "".join(word.capitalize() for word in key.split("_"))


def emit_metrics(report: CollectReport, metrics: MetricsSink) -> None:
    """One metric per part outcome (``UsageSkipped``, ``CostsFailed`` …), the totals alarms key
    on (``CollectPartsFailed``, ``PermissionGaps``) and each part's counts."""
    gaps = 0
    for part in report.parts:
        metrics.add_metric(f"{_metric_name(part.name)}{part.outcome.value.capitalize()}", "Count", 1)
        gaps += len(part.gaps) + (part.outcome is Outcome.SKIPPED)
        for key, value in part.counts.items():
            metrics.add_metric(_metric_name(key), "Count", value)
    metrics.add_metric("CollectPartsFailed", "Count", len(report.failed))
    metrics.add_metric("PermissionGaps", "Count", gaps)
