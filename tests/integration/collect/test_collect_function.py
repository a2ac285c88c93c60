"""The collect function, invoked through its real handler, on moto and the fal emulator."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from urllib.parse import parse_qs

import pytest

from falflow.aws.clients import aws_client
from falflow.catalogue import DynamoModelCatalogue
from falflow.collect.app import CollectRunFailed
from falflow.collect.usage_table import DynamoUsageTable
from falflow.fal.platform import FalPlatformClient
from falflow.jobs import JobCost
from falflow.settings import FalSettings
from falflow_tools.emulator import RunningEmulator
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.collect.conftest import CollectStack, MakeCollectStack, decimal_sum

FLUX = "fal-ai/flux/dev"
KLING = "fal-ai/kling-video/v2/master/text-to-video"
AUDIO = "fal-ai/stable-audio"
PARTS = ("endpoints", "catalogue", "pricing", "usage", "analytics", "costs", "compute", "balance")


def _usage_windows(fal: RunningEmulator) -> list[tuple[datetime, datetime]]:
    windows = []
    for request in fal.control.requests():
        if request.path.endswith("/models/usage") and request.status_code == 200:
            query = parse_qs(request.query)
            windows.append(
                (datetime.fromisoformat(query["start"][0]), datetime.fromisoformat(query["end"][0]))
            )
    return windows


def _assert_costs_match_billing_events(collect: CollectStack) -> None:
    events = collect.billing_events()
    assert sorted(e.request_id for e in events) == sorted(collect.job_ids)
    for event in events:
        cost = collect.job(event.request_id).cost
        assert cost is not None
        assert cost.source == "billing_event"
        assert cost.amount == event.cost_total  # exactly, not approximately
        assert cost.units == event.output_units
        assert cost.unit_price == event.unit_price


def _assert_usage_counted_once(collect: CollectStack) -> None:
    """The usage table holds fal's totals per endpoint: each billed unit and cent exactly once."""
    events = collect.billing_events()
    billed_units: dict[str, float] = defaultdict(float)
    for event in events:
        billed_units[event.endpoint_id] += event.output_units or 0
    rows = collect.items_with_prefix("USAGE#")
    stored_units: dict[str, float] = defaultdict(float)
    for row in rows:
        stored_units[row["endpoint_id"]] += float(row["quantity"])
    assert stored_units == billed_units
    assert decimal_sum(row["cost_total"] for row in rows) == decimal_sum(e.cost_total for e in events)


def test_two_overlapping_runs_count_usage_and_costs_once(
    make_collect_stack: MakeCollectStack, fal_emulator_factory: EmulatorFactory
) -> None:
    # A discount makes fal's billed total differ from its subtotal and from unit price x units.
    collect = make_collect_stack(fal_emulator_factory(percent_discount=12.5))
    collect.run_jobs(
        (FLUX, {"prompt": "two cats", "num_images": 2}),
        (FLUX, {"prompt": "one dog"}),
        (KLING, {"prompt": "a wave", "duration": "5"}),
    )

    first = collect.invoke()
    collect.run_jobs((AUDIO, {"prompt": "rain", "seconds_total": 3}))
    second = collect.invoke()
    third = collect.invoke()  # straight after: the whole window read again

    for summary in (first, second, third):
        assert summary["failed"] == []
        assert {name: part["outcome"] for name, part in summary["parts"].items()} == dict.fromkeys(
            PARTS, "ok"
        )
    windows = _usage_windows(collect.fal)
    assert len(windows) == 3
    assert windows[1][0] < windows[0][1]  # the second run re-read part of the first one's window
    assert windows[2][0] <= windows[1][0] < windows[1][1] <= windows[2][1]
    _assert_costs_match_billing_events(collect)
    _assert_usage_counted_once(collect)
    # A billed job is settled: later runs neither ask fal for it again nor rewrite it.
    assert second["parts"]["costs"]["counts"]["costs_billed"] == 1  # only the new job
    assert third["parts"]["endpoints"]["counts"]["cost_candidates"] == 0

    # Snapshots: JSON lines partitioned by day, every row stamped with its run.
    usage_objects = collect.snapshot_rows("usage")
    assert len({key.split("/run=")[1] for key in usage_objects}) == 3  # one object per run and day
    for key, rows in usage_objects.items():
        day = key.split("/date=")[1].split("/")[0]
        assert all(row["bucket"].startswith(day) for row in rows)
        assert all(row["run_id"] in key and row["collected_at"] for row in rows)
    billing = [row for rows in collect.snapshot_rows("billing").values() for row in rows]
    assert {row["job_id"] for row in billing} == set(collect.job_ids.values())


