"""The collect function's entry: wires the collector from the environment, runs it, reports.

A scheduled event is only a tick: nothing in it is read. The run's id is its start time, so every
invocation (a retry too) writes its own snapshot objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import httpx

from falflow.aws import aws_client
from falflow.collect.collector import Collector, emit_metrics
from falflow.collect.model import CollectReport, run_id_for
from falflow.collect.ports import Log, MetricsSink
from falflow.collect.settings import CollectSettings
from falflow.collect.snapshots import S3SnapshotSink
from falflow.collect.usage_table import DynamoUsageTable
from falflow.fal.http import build_http_client
from falflow.fal.platform import FalPlatformClient
from falflow.jobs import utcnow
from falflow.secrets import fal_admin_key, fal_api_key
from falflow.settings import fal_settings, secret_ids


class CollectRunFailed(RuntimeError):
    """A part failed for a reason other than a known permission gap (the alarm should fire)."""

    def __init__(self, report: CollectReport) -> None:
        failed = ", ".join(f"{p.name} ({p.detail})" for p in report.failed)
        super().__init__(f"collect run {report.run_id} failed: {failed}")
        self.report = report


@cache
def collect_settings() -> CollectSettings:
    return CollectSettings()


def collector_from_environment(http: httpx.Client, log: Log) -> Collector:
    settings = collect_settings()
    fal = fal_settings()
    dynamodb = aws_client("dynamodb")
    table = DynamoUsageTable(dynamodb, settings.usage_table)
    has_admin_key = bool(secret_ids().fal_admin_key_secret_id)
    return Collector(
        platform=FalPlatformClient(fal, fal_api_key, http),
        admin_platform=FalPlatformClient(fal, fal_admin_key, http) if has_admin_key else None,
        jobs=settings.job_store(),
        watermarks=table,
        registry=table,
        aggregates=table,
        snapshots=S3SnapshotSink(aws_client("s3"), settings.output_bucket, settings.snapshot_prefix),
        settings=settings,
        log=log,
    )


def run_collect(
    *,
    metrics: MetricsSink,
    log: Log,
    time_left_ms: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Run every part, emit metrics, and raise `CollectRunFailed` if a part failed."""
    now = utcnow()

    def time_left() -> float:
        return time_left_ms() / 1000 if time_left_ms else math.inf

    # One connection pool per run: the function runs hourly, so keeping it warm buys nothing.
    with build_http_client(fal_settings()) as http:
        report = collector_from_environment(http, log).run(
            run_id=run_id_for(now), now=now, time_left=time_left
        )
    emit_metrics(report, metrics)
    summary = report.summary()
    if report.failed:
        log.error("collect run failed", extra=summary)
        raise CollectRunFailed(report)
    log.info("collect run finished", extra=summary)
    return summary
