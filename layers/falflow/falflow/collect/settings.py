"""The collect function's configuration (env vars of template.yaml's CollectFunction), validated once
per cold start by `CollectApp.from_environment`: the jobs table, fal, its keys and its own."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from falflow.jobs.settings import JobsTableSettings
from falflow.settings import FalConnectionSettings, MetricSettings, SecretIds

# fal serves at most 90 days of billing events per call; the cost lookback stays well inside it.
MAX_COST_LOOKBACK_HOURS = 24 * 60


class CollectSettings(JobsTableSettings, FalConnectionSettings, SecretIds, MetricSettings):
    usage_table: str
    # Where budgets count spend (falflow.spend); empty: no budgets to settle billed costs into.
    spend_table: str = ""
    output_bucket: str
    # Every snapshot object lives under this prefix (the function may write nowhere else).
    snapshot_prefix: str = "collect/"

    # Usage and analytics windows: from the last watermark minus an overlap (fal's most recent
    # buckets may still grow), or this far back on the first run; at most max_window per run, so
    # a collector that was down for weeks catches up over several runs instead of timing out.
    usage_overlap_hours: int = Field(default=2, ge=0, le=48)
    initial_lookback_hours: int = Field(default=24, ge=1, le=24 * 90)
    max_window_hours: int = Field(default=24 * 7, ge=1, le=24 * 90)
    # Finished jobs are matched with their billing events (or estimated) for this long.
    cost_lookback_hours: int = Field(default=72, ge=1, le=MAX_COST_LOOKBACK_HOURS)
    # Parts not yet started when less time than this is left are reported as failed, not begun.
    reserve_seconds: float = Field(default=30.0, ge=0)

    @field_validator("snapshot_prefix")
    @classmethod
    def _prefix_is_a_folder(cls, prefix: str) -> str:
        # "collect" and "collect/" mean the same folder; the IAM policy grants "<prefix>*".
        return prefix.strip("/") + "/" if prefix.strip("/") else ""

    @property
    def usage_overlap(self) -> timedelta:
        return timedelta(hours=self.usage_overlap_hours)

    @property
    def initial_lookback(self) -> timedelta:
        return timedelta(hours=self.initial_lookback_hours)

    @property
    def max_window(self) -> timedelta:
        return timedelta(hours=self.max_window_hours)

    @property
    def cost_lookback(self) -> timedelta:
        return timedelta(hours=self.cost_lookback_hours)
