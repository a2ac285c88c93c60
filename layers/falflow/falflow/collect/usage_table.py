"""The collect function's state in the usage table (pk/sk), behind `Watermarks`,
`EndpointRegistry` and `Aggregates`.

Key layout (every item is keyed by what it describes, so a write of the same thing overwrites):

    pk                      sk                               what
    WATERMARK               <part>                           until: how far the part collected
    ENDPOINT                <endpoint id>                    first/last_used_at of an endpoint falflow used
    USAGE#<YYYY-MM-DD>      <bucket>#<endpoint id>#<unit>    fal's usage line for that hour
    ANALYTICS#<YYYY-MM-DD>  <bucket>#<endpoint id>           request counts and latency percentiles
    PRICE                   <endpoint id>                    unit price, unit, currency
    CATALOGUE               <endpoint id> | #snapshot        see falflow.catalogue
    COMPUTE                 <instance id>                    fal compute instances
    RUN                     latest                           the outcome of the last run, part by part
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from falflow.aws.dynamodb import is_condition_failure
from falflow.catalogue import CATALOGUE_PK, PRICE_PK, SNAPSHOT_SK, TAKEN_AT_ATTRIBUTE
from falflow.collect.model import AnalyticsRow, CatalogueEntry, PriceRow, RunRecord, UsageRow, day_of
from falflow.fal.platform import ComputeInstance
from falflow.jobs import isoformat
from falflow.jobs.store import from_dynamo, to_dynamo

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

WATERMARK_PK: Final = "WATERMARK"
ENDPOINT_PK: Final = "ENDPOINT"
USAGE_PK_PREFIX: Final = "USAGE#"
ANALYTICS_PK_PREFIX: Final = "ANALYTICS#"
COMPUTE_PK: Final = "COMPUTE"
RUN_PK: Final = "RUN"
LATEST_RUN_SK: Final = "latest"

_BATCH_SIZE = 25  # BatchWriteItem's limit
_BATCH_ATTEMPTS = 8

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def usage_key(row: UsageRow) -> tuple[str, str]:
    return f"{USAGE_PK_PREFIX}{day_of(row.bucket).isoformat()}", f"{row.bucket}#{row.endpoint_id}#{row.unit}"


def analytics_key(row: AnalyticsRow) -> tuple[str, str]:
    return f"{ANALYTICS_PK_PREFIX}{day_of(row.bucket).isoformat()}", f"{row.bucket}#{row.endpoint_id}"


def _item(pk: str, sk: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
    plain = {k: v for k, v in to_dynamo(dict(attributes)).items() if v is not None}
    return {k: _serializer.serialize(v) for k, v in {**plain, "pk": pk, "sk": sk}.items()}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


class DynamoUsageTable:
    """`Watermarks`, `EndpointRegistry` and `Aggregates` on the usage table of template.yaml."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table_name
        self._sleep = sleep

    # ------------------------------------------------------------------------------ watermarks

    def get(self, name: str) -> datetime | None:
        response = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": WATERMARK_PK}, "sk": {"S": name}},
            ConsistentRead=True,
        )
        until = response.get("Item", {}).get("until", {}).get("S")
        return datetime.fromisoformat(until) if until else None

    def advance(self, name: str, to: datetime, *, run_id: str) -> bool:
        until = isoformat(to)
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"pk": {"S": WATERMARK_PK}, "sk": {"S": name}},
                UpdateExpression="SET #u = :u, #r = :r",
                # Forward only: a slow run finishing after a newer one must not pull the mark back.
                ConditionExpression="attribute_not_exists(#u) OR #u < :u",
                ExpressionAttributeNames={"#u": "until", "#r": "run_id"},
                ExpressionAttributeValues={":u": {"S": until}, ":r": {"S": run_id}},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

    # ------------------------------------------------------------------------ endpoint registry

    def record_used(self, last_used: Mapping[str, datetime]) -> None:
        for endpoint_id, used_at in last_used.items():
            at = {"S": isoformat(used_at)}
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key={"pk": {"S": ENDPOINT_PK}, "sk": {"S": endpoint_id}},
                    UpdateExpression="SET #l = :t, #f = if_not_exists(#f, :t)",
                    ConditionExpression="attribute_not_exists(#l) OR #l < :t",
                    ExpressionAttributeNames={"#l": "last_used_at", "#f": "first_used_at"},
                    ExpressionAttributeValues={":t": at},
                )
            except ClientError as error:
                if not is_condition_failure(error):  # already as recent: nothing to do
                    raise

    def used_endpoints(self) -> list[str]:
        return [str(item["sk"]) for item in self._partition(ENDPOINT_PK)]

    # ------------------------------------------------------------------------------ aggregates

    def put_usage(self, rows: Sequence[UsageRow]) -> None:
        self._put_all(_item(*usage_key(row), row.model_dump(mode="json")) for row in rows)

    def put_analytics(self, rows: Sequence[AnalyticsRow]) -> None:
        self._put_all(_item(*analytics_key(row), row.model_dump(mode="json")) for row in rows)

    def put_prices(self, rows: Sequence[PriceRow]) -> None:
        self._put_all(_item(PRICE_PK, row.endpoint_id, row.model_dump(mode="json")) for row in rows)

    def stored_prices(self) -> dict[str, PriceRow]:
        prices = (PriceRow.model_validate(_fields(item)) for item in self._partition(PRICE_PK))
        return {price.endpoint_id: price for price in prices}

    def replace_catalogue(self, entries: Iterable[CatalogueEntry], *, taken_at: datetime) -> int:
        wanted = {entry.endpoint_id: entry.model_dump(mode="json") for entry in entries}
        if not wanted:
            # An empty listing is a fault on fal's side; replacing with it would reject every model.
            raise ValueError("refusing to replace the model catalogue with an empty listing")
        changed = self._replace_partition(CATALOGUE_PK, wanted, keep={SNAPSHOT_SK})
        # The marker goes last: a reader that sees it sees the whole snapshot.
        self._client.put_item(
            TableName=self._table,
            Item=_item(
                CATALOGUE_PK, SNAPSHOT_SK, {TAKEN_AT_ATTRIBUTE: isoformat(taken_at), "models": len(wanted)}
            ),
        )
        return changed

    def replace_compute_instances(self, instances: Sequence[ComputeInstance]) -> None:
        self._replace_partition(
            COMPUTE_PK, {instance.id: instance.model_dump(mode="json") for instance in instances}
        )

    def put_run(self, record: RunRecord) -> None:
        self._client.put_item(
            TableName=self._table, Item=_item(RUN_PK, LATEST_RUN_SK, record.model_dump(mode="json"))
        )

    def latest_run(self) -> RunRecord | None:
        response = self._client.get_item(
            TableName=self._table, Key={"pk": {"S": RUN_PK}, "sk": {"S": LATEST_RUN_SK}}
        )
        item = response.get("Item")
        return RunRecord.model_validate(_fields(_plain(item))) if item else None

    # ------------------------------------------------------------------------------- plumbing

    def _partition(self, pk: str) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": pk}},
        }
        while True:
            page = self._client.query(**kwargs)
            for item in page.get("Items", []):
                yield _plain(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _replace_partition(
        self,
        pk: str,
        wanted: Mapping[str, Mapping[str, Any]],
        *,
        keep: frozenset[str] | set[str] = frozenset(),
    ) -> int:
        """Make partition `pk` hold exactly `wanted` (by sk), writing only what differs."""
        existing = {str(item["sk"]): _fields(item) for item in self._partition(pk) if item["sk"] not in keep}
        puts = [
            _item(pk, sk, attributes)
            for sk, attributes in wanted.items()
            if existing.get(sk) != _fields(_plain(_item(pk, sk, attributes)))
        ]
        deletes = [{"pk": {"S": pk}, "sk": {"S": sk}} for sk in existing if sk not in wanted]
        self._batch_write(
            [{"PutRequest": {"Item": item}} for item in puts]
            + [{"DeleteRequest": {"Key": key}} for key in deletes]
        )
        return len(puts) + len(deletes)

    def _put_all(self, items: Iterable[dict[str, Any]]) -> None:
        # One batch may not name a key twice; the last write of a key wins, as it would one by one.
        unique = {(item["pk"]["S"], item["sk"]["S"]): item for item in items}
        self._batch_write([{"PutRequest": {"Item": item}} for item in unique.values()])

    def _batch_write(self, requests: Sequence[dict[str, Any]]) -> None:
        for start in range(0, len(requests), _BATCH_SIZE):
            pending: Any = {self._table: list(requests[start : start + _BATCH_SIZE])}
            for attempt in range(_BATCH_ATTEMPTS):
                pending = self._client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
                if not pending:
                    break
                # Throttled items come back unprocessed: back off (full jitter, not crypto) and resend.
                self._sleep(random.random() * min(2.0, 0.05 * 2**attempt))  # noqa: S311  # nosec B311
            else:
                raise RuntimeError(f"DynamoDB left items unprocessed after {_BATCH_ATTEMPTS} attempts")


def _fields(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in ("pk", "sk")}
