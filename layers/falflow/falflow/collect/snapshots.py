"""Snapshots in S3 as JSON lines, partitioned for Athena.

``<prefix><kind>/date=YYYY-MM-DD/run=<run id>.jsonl`` — one object per kind, day and run (the
run id is its start time), never overwritten. Usage and analytics rows are partitioned by the
day of their bucket, billing events by the day of their timestamp, and point-in-time listings
(pricing, catalogue, compute) by the day of the run. Every row carries ``run_id`` and
``collected_at``. Runs overlap on purpose, so a bucket can appear in several runs' objects: the
row with the latest ``collected_at`` for a (bucket, endpoint_id, unit) is fal's current figure
(in Athena, ``max_by(cost_total, collected_at)`` grouped by those columns).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from falflow.collect.ports import SnapshotSink

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CONTENT_TYPE = "application/x-ndjson"


def snapshot_key(prefix: str, kind: str, day: date, run_id: str) -> str:
    return f"{prefix}{kind}/date={day.isoformat()}/run={run_id}.jsonl"


def json_lines(rows: Sequence[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(row, separators=(",", ":"), sort_keys=True) + "\n" for row in rows).encode()


class S3SnapshotSink:
    def __init__(self, client: S3Client, bucket: str, prefix: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix

    def write(self, kind: str, day: date, run_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
        key = snapshot_key(self._prefix, kind, day, run_id)
        self._client.put_object(Bucket=self._bucket, Key=key, Body=json_lines(rows), ContentType=CONTENT_TYPE)
        return key


def write_partitioned(
    sink: SnapshotSink,
    kind: str,
    run_id: str,
    rows: Sequence[Mapping[str, Any]],
    day: Callable[[Mapping[str, Any]], date],
) -> list[str]:
    """Write `rows` split by `day`, one object per day; nothing when there are no rows."""
    by_day: dict[date, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_day.setdefault(day(row), []).append(row)
    return [sink.write(kind, d, run_id, part) for d, part in sorted(by_day.items())]
