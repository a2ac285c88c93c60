"""The collect function's entry: `CollectApp`, built once per cold start from the environment, runs
the collector and reports.

A scheduled event is only a tick: nothing in it is read. The run's id is its start time, so every
invocation (a retry too) writes its own snapshot objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.aws.clients import aws_client
from falflow.collect.collector import Collector, emit_metrics
from falflow.collect.model import CollectReport, run_id_for
from falflow.collect.ports import Log, MetricsSink
from falflow.collect.settings import CollectSettings
from falflow.collect.snapshots import S3SnapshotSink
from falflow.collect.usage_table import DynamoUsageTable
from falflow.failures import report_failure
from falflow.fal.http import build_http_client
from falflow.fal.platform import FalPlatformClient
from falflow.jobs import utcnow
from falflow.secrets import FalKeys


class CollectPartFailedError(RuntimeError):
    """One part of a run failed; its detail names the error fal or AWS gave."""


class CollectRunFailed(RuntimeError):
    """A part failed for a reason other than a known permission gap (the alarm should fire)."""

    def __init__(self, report: CollectReport) -> None:
        failed = ", ".join(f"{p.name} ({p.detail})" for p in report.failed)
        super().__init__(f"collect run {report.run_id} failed: {failed}")
        self.report = report


def build_collector(settings: CollectSettings, http: httpx.Client, log: Log) -> Collector:
    keys = FalKeys(settings)
    table = DynamoUsageTable(aws_client("dynamodb"), settings.usage_table)
    return Collector(
        platform=FalPlatformClient(settings.fal, keys.api_key, http),
        admin_platform=FalPlatformClient(settings.fal, keys.admin_key, http) if keys.has_admin_key else None,
        jobs=settings.job_store(),
        watermarks=table,
        registry=table,
        aggregates=table,
        snapshots=S3SnapshotSink(aws_client("s3"), settings.output_bucket, settings.snapshot_prefix),
        settings=settings,
        log=log,
    )


class CollectApp:
    def __init__(self, settings: CollectSettings, *, metrics: MetricsSink, log: Log) -> None:
        self.settings = settings
        self._metrics = metrics
        self._log = log

    @classmethod
    def from_environment(cls, settings: CollectSettings | None = None) -> CollectApp:
        """Once per cold start: settings validated (fal's clients are made per run)."""
        return cls(settings or CollectSettings(), metrics=Metrics(), log=Logger(child=True))

    def handle(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        """Run every part, emit metrics, and raise `CollectRunFailed` if a part failed."""
        now = utcnow()

        def time_left() -> float:
            return context.get_remaining_time_in_millis() / 1000

        # One connection pool per run: the function runs hourly, so keeping it warm buys nothing.
        with build_http_client(self.settings.fal) as http:
            report = build_collector(self.settings, http, self._log).run(
                run_id=run_id_for(now), now=now, time_left=time_left
            )
        emit_metrics(report, self._metrics)
        summary = report.summary()
        if report.failed:
            for part in report.failed:
                report_failure("collect", CollectPartFailedError(part.detail), job_id=None, part=part.name)
            self._log.error("collect run failed", extra=summary)
            raise CollectRunFailed(report)
        self._log.info("collect run finished", extra=summary)
        return summary
