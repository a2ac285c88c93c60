"""The collect function's state in the usage table (moto, table from template.yaml), and the
catalogue read back through the submit path's `DynamoModelCatalogue`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from falflow.aws.clients import aws_client
from falflow.catalogue import DynamoModelCatalogue
from falflow.collect.model import CatalogueEntry, UsageRow
from falflow.collect.usage_table import DynamoUsageTable
from falflow.fal.platform import ComputeInstance
from falflow_tools.local.resources import ProvisionedStack

T0 = datetime(2026, 9, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def table(aws: ProvisionedStack) -> DynamoUsageTable:
    return DynamoUsageTable(aws_client("dynamodb"), aws.tables["UsageTable"])


@pytest.fixture
def catalogue(aws: ProvisionedStack) -> DynamoModelCatalogue:
    return DynamoModelCatalogue(
        aws_client("dynamodb"), aws.tables["UsageTable"], cache_ttl=timedelta(0), clock=lambda: T0
    )


def _entry(endpoint_id: str, status: str = "active") -> CatalogueEntry:
    return CatalogueEntry(endpoint_id=endpoint_id, status=status, fal_status=status)  # type: ignore[arg-type]


def test_a_catalogue_never_written_is_not_loaded(catalogue: DynamoModelCatalogue) -> None:
    assert catalogue.is_loaded() is False
    assert catalogue.status("fal-ai/flux/dev") is None


def test_the_snapshot_reads_back_through_the_submit_paths_catalogue(
    table: DynamoUsageTable, catalogue: DynamoModelCatalogue
) -> None:
    table.replace_catalogue(
        [_entry("fal-ai/flux/dev"), _entry("fal-ai/fast-sdxl", "deprecated")],
        taken_at=T0 - timedelta(hours=1),
    )

    assert catalogue.is_loaded() is True
    assert catalogue.snapshot_taken_at() == T0 - timedelta(hours=1)
    assert catalogue.status("fal-ai/flux/dev") == "active"
    assert catalogue.status("fal-ai/fast-sdxl") == "deprecated"
    assert catalogue.status("fal-ai/flux/dev/image-to-image") == "active"  # its listed parent decides
    assert catalogue.status("fal-ai/unknown-model") is None
    # Unknown means unknown to an owner the catalogue lists; private apps are never listed.
    assert catalogue.lists_owner_of("fal-ai/unknown-model") is True
    assert catalogue.lists_owner_of("my-team/private-app") is False
    assert catalogue.lists_owner_of("workflows/fal-ai/flow") is False
    assert catalogue.lists_owner_of("not an id") is False


def test_a_new_snapshot_replaces_the_old_one_writing_only_what_changed(
    table: DynamoUsageTable, catalogue: DynamoModelCatalogue
) -> None:
    table.replace_catalogue([_entry("a/one"), _entry("a/two"), _entry("a/three")], taken_at=T0)

    changed = table.replace_catalogue([_entry("a/one"), _entry("a/two", "deprecated")], taken_at=T0)

    assert changed == 2  # a/two updated, a/three removed; a/one untouched
    assert catalogue.status("a/one") == "active"
    assert catalogue.status("a/two") == "deprecated"
    assert catalogue.status("a/three") is None
    assert table.replace_catalogue([_entry("a/one"), _entry("a/two", "deprecated")], taken_at=T0) == 0


def test_an_empty_listing_never_replaces_the_catalogue(
    table: DynamoUsageTable, catalogue: DynamoModelCatalogue
) -> None:
    table.replace_catalogue([_entry("a/one")], taken_at=T0)
    with pytest.raises(ValueError, match="empty"):
        table.replace_catalogue([], taken_at=T0 + timedelta(hours=1))
    assert catalogue.status("a/one") == "active"
    assert catalogue.snapshot_taken_at() == T0


def test_a_stale_snapshot_is_not_trusted(aws: ProvisionedStack, table: DynamoUsageTable) -> None:
    table.replace_catalogue([_entry("a/one")], taken_at=T0 - timedelta(hours=49))
    stale = DynamoModelCatalogue(aws_client("dynamodb"), aws.tables["UsageTable"], clock=lambda: T0)
    assert stale.is_loaded() is False
    forever = DynamoModelCatalogue(aws_client("dynamodb"), aws.tables["UsageTable"], max_age=None)
    assert forever.is_loaded() is True


def test_answers_are_cached_per_container_for_the_ttl(aws: ProvisionedStack, table: DynamoUsageTable) -> None:
    now = [T0]
    cached = DynamoModelCatalogue(
        aws_client("dynamodb"), aws.tables["UsageTable"], cache_ttl=timedelta(minutes=5), clock=lambda: now[0]
    )
    table.replace_catalogue([_entry("a/one")], taken_at=T0)
    assert cached.status("a/one") == "active"
    table.replace_catalogue([_entry("a/one", "deprecated")], taken_at=T0)
    assert cached.status("a/one") == "active"
    now[0] = T0 + timedelta(minutes=5)
    assert cached.status("a/one") == "deprecated"


def test_watermarks_only_move_forward(table: DynamoUsageTable) -> None:
    assert table.get("usage") is None
    assert table.advance("usage", T0, run_id="r1") is True
    assert table.advance("usage", T0 - timedelta(minutes=1), run_id="r0") is False
    assert table.advance("usage", T0, run_id="r1-again") is False
    assert table.get("usage") == T0
    assert table.advance("usage", T0 + timedelta(hours=1), run_id="r2") is True
    assert table.get("usage") == T0 + timedelta(hours=1)


def test_usage_rows_overwrite_by_bucket_endpoint_and_unit(
    aws: ProvisionedStack, table: DynamoUsageTable
) -> None:
    bucket = "2026-09-01T10:00:00.000+00:00"
    first = UsageRow(bucket=bucket, endpoint_id="a/one", unit="image", quantity=2, cost_total=0.05)
    later = first.model_copy(update={"quantity": 3, "cost_total": 0.075})
    other = first.model_copy(update={"unit": "second"})
    table.put_usage([first, other])
    table.put_usage([later])

    items = aws_client("dynamodb").query(
        TableName=aws.tables["UsageTable"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "USAGE#2026-09-01"}},
    )["Items"]
    by_unit = {item["unit"]["S"]: item for item in items}
    assert set(by_unit) == {"image", "second"}
    assert Decimal(by_unit["image"]["quantity"]["N"]) == 3
    assert Decimal(by_unit["image"]["cost_total"]["N"]) == Decimal("0.075")


def test_the_endpoint_registry_keeps_every_endpoint_and_the_latest_use(table: DynamoUsageTable) -> None:
    table.record_used({"a/one": T0, "b/two": T0})
    table.record_used({"a/one": T0 - timedelta(hours=1)})  # an older sighting changes nothing
    table.record_used({"c/three": T0})
    assert sorted(table.used_endpoints()) == ["a/one", "b/two", "c/three"]


def test_compute_instances_are_replaced_as_a_set(aws: ProvisionedStack, table: DynamoUsageTable) -> None:
    def instance(instance_id: str) -> ComputeInstance:
        return ComputeInstance(
            id=instance_id, instance_type="gpu_1x_h100_sxm5", region="us-east", status="ready"
        )

    table.replace_compute_instances([instance("i-1"), instance("i-2")])
    table.replace_compute_instances([instance("i-2")])
    items = aws_client("dynamodb").query(
        TableName=aws.tables["UsageTable"],
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "COMPUTE"}},
    )["Items"]
    assert [item["sk"]["S"] for item in items] == ["i-2"]
