"""A whole collect run against in-memory ports: parts, permission gaps, faults, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from falflow.collect.collector import Collector, emit_metrics
from falflow.collect.model import Outcome, run_id_for
from falflow.collect.settings import CollectSettings
from falflow.fal.errors import FalAuthError, FalPlatformError, FalServerError
from falflow.fal.platform import (
    AnalyticsResult,
    BillingEvent,
    ComputeInstance,
    ModelInfo,
    ModelMetadata,
    Price,
    UsageLineItem,
)
from falflow.jobs import Job, JobState
from falflow.secrets import MissingSecretError
from tests.fakes.job_store import InMemoryJobStore
from tests.unit.collect.fakes import (
    FakePlatform,
    MemorySnapshots,
    MemoryUsageTable,
    RecordingLog,
    RecordingMetrics,
)

NOW = datetime(2026, 9, 1, 12, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
FLUX, KLING, SDXL = "fal-ai/flux/dev", "fal-ai/kling", "fal-ai/fast-sdxl"


def _settings(**overrides: Any) -> CollectSettings:
    return CollectSettings(usage_table="usage", jobs_table="jobs", output_bucket="out", **overrides)


def _job(job_id: str, model: str, state: JobState, request_id: str | None, **fields: Any) -> Job:
    return Job.new(
        job_id,
        source=f"sqs:{job_id}",
        source_kind="sqs",
        now=NOW - HOUR,
        state=state,
        model=model,
        request_id=request_id,
        **fields,
    )


def _usage(endpoint_id: str, quantity: float, unit_price: float = 0.025) -> UsageLineItem:
    return UsageLineItem(
        endpoint_id=endpoint_id,
        unit="image",
        quantity=quantity,
        unit_price=unit_price,
        cost_total=float(f"{quantity * unit_price:.6f}"),
        currency="USD",
    )


class World:
    """fal, the job table and the usage table as one test sees them."""

    def __init__(self) -> None:
        self.jobs = InMemoryJobStore()
        self.jobs.create(
            _job("job-1", FLUX, JobState.COMPLETED, "req-1", outputs=["outputs/job-1/image-0.png"])
        )
        self.jobs.create(
            _job("job-2", FLUX, JobState.COMPLETED, "req-2", outputs=["outputs/job-2/image-0.png"] * 2)
        )
        self.jobs.create(_job("job-3", KLING, JobState.IN_PROGRESS, "req-3", input={"duration": "5"}))
        self.jobs.create(_job("job-4", FLUX, JobState.ACCEPTED, None))
        self.fal = FakePlatform(
            models=[
                ModelInfo(endpoint_id=FLUX, metadata=ModelMetadata(status="active")),
                ModelInfo(endpoint_id=SDXL, metadata=ModelMetadata(status="deprecated")),
            ],
            prices={
                FLUX: Price(endpoint_id=FLUX, unit_price=0.025, unit="image", currency="USD"),
                KLING: Price(endpoint_id=KLING, unit_price=0.28, unit="second", currency="USD"),
            },
            usage_buckets={floor(NOW) - HOUR: [_usage(FLUX, 2)], floor(NOW): [_usage(FLUX, 1)]},
            billing_events=[
                BillingEvent(
                    request_id="req-1",
                    endpoint_id=FLUX,
                    timestamp=(NOW - HOUR).isoformat(),
                    output_units=1,
                    unit_price=0.025,
                    cost_total=0.025,
                )
            ],
            analytics_buckets={
                floor(NOW): [AnalyticsResult(endpoint_id=FLUX, request_count=3, success_count=3)]
            },
            instances=[
                ComputeInstance(id="i-1", instance_type="gpu_1x_h100_sxm5", region="us-east", status="ready")
            ],
        )
        self.table = MemoryUsageTable()
        self.snapshots = MemorySnapshots()
        self.log = RecordingLog()

    def collector(self, *, admin: bool = True, **settings: Any) -> Collector:
        return Collector(
            platform=self.fal,
            admin_platform=self.fal if admin else None,
            jobs=self.jobs,
            watermarks=self.table,
            registry=self.table,
            aggregates=self.table,
            snapshots=self.snapshots,
            settings=_settings(**settings),
            log=self.log,
        )

    def run(self, at: datetime = NOW, *, admin: bool = True, **kwargs: Any) -> Any:
        return self.collector(admin=admin).run(run_id=run_id_for(at), now=at, **kwargs)

    def cost_of(self, job_id: str) -> tuple[str, float] | None:
        job = self.jobs.get(job_id)
        assert job is not None
        return (job.cost.source, job.cost.amount) if job.cost else None


def floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


@pytest.fixture
def world() -> World:
    return World()


def test_a_run_collects_every_part(world: World) -> None:
    report = world.run()

    assert {p.name: p.outcome for p in report.parts} == dict.fromkeys(
        ("endpoints", "catalogue", "pricing", "usage", "analytics", "costs", "compute", "balance"), Outcome.OK
    )
    assert report.part("balance").counts == {"fal_credit_balance": 42.5}
    # Endpoints come from jobs that reached fal (job-4 is still ACCEPTED: never sent).
    assert sorted(world.table.endpoints) == [FLUX, KLING]
    assert world.table.catalogue[SDXL].status == "deprecated"
    assert world.table.catalogue_taken_at == NOW
    assert set(world.table.prices) == {FLUX, KLING}
    assert sum(row.quantity for row in world.table.usage.values()) == 3
    assert [(row.endpoint_id, row.metrics["request_count"]) for row in world.table.analytics.values()] == [
        (FLUX, 3)
    ]
    assert list(world.table.compute) == ["i-1"]
    # Billing event for job-1; an estimate (2 images x 0.025) for job-2, not yet billed.
    assert world.cost_of("job-1") == ("billing_event", 0.025)
    assert world.cost_of("job-2") == ("estimate", 0.05)
    assert world.cost_of("job-3") is None  # still running
    assert world.table.marks == {"jobs": NOW, "usage": NOW, "analytics": NOW}
    assert world.table.runs[-1].failed is False
    kinds = {key.split("/")[0] for key in world.snapshots.objects}
    assert kinds == {"catalogue", "pricing", "usage", "analytics", "billing", "compute"}
    assert {row["job_id"] for row in world.snapshots.rows("billing")} == {"job-1"}
    assert world.log.at("WARNING") == []
    assert world.log.at("ERROR") == []


def test_overlapping_runs_overwrite_fals_current_figures_and_never_add(world: World) -> None:
    world.run()
    # An hour later fal's counters for the last bucket have grown and a new bucket started.
    world.fal.usage_buckets[floor(NOW)] = [_usage(FLUX, 4)]
    world.fal.usage_buckets[floor(NOW) + HOUR] = [_usage(FLUX, 1)]
    later = NOW + HOUR

    world.run(later)
    world.run(later)  # and a retry of the same run

    start = world.fal.called("usage")[1]["start"]
    assert start == floor(NOW) - 2 * HOUR  # the last watermark, less the overlap, on a whole hour
    fal_total = sum(item.quantity or 0 for items in world.fal.usage_buckets.values() for item in items)
    assert sum(row.quantity for row in world.table.usage.values()) == fal_total == 7
    assert sum(row.cost_total or 0 for row in world.table.usage.values()) == pytest.approx(0.175)
    assert len(world.table.usage) == 3
    assert world.cost_of("job-1") == ("billing_event", 0.025)


def test_without_an_admin_key_usage_is_skipped_with_a_warning_and_the_rest_still_runs(world: World) -> None:
    report = world.run(admin=False)

    outcomes = {p.name: p.outcome for p in report.parts}
    assert outcomes["usage"] is Outcome.SKIPPED
    assert outcomes["compute"] is Outcome.SKIPPED
    for name in ("endpoints", "catalogue", "pricing", "analytics", "costs"):
        assert outcomes[name] is Outcome.OK, name
    assert report.failed == []
    assert world.fal.called("usage") == []
    assert world.fal.called("iter_billing_events") == []
    assert world.table.usage == {}
    assert "usage" not in world.table.marks
    assert world.table.catalogue
    assert world.table.prices
    assert world.table.analytics
    # Without billing events every finished job gets an estimate.
    assert world.cost_of("job-1") == ("estimate", 0.025)
    assert world.cost_of("job-2") == ("estimate", 0.05)
    warnings = world.log.at("WARNING")
    assert any(w.startswith("collect usage skipped: no ADMIN key configured") for w in warnings)
    assert any(w.startswith("collect costs: billing events not read, estimates only") for w in warnings)


def test_a_forbidden_endpoint_is_a_gap_not_a_failure(world: World) -> None:
    world.fal.errors["iter_compute_instances"] = FalPlatformError(
        "fal platform error 403 authorization_error: compute not enabled",
        status=403,
        error_type="authorization_error",
    )
    world.fal.errors["iter_billing_events"] = FalAuthError("forbidden", status=403)

    report = world.run()

    assert report.part("compute").outcome is Outcome.SKIPPED
    assert report.part("compute").detail == "fal refused access (403 authorization_error)"
    assert report.part("costs").outcome is Outcome.OK
    assert report.part("costs").gaps == ["billing events not read, estimates only: fal refused access (403)"]
    assert report.failed == []
    metrics = RecordingMetrics()
    emit_metrics(report, metrics)
    assert metrics.values["ComputeSkipped"] == 1
    assert metrics.values["PermissionGaps"] == 2
    assert metrics.values["CollectPartsFailed"] == 0


def test_an_admin_secret_that_is_missing_or_empty_is_a_gap(world: World) -> None:
    world.fal.errors["usage"] = MissingSecretError("the fal ADMIN key secret 'x' is empty")
    report = world.run()
    assert report.part("usage").outcome is Outcome.SKIPPED
    assert report.failed == []


@pytest.mark.parametrize(
    ("method", "error", "part"),
    [
        ("analytics", FalServerError("fal server error (500)", status=500, retryable=True), "analytics"),
        ("usage", FalAuthError("fal refused the credentials (401)", status=401), "usage"),
        (
            "iter_models",
            MissingSecretError("no Secrets Manager id configured for the fal API key"),
            "catalogue",
        ),
        ("pricing", FalPlatformError("rate limited", status=429, retryable=True), "pricing"),
    ],
)
def test_a_fault_fails_its_part_and_the_run_but_not_the_other_parts(
    world: World, method: str, error: Exception, part: str
) -> None:
    world.fal.errors[method] = error

    report = world.run()

    assert [p.name for p in report.failed] == [part]
    assert report.part(part).detail.startswith(type(error).__name__)
    assert all(p.outcome is Outcome.OK for p in report.parts if p.name != part)
    assert world.table.runs[-1].failed is True
    assert any(line.startswith(f"collect {part} failed") for line in world.log.at("ERROR"))


def test_a_failed_windowed_part_keeps_its_watermark_so_the_window_is_read_again(world: World) -> None:
    world.fal.errors["analytics"] = FalServerError("boom", status=500, retryable=True)
    world.run()
    assert "analytics" not in world.table.marks
    del world.fal.errors["analytics"]
    world.run(NOW + HOUR)
    assert world.fal.called("analytics")[-1]["start"] == floor(NOW + HOUR) - 24 * HOUR
    assert world.table.marks["analytics"] == NOW + HOUR


def test_when_the_usage_table_write_fails_the_watermark_does_not_move(world: World) -> None:
    world.table.errors["put_usage"] = RuntimeError("throttled")
    report = world.run()
    assert report.part("usage").outcome is Outcome.FAILED
    assert "usage" not in world.table.marks


def test_billing_faults_still_write_estimates_and_fail_the_part(world: World) -> None:
    world.fal.errors["iter_billing_events"] = FalServerError("fal server error (503)", status=503)
    report = world.run()
    assert report.part("costs").outcome is Outcome.FAILED
    assert report.part("costs").counts["costs_estimated"] == 2
    assert world.cost_of("job-1") == ("estimate", 0.025)


def test_when_the_job_scan_fails_pricing_uses_the_registry_and_costs_fail(world: World) -> None:
    world.run()
    world.jobs.list_by_state = _raise  # type: ignore[method-assign]

    report = world.run(NOW + HOUR)

    assert report.part("endpoints").outcome is Outcome.FAILED
    assert report.part("costs").outcome is Outcome.FAILED
    assert report.part("pricing").outcome is Outcome.OK
    assert world.fal.called("pricing")[-1]["endpoint_ids"] == [FLUX, KLING]


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("DynamoDB unavailable")


def test_parts_are_not_started_when_the_invocation_is_about_to_time_out(world: World) -> None:
    left = iter([600.0, 600.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    report = world.run(time_left=lambda: next(left))
    assert [p.name for p in report.parts if p.outcome is Outcome.OK] == ["endpoints", "catalogue"]
    assert all(p.detail.startswith("not started") for p in report.failed)
    assert world.fal.called("usage") == []


def test_a_run_that_cannot_record_itself_still_reports(world: World) -> None:
    world.table.errors["put_run"] = RuntimeError("throttled")
    report = world.run()
    assert [p.name for p in report.failed] == ["run_record"]


def test_metrics_name_each_part_outcome_and_count(world: World) -> None:
    metrics = RecordingMetrics()
    emit_metrics(world.run(admin=False), metrics)
    assert metrics.values["UsageSkipped"] == 1
    assert metrics.values["CatalogueOk"] == 1
    assert metrics.values["Models"] == 2
    assert metrics.values["CostsEstimated"] == 2
    assert metrics.values["PermissionGaps"] == 4  # usage, compute, balance, billing events
    assert metrics.values["CollectPartsFailed"] == 0


def test_only_endpoints_of_jobs_that_reached_fal_are_registered(world: World) -> None:
    world.jobs.create(_job("job-5", "fal-ai/bogus", JobState.FAILED, None))  # refused before fal
    world.jobs.create(_job("job-6", "fal-ai/bogus", JobState.REJECTED, None))
    world.run()
    assert sorted(world.table.endpoints) == [FLUX, KLING]


def test_an_endpoint_fal_does_not_price_stays_unpriced_and_the_rest_are_priced(world: World) -> None:
    world.jobs.create(_job("job-5", "workflows/me/private", JobState.COMPLETED, "req-5"))

    report = world.run()

    assert report.part("pricing").outcome is Outcome.OK
    assert report.part("pricing").counts == {"prices": 2, "unpriced": 1}
    assert set(world.table.prices) == {FLUX, KLING}
    assert world.cost_of("job-5") is None  # no price, no estimate: it waits for its billing event


def test_pricing_faults_other_than_unknown_ids_fail_the_part(world: World) -> None:
    world.fal.errors["pricing"] = FalServerError("fal server error (502)", status=502)
    report = world.run()
    assert report.part("pricing").outcome is Outcome.FAILED
    assert len(world.fal.called("pricing")) == 1  # not retried id by id
    # Costs fall back to the prices stored by earlier runs (none yet): no estimates, no failure.
    assert report.part("costs").outcome is Outcome.OK


def test_the_job_scan_reads_since_the_last_run_and_finished_jobs_over_the_cost_lookback(
    world: World,
) -> None:
    world.run()
    asked: dict[JobState, datetime | None] = {}
    scan = world.jobs.list_by_state

    def recording(state: JobState, **kwargs: Any) -> Any:
        asked[state] = kwargs.get("changed_after")
        return scan(state, **kwargs)

    world.jobs.list_by_state = recording  # type: ignore[method-assign]
    later = NOW + HOUR
    world.run(later)

    assert asked[JobState.SUBMITTED] == NOW - 2 * HOUR  # the last run, less the overlap
    assert asked[JobState.IN_PROGRESS] == NOW - 2 * HOUR
    assert asked[JobState.COMPLETED] == later - 72 * HOUR  # the cost lookback
    assert JobState.ACCEPTED not in asked
    assert JobState.REJECTED not in asked


def test_analytics_leave_out_an_endpoint_fal_refuses_and_keep_the_others(world: World) -> None:
    world.fal.unknown_to_analytics = {KLING}
    report = world.run()
    assert report.part("analytics").outcome is Outcome.OK
    assert [call["endpoint_ids"] for call in world.fal.called("analytics")] == [
        [FLUX, KLING],
        [FLUX],
        [KLING],
    ]
    assert {row.endpoint_id for row in world.table.analytics.values()} == {FLUX}