def test_a_job_not_yet_billed_is_estimated_then_settled_by_its_billing_event(
    make_collect_stack: MakeCollectStack, fal_emulator_factory: EmulatorFactory
) -> None:
    # fal bills when the job ends: long enough that the first collect runs before, even on a loaded machine.
    fal = fal_emulator_factory(run_time_s=4.0, percent_discount=20)
    collect = make_collect_stack(fal)
    model_input = {"prompt": "three birds", "num_images": 3}
    request_id = collect.submit(FLUX, model_input)
    # The record says COMPLETED with three images while fal has not billed the request yet.
    collect.record_completed(request_id, FLUX, model_input, ["image-0.png", "image-1.png", "image-2.png"])

    collect.invoke()
    assert collect.job(request_id).cost == JobCost(
        amount=0.075, currency="USD", source="estimate", unit="image", units=3.0, unit_price=0.025
    )

    fal.control.wait_idle()
    collect.invoke()
    _assert_costs_match_billing_events(collect)
    assert collect.job(request_id).cost == JobCost(
        amount=0.06, currency="USD", source="billing_event", unit="image", units=3.0, unit_price=0.025
    )


def _assert_skipped_usage_and_the_estimate_counted(out: str) -> None:
    emf = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    assert [(m["UsageSkipped"], m["PermissionGaps"]) for m in emf if "UsageSkipped" in m] == [([1.0], [4.0])]
    # The estimate is counted once as the job's cost, for all models and under its model dimension
    # (fal-ai/flux/dev is not among the template's MetricModels: "other").
    costs = [(m.get("model"), m["JobCost"]) for m in emf if "JobCost" in m]
    assert costs == [(None, [0.025]), ("other", [0.025])]


def test_without_an_admin_key_usage_is_skipped_with_a_warning_and_the_rest_is_collected(
    make_collect_stack: MakeCollectStack,
    fal_emulator: RunningEmulator,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    collect = make_collect_stack(fal_emulator, admin_key=None)
    assert collect.env["FAL_ADMIN_KEY_SECRET_ID"] == ""  # as the template sets it by default
    (job,) = collect.run_jobs((FLUX, {"prompt": "a fox"}))
    capsys.readouterr()

    summary = collect.invoke()

    outcomes = {name: part["outcome"] for name, part in summary["parts"].items()}
    assert outcomes == {
        **dict.fromkeys(PARTS, "ok"),
        "usage": "skipped",
        "compute": "skipped",
        "balance": "skipped",
    }
    assert summary["parts"]["usage"]["detail"] == "no ADMIN key configured (FAL_ADMIN_KEY_SECRET_ID is empty)"
    assert [(p["sk"], p["unit_price"], p["unit"]) for p in collect.items("PRICE")] == [
        (FLUX, Decimal("0.025"), "image")
    ]
    analytics = collect.items_with_prefix("ANALYTICS#")
    assert [(row["endpoint_id"], row["request_count"]) for row in analytics] == [(FLUX, 1)]
    assert collect.items_with_prefix("USAGE#") == []
    assert DynamoModelCatalogue(aws_client("dynamodb"), collect.usage_table).is_loaded()
    # No billing events without the key: the job carries a marked estimate instead.
    cost = collect.job(job.request_id or "").cost
    assert cost is not None
    assert (cost.source, cost.amount) == ("estimate", 0.025)
    # Nothing was sent to the ADMIN-only endpoints.
    paths = {request.path for request in collect.fal.control.requests()}
    assert not any(
        p.endswith(("/models/usage", "/models/billing-events", "/compute/instances")) for p in paths
    )

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("collect usage skipped: no ADMIN key configured") for w in warnings)
    _assert_skipped_usage_and_the_estimate_counted(capsys.readouterr().out)


