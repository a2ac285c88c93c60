"""Where job records live: the `JobStore` port and its DynamoDB adapter.

Every write is conditional. The two rules that make at-least-once delivery safe:
- `advance` moves a job only forward (by `STATE_RANK`), whatever order events arrive in;
- `bind_request` records fal's request id once: a second, different id for the same job is refused,
  so a duplicated submission can never produce a second stored result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from falflow.jobs.model import FINAL_RANK, STATE_RANK, Job, JobState, TrailEntry, isoformat

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Names shared with template.yaml (a test holds them equal).
JOB_KEY: Final = "job_id"
TTL_ATTRIBUTE: Final = "expires_at"
BY_STATE_INDEX: Final = "ByState"
BY_REQUEST_ID_INDEX: Final = "ByRequestId"


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()
"""Use as a value in `require` to ask that an attribute does not exist."""


@dataclass(frozen=True)
class BindOutcome:
    """What `bind_request` found: the job after the write, and whether the id was ours to bind."""

    job: Job | None
    bound: bool
    conflicting_request_id: str | None = None


class JobStore(Protocol):
    def create(self, job: Job) -> tuple[Job, bool]:
        """Insert `job` unless a job with its id exists; return the stored job and whether it is new."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def advance(
        self,
        job_id: str,
        to: JobState,
        *,
        now: datetime,
        fields: Mapping[str, Any] | None = None,
        require: Mapping[str, Any] | None = None,
        remove: Sequence[str] = (),
    ) -> Job | None:
        """Move the job forward to `to` and set `fields` in the same write.

        Returns the updated job, or None when the job is missing, already at or past `to`, or a
        `require` condition does not hold.
        """
        ...

    def update(
        self,
        job_id: str,
        *,
        fields: Mapping[str, Any] | None = None,
        require: Mapping[str, Any] | None = None,
        remove: Sequence[str] = (),
        max_rank: int | None = None,
    ) -> Job | None:
        """Set fields without changing the state; None when the job is missing or a condition fails.

        `max_rank` additionally requires the job's state rank to be at most that value.
        """
        ...

    def bind_request(
        self, job_id: str, request_id: str, *, fields: Mapping[str, Any] | None = None
    ) -> BindOutcome:
        """Record fal's request id (and `fields`) unless the job already holds a different one."""
        ...

    def claim_submit(self, job_id: str, *, now: datetime, lease: timedelta) -> Job | None:
        """Take the right to send this ACCEPTED job to fal for `lease`; None if someone else holds it."""
        ...

    def add_trail(self, job_id: str, entry: TrailEntry) -> None: ...

    def list_by_state(
        self,
        state: JobState,
        *,
        changed_before: datetime | None = None,
        changed_after: datetime | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """Jobs in `state`, ordered by when they entered it."""
        ...

    def find_by_request_id(self, request_id: str) -> Job | None: ...


# ------------------------------------------------------------------------------------- DynamoDB

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_dynamo(value: Any) -> Any:
    """Plain JSON-able data as DynamoDB wants it (floats become Decimals, exactly as written)."""
    return json.loads(json.dumps(value), parse_float=Decimal)


def from_dynamo(value: Any) -> Any:
    """Undo `to_dynamo`: Decimals back to int or float, sets back to lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, (list, set, tuple)):
        return [from_dynamo(v) for v in value]
    return value


def job_to_item(job: Job) -> dict[str, Any]:
    data = job.model_dump(mode="json", exclude_none=True)
    data["state_rank"] = STATE_RANK[job.state]
    return {k: _serializer.serialize(v) for k, v in to_dynamo(data).items()}


def job_from_item(item: Mapping[str, Any]) -> Job:
    plain = {k: from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}
    return Job.model_validate(plain)


def _json_value(value: Any) -> Any:
    """Field values may be pydantic models (JobError, JobCost …); store their JSON form."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


class _Expression:
    """Builds one UpdateItem's expressions with placeholder names and values."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.conditions: list[str] = [f"attribute_exists({JOB_KEY})"]

    def name(self, path: str) -> str:
        parts = []
        for part in path.split("."):
            placeholder = f"#n{len(self.names)}"
            self.names[placeholder] = part
            parts.append(placeholder)
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _serializer.serialize(to_dynamo(_json_value(value)))
        return placeholder

    def set(self, path: str, value: Any) -> None:
        self.sets.append(f"{self.name(path)} = {self.value(value)}")

    def remove(self, path: str) -> None:
        self.removes.append(self.name(path))

    def require(self, conditions: Mapping[str, Any]) -> None:
        for path, expected in conditions.items():
            if expected is ABSENT:
                self.conditions.append(f"attribute_not_exists({self.name(path)})")
            else:
                self.conditions.append(f"{self.name(path)} = {self.value(expected)}")

    def kwargs(self) -> dict[str, Any]:
        update = []
        if self.sets:
            update.append("SET " + ", ".join(self.sets))
        if self.removes:
            update.append("REMOVE " + ", ".join(self.removes))
        kwargs: dict[str, Any] = {
            "UpdateExpression": " ".join(update),
            "ConditionExpression": " AND ".join(self.conditions),
            "ExpressionAttributeNames": self.names,
            "ReturnValues": "ALL_NEW",
        }
        if self.values:
            kwargs["ExpressionAttributeValues"] = self.values
        return kwargs


def _is_condition_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class DynamoJobStore:
    """`JobStore` on the jobs table of template.yaml."""

    def __init__(self, client: DynamoDBClient, table_name: str, *, retention: timedelta) -> None:
        self._client = client
        self._table = table_name
        self._retention = retention

    def _key(self, job_id: str) -> dict[str, Any]:
        return {JOB_KEY: {"S": job_id}}

    def _update(self, job_id: str, expression: _Expression) -> Job | None:
        try:
            response = self._client.update_item(
                TableName=self._table, Key=self._key(job_id), **expression.kwargs()
            )
        except ClientError as error:
            if _is_condition_failure(error):
                return None
            raise
        return job_from_item(response["Attributes"])

    def create(self, job: Job) -> tuple[Job, bool]:
        item = job_to_item(job)
        if job.is_final and job.expires_at is None:
            item[TTL_ATTRIBUTE] = {"N": str(self._expiry(datetime.fromisoformat(job.state_changed_at)))}
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(#k)",
                ExpressionAttributeNames={"#k": JOB_KEY},
            )
        except ClientError as error:
            if not _is_condition_failure(error):
                raise
            existing = self.get(job.job_id)
            if existing is None:  # deleted between the two calls: TTL raced us; try once more
                return self.create(job)
            return existing, False
        return job_from_item(item), True

    def get(self, job_id: str) -> Job | None:
        response = self._client.get_item(TableName=self._table, Key=self._key(job_id), ConsistentRead=True)
        item = response.get("Item")
        return job_from_item(item) if item else None

    def _expiry(self, now: datetime) -> int:
        return int((now + self._retention).timestamp())

    def advance(
        self,
        job_id: str,
        to: JobState,
        *,
        now: datetime,
        fields: Mapping[str, Any] | None = None,
        require: Mapping[str, Any] | None = None,
        remove: Sequence[str] = (),
    ) -> Job | None:
        rank = STATE_RANK[to]
        at = isoformat(now)
        expression = _Expression()
        expression.set("state", to.value)
        expression.set("state_rank", rank)
        expression.set("state_changed_at", at)
        expression.set(f"state_times.{to.value}", at)
        if rank == FINAL_RANK:
            expression.set(TTL_ATTRIBUTE, self._expiry(now))
        for path, value in (fields or {}).items():
            expression.set(path, value)
        for path in remove:
            expression.remove(path)
        expression.conditions.append(f"{expression.name('state_rank')} < {expression.value(rank)}")
        expression.require(require or {})
        return self._update(job_id, expression)

    def update(
        self,
        job_id: str,
        *,
        fields: Mapping[str, Any] | None = None,
        require: Mapping[str, Any] | None = None,
        remove: Sequence[str] = (),
        max_rank: int | None = None,
    ) -> Job | None:
        expression = _Expression()
        for path, value in (fields or {}).items():
            expression.set(path, value)
        for path in remove:
            expression.remove(path)
        if max_rank is not None:
            expression.conditions.append(f"{expression.name('state_rank')} <= {expression.value(max_rank)}")
        expression.require(require or {})
        if not expression.sets and not expression.removes:
            raise ValueError("update needs fields to set or remove")
        return self._update(job_id, expression)

    def bind_request(
        self, job_id: str, request_id: str, *, fields: Mapping[str, Any] | None = None
    ) -> BindOutcome:
        expression = _Expression()
        expression.set("request_id", request_id)
        for path, value in (fields or {}).items():
            expression.set(path, value)
        rid = expression.name("request_id")
        expression.conditions.append(
            f"(attribute_not_exists({rid}) OR {rid} = {expression.value(request_id)})"
        )
        job = self._update(job_id, expression)
        if job is not None:
            return BindOutcome(job=job, bound=True)
        current = self.get(job_id)
        return BindOutcome(
            job=current, bound=False, conflicting_request_id=current.request_id if current else None
        )

    def claim_submit(self, job_id: str, *, now: datetime, lease: timedelta) -> Job | None:
        expression = _Expression()
        expression.set("submit_lease_until", isoformat(now + lease))
        attempts = expression.name("attempts")
        expression.sets.append(
            f"{attempts} = if_not_exists({attempts}, {expression.value(0)}) + {expression.value(1)}"
        )
        lease_name = expression.name("submit_lease_until")
        expression.conditions.append(
            f"{expression.name('state')} = {expression.value(JobState.ACCEPTED.value)}"
        )
        expression.conditions.append(f"attribute_not_exists({expression.name('request_id')})")
        expression.conditions.append(
            f"(attribute_not_exists({lease_name}) OR {lease_name} < {expression.value(isoformat(now))})"
        )
        return self._update(job_id, expression)

    def add_trail(self, job_id: str, entry: TrailEntry) -> None:
        expression = _Expression()
        trail = expression.name("trail")
        empty, new = expression.value([]), expression.value([entry])
        expression.sets.append(f"{trail} = list_append(if_not_exists({trail}, {empty}), {new})")
        self._update(job_id, expression)

    def list_by_state(
        self,
        state: JobState,
        *,
        changed_before: datetime | None = None,
        changed_after: datetime | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> Iterator[Job]:
        key = "#s = :s"
        values: dict[str, Any] = {":s": {"S": state.value}}
        names = {"#s": "state"}
        if changed_after:
            values[":lo"] = {"S": isoformat(changed_after)}
        if changed_before:
            values[":hi"] = {"S": isoformat(changed_before)}
        if changed_before or changed_after:
            names["#t"] = "state_changed_at"
            key += {
                (True, True): " AND #t BETWEEN :lo AND :hi",
                (True, False): " AND #t >= :lo",
                (False, True): " AND #t <= :hi",
            }[(changed_after is not None, changed_before is not None)]
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": BY_STATE_INDEX,
            "KeyConditionExpression": key,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not newest_first,
        }
        seen = 0
        while True:
            if limit is not None:
                kwargs["Limit"] = max(limit - seen, 1)
            page = self._client.query(**kwargs)
            for item in page.get("Items", []):
                job = job_from_item(item)
                if job.state != state:  # the index is eventually consistent; trust the item
                    continue
                yield job
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def find_by_request_id(self, request_id: str) -> Job | None:
        page = self._client.query(
            TableName=self._table,
            IndexName=BY_REQUEST_ID_INDEX,
            KeyConditionExpression="#r = :r",
            ExpressionAttributeNames={"#r": "request_id"},
            ExpressionAttributeValues={":r": {"S": request_id}},
            Limit=1,
        )
        items = page.get("Items", [])
        return self.get(items[0][JOB_KEY]["S"]) if items else None
