"""Turning fal's reports into rows, and the windows the watermark gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from falflow.collect.collector import collection_window
from falflow.collect.model import analytics_rows, catalogue_entries, usage_rows
from falflow.collect.settings import CollectSettings
from falflow.fal.platform import (
    AnalyticsBucket,
    AnalyticsReport,
    AnalyticsResult,
    ModelInfo,
    ModelMetadata,
    UsageBucket,
    UsageLineItem,
    UsageReport,
)

NOW = datetime(2026, 9, 1, 12, 34, 56, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _item(endpoint_id: str, quantity: float, cost_total: float | None, unit: str = "image") -> UsageLineItem:
    return UsageLineItem(
        endpoint_id=endpoint_id, unit=unit, quantity=quantity, unit_price=0.025, cost_total=cost_total
    )


def test_usage_rows_normalise_buckets_to_utc_and_sum_lines_split_further() -> None:
    report = UsageReport(
        time_series=[
            UsageBucket(
                bucket="2026-09-01T12:00:00+02:00",
                results=[_item("a/one", 1, 0.025), _item("a/one", 2, 0.05), _item("b/two", 1, 0.025)],
            )
        ]
    )
    rows = {(row.endpoint_id, row.unit): row for row in usage_rows(report)}
    assert set(rows) == {("a/one", "image"), ("b/two", "image")}
    assert rows["a/one", "image"].bucket == "2026-09-01T10:00:00.000+00:00"
    assert rows["a/one", "image"].quantity == 3
    assert rows["a/one", "image"].cost_total == 0.075  # exactly: summed in decimal


def test_older_usage_replies_with_only_cost_still_give_a_total() -> None:
    item = UsageLineItem(endpoint_id="a/one", unit="image", quantity=2, cost=0.05)
    (row,) = usage_rows(UsageReport(time_series=[UsageBucket(bucket="2026-09-01T10:00:00Z", results=[item])]))
    assert row.cost_total == 0.05


def test_analytics_rows_merge_an_endpoint_split_across_pages() -> None:
    report = AnalyticsReport(
        time_series=[
            AnalyticsBucket(
                bucket="2026-09-01T10:00:00Z",
                results=[
                    AnalyticsResult(endpoint_id="a/one", request_count=4),
                    AnalyticsResult.model_validate({"endpoint_id": "a/one", "p50_duration": 1.5}),
                ],
            )
        ]
    )
    (row,) = analytics_rows(report)
    assert row.metrics == {"request_count": 4, "p50_duration": 1.5}


def test_catalogue_entries_keep_one_per_endpoint_and_map_the_status() -> None:
    models = [
        ModelInfo(endpoint_id="a/one", metadata=ModelMetadata(status="active", display_name="One")),
        ModelInfo(endpoint_id="a/old", metadata=ModelMetadata(status="deprecated")),
        ModelInfo(endpoint_id="a/one", metadata=ModelMetadata(status="active", display_name="One")),
        ModelInfo(endpoint_id="a/bare"),
    ]
    entries = {entry.endpoint_id: entry.status for entry in catalogue_entries(models)}
    assert entries == {"a/one": "active", "a/old": "deprecated", "a/bare": "active"}


def _window(mark: datetime | None, *, max_window: timedelta = timedelta(days=7)) -> tuple[datetime, datetime]:
    window = collection_window(mark, NOW, overlap=2 * HOUR, initial_lookback=24 * HOUR, max_window=max_window)
    return window.start, window.end


def test_the_first_window_looks_back_and_starts_on_a_whole_hour() -> None:
    assert _window(None) == (datetime(2026, 8, 31, 12, tzinfo=UTC), NOW)


def test_later_windows_start_before_the_mark_by_the_overlap() -> None:
    assert _window(datetime(2026, 9, 1, 11, 34, 56, tzinfo=UTC)) == (datetime(2026, 9, 1, 9, tzinfo=UTC), NOW)


def test_a_long_gap_is_caught_up_a_window_at_a_time() -> None:
    mark = NOW - timedelta(days=30)
    start, end = _window(mark, max_window=timedelta(days=7))
    assert start == datetime(2026, 8, 2, 10, tzinfo=UTC)
    assert end == start + timedelta(days=7)


@pytest.mark.parametrize("ahead", [timedelta(0), timedelta(hours=5)])
def test_a_mark_at_or_past_now_still_rereads_the_current_hour(ahead: timedelta) -> None:
    start, end = _window(NOW + ahead)
    assert start <= datetime(2026, 9, 1, 12, tzinfo=UTC)
    assert end == NOW


@pytest.mark.parametrize(
    ("given", "prefix"), [("collect/", "collect/"), ("collect", "collect/"), ("/a/b/", "a/b/"), ("", "")]
)
def test_the_snapshot_prefix_is_always_a_folder(given: str, prefix: str) -> None:
    settings = CollectSettings(usage_table="u", jobs_table="j", output_bucket="b", snapshot_prefix=given)
    assert settings.snapshot_prefix == prefix