def test_an_admin_secret_holding_a_plain_api_key_is_a_gap_fal_reports_as_403(
    make_collect_stack: MakeCollectStack, fal_emulator: RunningEmulator
) -> None:
    collect = make_collect_stack(fal_emulator, admin_key=fal_emulator.api_key)
    collect.run_jobs((FLUX, {"prompt": "an owl"}))

    summary = collect.invoke()

    assert summary["failed"] == []
    assert summary["parts"]["usage"]["outcome"] == "skipped"
    assert summary["parts"]["usage"]["detail"].startswith("fal refused access (403")
    assert summary["parts"]["costs"]["gaps"][0].startswith(
        "billing events not read, estimates only: fal refused"
    )


def test_the_catalogue_snapshot_reads_back_through_the_submit_paths_catalogue(
    make_collect_stack: MakeCollectStack, fal_emulator: RunningEmulator
) -> None:
    collect = make_collect_stack(fal_emulator)
    collect.invoke()

    listed = {
        m.endpoint_id: m.metadata
        for m in FalPlatformClient(FalSettings(), lambda: fal_emulator.api_key).iter_models()
    }
    catalogue = DynamoModelCatalogue(aws_client("dynamodb"), collect.usage_table)
    assert catalogue.is_loaded()
    assert {item["sk"] for item in collect.items("CATALOGUE")} == {*listed, "#snapshot"}
    for endpoint_id, metadata in listed.items():
        assert metadata is not None
        assert catalogue.status(endpoint_id) == metadata.status
    assert catalogue.status("fal-ai/fast-sdxl") == "deprecated"
    assert catalogue.status("fal-ai/flux/dev/image-to-image") == "active"
    assert catalogue.status("fal-ai/no-such-model") is None


def test_transient_429s_and_500s_at_the_platform_api_are_retried_and_the_run_completes(
    make_collect_stack: MakeCollectStack, fal_emulator: RunningEmulator
) -> None:
    collect = make_collect_stack(fal_emulator)
    collect.run_jobs(
        (FLUX, {"prompt": "a bee", "num_images": 2}), (AUDIO, {"prompt": "wind", "seconds_total": 4})
    )
    # At most six faults in all: fewer than the client's eight attempts, however they fall.
    collect.fal.control.set_faults(seed=5, platform={"rate_429": 0.4, "rate_500": 0.3, "max_faults": 6})

    summary = collect.invoke()

    faulted = [r.fault for r in collect.fal.control.requests() if r.group == "platform" and r.fault]
    assert sorted(set(faulted)) == ["429", "500"]
    assert summary["failed"] == []
    _assert_costs_match_billing_events(collect)
    _assert_usage_counted_once(collect)


def test_a_platform_api_that_keeps_failing_fails_the_run_clearly_and_the_next_run_recovers(
    make_collect_stack: MakeCollectStack, fal_emulator: RunningEmulator, capsys: pytest.CaptureFixture[str]
) -> None:
    collect = make_collect_stack(fal_emulator, FAL_MAX_ATTEMPTS="2")
    collect.run_jobs((FLUX, {"prompt": "a crab"}))
    collect.fal.control.set_faults(platform={"rate_500": 1.0})

    with pytest.raises(CollectRunFailed) as failure:
        collect.invoke()

    report = failure.value.report
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    assert [m["CollectPartsFailed"] for m in emf if "CollectPartsFailed" in m] == [
        [7.0]
    ]  # flushed though it raised
    assert sum(m["RecordsFailed"][0] for m in emf if "RecordsFailed" in m) == 7  # one per failed part
    assert {p.name for p in report.failed} == {
        "catalogue",
        "pricing",
        "usage",
        "analytics",
        "costs",
        "compute",
        "balance",
    }
    assert report.part("endpoints").outcome == "ok"
    assert all("FalPlatformError" in p.detail or "FalServerError" in p.detail for p in report.failed)
    table = DynamoUsageTable(aws_client("dynamodb"), collect.usage_table)
    latest = table.latest_run()
    assert latest is not None
    assert latest.failed is True
    assert table.get("usage") is None
    assert table.get("analytics") is None
    assert not DynamoModelCatalogue(aws_client("dynamodb"), collect.usage_table).is_loaded()

    collect.fal.control.set_faults()
    assert collect.invoke()["failed"] == []
    assert table.get("usage") is not None
    _assert_costs_match_billing_events(collect)
