"""The collect function: fal usage, pricing, per-job cost, analytics, the model catalogue and
compute instances, into the usage table (current figures) and S3 (JSON-lines snapshots)."""

from falflow.collect.collector import Collector, collection_window, emit_metrics, permission_gap
from falflow.collect.costs import estimate_cost, estimated_units, settle_costs
from falflow.collect.model import CollectReport, Outcome, PartResult
from falflow.collect.service import CollectRunFailed, run_collect
from falflow.collect.settings import CollectSettings
from falflow.collect.snapshots import S3SnapshotSink
from falflow.collect.usage_table import DynamoUsageTable

__all__ = [
    "CollectReport",
    "CollectRunFailed",
    "CollectSettings",
    "Collector",
    "DynamoUsageTable",
    "Outcome",
    "PartResult",
    "S3SnapshotSink",
    "collection_window",
    "emit_metrics",
    "estimate_cost",
    "estimated_units",
    "permission_gap",
    "run_collect",
    "settle_costs",
]
