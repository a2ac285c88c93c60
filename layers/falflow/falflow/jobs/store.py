"""Where job records live: the `JobStore` port, one method per step of a job's write protocol, and
its DynamoDB adapter.

Each transition owns its condition: states move forward only by rank
(docs/adr/0002-job-states-move-forward-only.md); an ambiguous submit keeps its lease and fal's first
request id wins (docs/adr/0003-an-ambiguous-submit-is-resolved-before-any-resend.md); leases are
compare-and-set (docs/adr/0004-a-lease-holds-a-job-for-one-worker.md); a completion is recorded once
(docs/adr/0005-fal-answers-enter-through-one-completion-handoff.md); a fal request binds at most one
job: every write that binds one first claims it for its job
(docs/adr/0017-a-lost-submit-reply-is-looked-up-in-fals-request-history.md).
A refused write returns None (or an unbound `BindOutcome`); the caller reads the record to learn why.
The table of transitions is in docs/architecture.md, "The write protocol".
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from falflow.aws.dynamodb import is_condition_failure
from falflow.jobs.batch import batch_of_job
from falflow.jobs.model import (
    FINAL_RANK,
    STATE_RANK,
    Job,
    JobCost,
    JobError,
    JobHold,
    JobState,
    SpendReservation,
    TrailEntry,
    appended_trail,
    isoformat,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Names shared with template.yaml (a test holds them equal).
JOB_KEY: Final = "job_id"
TTL_ATTRIBUTE: Final = "expires_at"
BY_STATE_INDEX: Final = "ByStateShard"
BY_REQUEST_ID_INDEX: Final = "ByRequestId"
# The BY_STATE_INDEX partition key: the state and one of STATE_SHARDS shards fixed by the job id, so
# 1,000 jobs/s entering one state spread over STATE_SHARDS index partitions, not one. Changing the
# count re-shards every item (docs/adr/0023-the-state-index-is-sharded.md).
STATE_SHARD_ATTRIBUTE: Final = "state_shard"
STATE_SHARDS: Final = 16


def state_shard(job_id: str, state: JobState) -> str:
    """The `BY_STATE_INDEX` key of job `job_id` while it is in `state`: ``STATE#n``."""
    digest = hashlib.blake2b(job_id.encode(), digest_size=8).digest()
    return f"{state.value}#{int.from_bytes(digest) % STATE_SHARDS}"


# A fal request's claim is an item of the jobs table under this key prefix; "#" is never part of a
# job id (falflow.submit.request.JOB_ID_PATTERN), and the item has neither a state nor a
# request_id, so neither index lists it.
REQUEST_CLAIM_PREFIX: Final = "fal-request#"
CLAIMED_BY: Final = "claimed_by"

# A trail write is a compare-and-set on what was read; this many tries before contention is an error.
_TRAIL_ATTEMPTS: Final = 5

# The rank of ACCEPTED: writes to a job fal has not heard of yet require it.
_BEFORE_SUBMIT_RANK: Final = STATE_RANK[JobState.ACCEPTED]


class TrailContendedError(RuntimeError):
    """Other writers kept appending to a job's trail: the caller's message is retried."""


@dataclass(frozen=True)
class RequestUrls:
    """What fal returns with a request id besides it: its queue URLs and gateway id (unset: kept)."""

    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None
    gateway_request_id: str | None = None

    def fields(self) -> dict[str, str]:
        values = {
            "status_url": self.status_url,
            "response_url": self.response_url,
            "cancel_url": self.cancel_url,
            "gateway_request_id": self.gateway_request_id,
        }
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class BindOutcome:
    """What `bind_request` found: the job after the write, and whether the id was ours to bind."""

    job: Job | None
    bound: bool
    conflicting_request_id: str | None = None


@dataclass(frozen=True)
class CounterCharge:
    """An amount added to a counter item of another table (a budget window: falflow.spend) in the
    same transaction as the job's write; with a `ceiling`, the whole write is refused if the counter
    would pass it."""

    table: str
    key: str  # the counter item's ``pk``
    amount: Decimal
    ceiling: Decimal | None = None


@dataclass(frozen=True)
class ChargeOutcome:
    """What a write with charges did: the job after it, or (refused) which charge did not fit."""

    job: Job | None
    full: CounterCharge | None = None

    @property
    def written(self) -> bool:
        return self.job is not None


class JobStore(Protocol):
    """The job's write protocol. Every write is conditional; None means refused (or no such job)."""

    # ---------------------------------------------------------------------------------- queries

    def get(self, job_id: str) -> Job | None: ...

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs of `job_ids` that exist, by id (any number; read in pages)."""
        ...

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

    def list_unannounced(
        self, state: JobState, *, changed_before: datetime, changed_after: datetime
    ) -> Iterator[Job]:
        """Jobs in `state` (a final one) that entered it between the two times and whose completion
        event is not marked published."""
        ...

    def find_by_request_id(self, request_id: str) -> Job | None: ...

    def request_holder(self, request_id: str) -> str | None:
        """The job that claimed fal request `request_id`, if any (ADR 0017)."""
        ...

    # ----------------------------------------------------------------------- submit (ADR 0003)

    def create(self, job: Job) -> tuple[Job, bool]:
        """Insert `job` (ACCEPTED with its submit lease, or REJECTED) unless its id exists; return the
        stored job and whether it is new."""
        ...

    def claim_submit_lease(self, job_id: str, *, now: datetime, lease: timedelta) -> Job | None:
        """Take the right to send this job to fal for `lease` and count the attempt; refused unless
        ACCEPTED, no request id and no live submit lease."""
        ...

    def record_submission(
        self, job_id: str, request_id: str, urls: RequestUrls, *, now: datetime
    ) -> Job | None:
        """fal queued the job: SUBMITTED with its request id and URLs, submit lease dropped; refused
        unless the job is before SUBMITTED with no request id (the webhook may have been first) and
        the request is not claimed by another job."""
        ...

    def bind_request(self, job_id: str, request_id: str, *, urls: RequestUrls | None = None) -> BindOutcome:
        """Record fal's request id (and `urls`) unless the job already holds a different one or the
        request is claimed by another job."""
        ...

    def record_duplicate_request(self, job_id: str, request_id: str) -> Job | None:
        """Note `request_id` as a duplicate request of this job (to be cancelled), claiming it for
        this job; refused if another job holds it or it is the job's bound request."""
        ...

    def confirm_submission(self, job_id: str, request_id: str, *, now: datetime) -> Job | None:
        """SUBMITTED and submit lease dropped for a bound request; refused unless the job is before
        SUBMITTED and holds `request_id`."""
        ...

    def record_ambiguous_submit(self, job_id: str, *, now: datetime, hold_until: datetime) -> Job | None:
        """fal's reply was lost: note `submit_ambiguous_at` and hold the submit lease until
        `hold_until`; refused unless still ACCEPTED with no request id."""
        ...

    def release_submit_lease(self, job_id: str, *, held_until: str) -> Job | None:
        """Drop the submit lease this worker holds; refused unless the lease still reads `held_until`,
        the job is ACCEPTED and has no request id."""
        ...

    def reject(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        """REJECTED with `error` before fal heard of it; refused if a request id is bound or final."""
        ...

    def fail_before_submit(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        """FAILED with fal's refusal `error`; refused if a request id is bound or the job is final."""
        ...

    # -------------------------------------------------------- spend control (falflow.spend)

    def reserve_spend(
        self, job_id: str, reservation: SpendReservation, charges: Sequence[CounterCharge], *, lease: str
    ) -> ChargeOutcome:
        """Record the job's reservation and add its charges, all or nothing; refused unless the job
        is ACCEPTED under submit lease `lease`, has no reservation, and every charge fits."""
        ...

    def hold(self, job_id: str, hold: JobHold, *, now: datetime, lease: str | None) -> Job | None:
        """HELD with `hold`, the submit lease dropped; refused unless ACCEPTED with no request id (and,
        given `lease`, still under that submit lease)."""
        ...

    def release_held(
        self,
        job_id: str,
        *,
        now: datetime,
        reservation: SpendReservation | None = None,
        charges: Sequence[CounterCharge] = (),
    ) -> ChargeOutcome:
        """HELD back to ACCEPTED (no lease: the submit path sends it), with `reservation` and its
        charges if given, all or nothing; refused unless HELD and every charge fits."""
        ...

    def settle_reservation(
        self, job_id: str, *, amount: float, charges: Sequence[CounterCharge], now: datetime
    ) -> ChargeOutcome:
        """Replace the reservation's estimate by `amount` (billed, or 0 when fal never ran the job),
        with the charges that move each counter by the difference; refused once settled."""
        ...

    # ------------------------------------------------------------------ fal's answer (ADR 0005)

    def mark_in_progress(self, job_id: str, request_id: str, *, now: datetime) -> Job | None:
        """IN_PROGRESS; refused unless the job holds `request_id` and is before IN_PROGRESS."""
        ...

    def record_completion(
        self, job_id: str, request_id: str, *, completion_key: str, source: str, now: datetime
    ) -> Job | None:
        """STORING with the inbox key of fal's completion; refused unless the job holds
        `request_id`, has no completion yet and is not final."""
        ...

    def mark_handed_over(self, job_id: str, completion_key: str, *, now: datetime) -> Job | None:
        """Note that the outputs message was sent; refused unless the job holds `completion_key`."""
        ...

    # ----------------------------------------------------------------------- store (ADR 0004)

    def take_store_lease(
        self, job_id: str, *, seen_until: str | None, now: datetime, lease: timedelta
    ) -> Job | None:
        """Hold the job for one store run until `now + lease`; refused if `seen_until` (the lease
        last read, None for none) is live at `now` or the stored lease no longer reads it."""
        ...

    def release_store_lease(self, job_id: str, *, held_until: str) -> Job | None:
        """Drop the store lease; refused unless it still reads `held_until`."""
        ...

    def take_over_store_lease(self, job_id: str, *, expired_until: str, now: datetime) -> Job | None:
        """The run holding the store lease died: drop the lease, count the takeover and note the new
        hand-off; refused unless the job is STORING, the lease still reads `expired_until` and that is
        not after `now`."""
        ...

    def take_over_handoff(self, job_id: str, *, handed_over_at: str, now: datetime) -> Job | None:
        """No store run took the outputs message handed over at `handed_over_at` (its receives ran
        out before one did): count a takeover and note the new hand-off; refused unless the job is
        STORING with no store lease and its hand-off still reads `handed_over_at`."""
        ...

    def complete(
        self,
        job_id: str,
        *,
        request_id: str | None,
        outputs: Sequence[str],
        result_key: str,
        timings: Mapping[str, Any],
        now: datetime,
        served_from: str | None = None,
        payloads_deleted_at: str | None = None,
    ) -> Job | None:
        """COMPLETED with its outputs (and the endpoint that served it, and when fal's payloads were
        deleted, where known); refused if final, or (given a `request_id`) the job holds another."""
        ...

    def fail(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        """FAILED with `error`; refused if the job is final."""
        ...

    def fail_unanswered(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        """FAILED with `error` (given up, result lost at fal); refused if final or a completion is
        recorded."""
        ...

    def claim_event(self, job_id: str, *, now: datetime, until: datetime) -> Job | None:
        """Take the right to publish the completion event (it may be sent until `until`); refused if
        it was published or another claim has not run out."""
        ...

    def mark_event_published(self, job_id: str, *, now: datetime) -> Job | None:
        """Note that the completion event was published; refused if it was noted before."""
        ...

    # --------------------------------------------------------------------------- collect, ops

    def record_cost(self, job_id: str, cost: JobCost, *, replace_existing: bool) -> Job | None:
        """Store `cost`; unless `replace_existing` (billing events), refused where a cost is stored."""
        ...

    def cancel_unsubmitted(self, job_id: str, *, now: datetime) -> Job | None:
        """CANCELLED before fal heard of it; refused if a request id is bound or the job is final."""
        ...

    def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        """CANCELLED (after fal was asked to cancel); refused if the job is final."""
        ...

    def add_trail(self, job_id: str, entry: TrailEntry) -> None:
        """Append `entry` to the job's trail, keeping the newest `MAX_TRAIL_ENTRIES` and counting the
        dropped ones in `trail_dropped`; nothing if there is no such job or the trail already holds
        the same note (`TrailEntry.repeats`: a replay adds nothing)."""
        ...


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
    data[STATE_SHARD_ATTRIBUTE] = state_shard(job.job_id, job.state)
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

    def require_absent(self, path: str) -> None:
        self.conditions.append(f"attribute_not_exists({self.name(path)})")

    def require_equal(self, path: str, expected: Any) -> None:
        self.conditions.append(f"{self.name(path)} = {self.value(expected)}")

    def require_absent_or_equal(self, path: str, expected: Any) -> None:
        name = self.name(path)
        self.conditions.append(f"(attribute_not_exists({name}) OR {name} = {self.value(expected)})")

    def require_trail_as_read(self, size: int, dropped: int) -> None:
        """The trail still holds `size` entries and `dropped` dropped ones (absent counts as none)."""
        trail = self.name("trail")
        size_check = f"size({trail}) = {self.value(size)}"
        self.conditions.append(size_check if size else f"(attribute_not_exists({trail}) OR {size_check})")
        if dropped:
            self.require_equal("trail_dropped", dropped)
        else:
            self.require_absent_or_equal("trail_dropped", 0)

    def require_rank(self, operator: str, rank: int) -> None:
        self.conditions.append(f"{self.name('state_rank')} {operator} {self.value(rank)}")

    def set_urls(self, urls: RequestUrls | None) -> None:
        for path, value in (urls.fields() if urls else {}).items():
            self.set(path, value)

    def transact_update(self, table: str, key: Mapping[str, Any]) -> dict[str, Any]:
        """This update as one item of a TransactWriteItems call."""
        update = {"TableName": table, "Key": dict(key), **self.kwargs()}
        del update["ReturnValues"]
        return {"Update": update}

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


_BATCH_GET_KEYS: Final = 100  # DynamoDB's BatchGetItem limit


class DynamoJobStore:
    """`JobStore` on the jobs table of template.yaml."""

    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        retention: timedelta,
        batch_table: str | None = None,
    ) -> None:
        self._client = client
        self._table = table_name
        self._retention = retention
        # Where a batch line's final state is tallied, in the transaction that makes it final.
        self._batch_table = batch_table

    def _key(self, job_id: str) -> dict[str, Any]:
        return {JOB_KEY: {"S": job_id}}

    def _expiry(self, now: datetime) -> int:
        return int((now + self._retention).timestamp())

    def _update(self, job_id: str, expression: _Expression) -> Job | None:
        try:
            response = self._client.update_item(
                TableName=self._table, Key=self._key(job_id), **expression.kwargs()
            )
        except ClientError as error:
            if is_condition_failure(error):
                return None
            raise
        return job_from_item(response["Attributes"])

    def _advance(self, job_id: str, to: JobState, now: datetime, expression: _Expression) -> Job | None:
        """The one forward-only move: `to` only if the stored rank is lower (ADR 0002)."""
        rank = STATE_RANK[to]
        self._enter(job_id, to, now, expression)
        expression.require_rank("<", rank)
        if rank != FINAL_RANK:
            return self._update(job_id, expression)
        expression.set(TTL_ATTRIBUTE, self._expiry(now))
        tally = self._batch_tally(job_id, to)
        if tally is None:
            return self._update(job_id, expression)
        written = self._transact([expression.transact_update(self._table, self._key(job_id)), tally])
        return self.get(job_id) if written else None

    def _batch_tally(self, job_id: str, state: JobState) -> dict[str, Any] | None:
        """The batch counters a batch line's final `state` adds to (None for a job of no batch)."""
        batch = batch_of_job(job_id)
        if batch is None or self._batch_table is None:
            return None
        return {"Update": batch_tally_update(self._batch_table, batch, state)}

    def _transact(self, items: list[dict[str, Any]]) -> bool:
        """Write `items` all or nothing; False when the first (the job's) condition refused it."""
        try:
            self._client.transact_write_items(TransactItems=items)  # type: ignore[arg-type]
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = [reason.get("Code") for reason in error.response.get("CancellationReasons", [])]
            if reasons[:1] == ["ConditionalCheckFailed"] and all(
                code in ("None", None) for code in reasons[1:]
            ):
                return False
            raise  # a conflict with another transaction, throttling: the caller retries
        return True

    def _enter(self, job_id: str, to: JobState, now: datetime, expression: _Expression) -> None:
        """Set the fields of the job's state: by `_advance`, and alone for a move between states of
        one rank (HELD and ACCEPTED), which a condition on the current state guards instead."""
        at = isoformat(now)
        expression.set("state", to.value)
        expression.set("state_rank", STATE_RANK[to])
        expression.set(STATE_SHARD_ATTRIBUTE, state_shard(job_id, to))
        expression.set("state_changed_at", at)
        expression.set(f"state_times.{to.value}", at)

    def _before_submit(self, expression: _Expression) -> _Expression:
        """Fal has not heard of the job: no request id; the submit lease goes with the write."""
        expression.remove("submit_lease_until")
        expression.require_absent("request_id")
        return expression

    # ---------------------------------------------------------------------------------- queries

    def get(self, job_id: str) -> Job | None:
        response = self._client.get_item(TableName=self._table, Key=self._key(job_id), ConsistentRead=True)
        item = response.get("Item")
        return job_from_item(item) if item else None

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        jobs: dict[str, Job] = {}
        wanted = list(dict.fromkeys(job_ids))
        for start in range(0, len(wanted), _BATCH_GET_KEYS):
            keys: list[Any] = [self._key(job_id) for job_id in wanted[start : start + _BATCH_GET_KEYS]]
            while keys:
                response = self._client.batch_get_item(
                    RequestItems={self._table: {"Keys": keys, "ConsistentRead": True}}
                )
                for item in response.get("Responses", {}).get(self._table, []):
                    job = job_from_item(item)
                    jobs[job.job_id] = job
                unprocessed: Any = response.get("UnprocessedKeys") or {}
                keys = list(unprocessed.get(self._table, {}).get("Keys", []))
        return jobs

    def list_by_state(
        self,
        state: JobState,
        *,
        changed_before: datetime | None = None,
        changed_after: datetime | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> Iterator[Job]:
        """Every shard of `state` queried at once, merged by when each job entered the state."""
        queries = self._shard_queries(
            state,
            changed_before,
            changed_after,
            ScanIndexForward=not newest_first,
            **({"Limit": max(limit, 1)} if limit is not None else {}),
        )
        return self._merged(queries, state, newest_first=newest_first, limit=limit)

    def list_unannounced(
        self, state: JobState, *, changed_before: datetime, changed_after: datetime
    ) -> Iterator[Job]:
        queries = self._shard_queries(
            state, changed_before, changed_after, FilterExpression="attribute_not_exists(event_published_at)"
        )
        return self._merged(queries, state, newest_first=False, limit=None)

    def _shard_queries(
        self, state: JobState, before: datetime | None, after: datetime | None, **extra: Any
    ) -> list[dict[str, Any]]:
        """One `BY_STATE_INDEX` query per shard of `state`, entered between `after` and `before`."""
        return [
            {
                "TableName": self._table,
                "IndexName": BY_STATE_INDEX,
                **extra,
                **_state_key(f"{state.value}#{shard}", before, after),
            }
            for shard in range(STATE_SHARDS)
        ]

    def _merged(
        self, queries: list[dict[str, Any]], state: JobState, *, newest_first: bool, limit: int | None
    ) -> Iterator[Job]:
        with ThreadPoolExecutor(max_workers=STATE_SHARDS, thread_name_prefix="by-state") as pool:
            first_pages = list(pool.map(lambda query: self._client.query(**query), queries))
        shards = [self._shard_items(query, page) for query, page in zip(queries, first_pages, strict=True)]
        seen = 0
        for item in heapq.merge(
            *shards, key=lambda item: item["state_changed_at"]["S"], reverse=newest_first
        ):
            job = job_from_item(item)
            if job.state != state:  # the index is eventually consistent; trust the item
                continue
            yield job
            seen += 1
            if limit is not None and seen >= limit:
                return

    def _shard_items(self, query: dict[str, Any], page: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """One shard's items in index order: `page` first, later pages as the merge reaches them."""
        while True:
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            page = self._client.query(**query, ExclusiveStartKey=page["LastEvaluatedKey"])

    def backfill_state_shards(self) -> int:
        """Give every job its `state_shard` (jobs written before the index was sharded); returns how
        many were updated. A one-off scan of the table, safe to repeat and to run under traffic: each
        update requires the state it was computed for, and a later state write sets the shard itself."""
        updated = 0
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "ProjectionExpression": "#k, #s, #h",
            "ExpressionAttributeNames": {"#k": JOB_KEY, "#s": "state", "#h": STATE_SHARD_ATTRIBUTE},
        }
        while True:
            page = self._client.scan(**kwargs)
            for item in page.get("Items", []):
                if "state" not in item:
                    continue  # a request claim (REQUEST_CLAIM_PREFIX), not a job
                job_id, state = item[JOB_KEY]["S"], JobState(item["state"]["S"])
                shard = state_shard(job_id, state)
                if item.get(STATE_SHARD_ATTRIBUTE, {}).get("S") == shard:
                    continue
                expression = _Expression()
                expression.set(STATE_SHARD_ATTRIBUTE, shard)
                expression.require_equal("state", state.value)
                updated += self._update(job_id, expression) is not None
            if "LastEvaluatedKey" not in page:
                return updated
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

    def request_holder(self, request_id: str) -> str | None:
        response = self._client.get_item(
            TableName=self._table, Key=self._key(_claim_key(request_id)), ConsistentRead=True
        )
        item = response.get("Item")
        return item[CLAIMED_BY]["S"] if item else None

    def _claim(self, job_id: str, request_id: str) -> bool:
        """Claim fal request `request_id` for `job_id` (true if it is now, or already was, ours)."""
        expiry = self._expiry(datetime.now(UTC))
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    JOB_KEY: {"S": _claim_key(request_id)},
                    CLAIMED_BY: {"S": job_id},
                    TTL_ATTRIBUTE: {"N": str(expiry)},
                },
                ConditionExpression="attribute_not_exists(#k) OR #c = :job",
                ExpressionAttributeNames={"#k": JOB_KEY, "#c": CLAIMED_BY},
                ExpressionAttributeValues={":job": {"S": job_id}},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

    # ----------------------------------------------------------------------------------- submit

    def create(self, job: Job) -> tuple[Job, bool]:
        item = job_to_item(job)
        if job.is_final and job.expires_at is None:
            item[TTL_ATTRIBUTE] = {"N": str(self._expiry(datetime.fromisoformat(job.state_changed_at)))}
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": "attribute_not_exists(#k)",
            "ExpressionAttributeNames": {"#k": JOB_KEY},
        }
        tally = self._batch_tally(job.job_id, job.state) if job.is_final else None
        try:
            if tally is None:
                self._client.put_item(**put)
                created = True
            else:
                created = self._transact([{"Put": put}, tally])
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            created = False
        if not created:
            existing = self.get(job.job_id)
            if existing is None:  # deleted between the two calls: TTL raced us; try once more
                return self.create(job)
            return existing, False
        return job_from_item(item), True

    def claim_submit_lease(self, job_id: str, *, now: datetime, lease: timedelta) -> Job | None:
        expression = _Expression()
        expression.set("submit_lease_until", isoformat(now + lease))
        attempts = expression.name("attempts")
        expression.sets.append(
            f"{attempts} = if_not_exists({attempts}, {expression.value(0)}) + {expression.value(1)}"
        )
        lease_name = expression.name("submit_lease_until")
        expression.require_equal("state", JobState.ACCEPTED.value)
        expression.require_absent("request_id")
        expression.conditions.append(
            f"(attribute_not_exists({lease_name}) OR {lease_name} < {expression.value(isoformat(now))})"
        )
        return self._update(job_id, expression)

    def record_submission(
        self, job_id: str, request_id: str, urls: RequestUrls, *, now: datetime
    ) -> Job | None:
        if not self._claim(job_id, request_id):
            return None
        expression = self._before_submit(_Expression())
        expression.set("request_id", request_id)
        expression.set_urls(urls)
        return self._advance(job_id, JobState.SUBMITTED, now, expression)

    def bind_request(self, job_id: str, request_id: str, *, urls: RequestUrls | None = None) -> BindOutcome:
        job = None
        if self._claim(job_id, request_id):
            expression = _Expression()
            expression.set("request_id", request_id)
            expression.set_urls(urls)
            expression.require_absent_or_equal("request_id", request_id)
            job = self._update(job_id, expression)
        if job is not None:
            return BindOutcome(job=job, bound=True)
        current = self.get(job_id)
        return BindOutcome(
            job=current, bound=False, conflicting_request_id=current.request_id if current else None
        )

    def record_duplicate_request(self, job_id: str, request_id: str) -> Job | None:
        if not self._claim(job_id, request_id):
            return None
        expression = _Expression()
        duplicates = expression.name("duplicate_requests")
        empty, new = expression.value([]), expression.value([request_id])
        expression.sets.append(f"{duplicates} = list_append(if_not_exists({duplicates}, {empty}), {new})")
        bound = expression.name("request_id")
        # Not the bound request, and noted once.
        expression.conditions.append(
            f"(attribute_not_exists({bound}) OR {bound} <> {expression.value(request_id)})"
        )
        noted = f"contains({duplicates}, {expression.value(request_id)})"
        expression.conditions.append(f"(attribute_not_exists({duplicates}) OR NOT {noted})")
        return self._update(job_id, expression)

    def confirm_submission(self, job_id: str, request_id: str, *, now: datetime) -> Job | None:
        expression = _Expression()
        expression.remove("submit_lease_until")
        expression.require_equal("request_id", request_id)
        return self._advance(job_id, JobState.SUBMITTED, now, expression)

    def record_ambiguous_submit(self, job_id: str, *, now: datetime, hold_until: datetime) -> Job | None:
        expression = _Expression()
        expression.set("submit_ambiguous_at", isoformat(now))
        expression.set("submit_lease_until", isoformat(hold_until))
        expression.require_absent("request_id")
        expression.require_rank("<=", _BEFORE_SUBMIT_RANK)
        return self._update(job_id, expression)

    def release_submit_lease(self, job_id: str, *, held_until: str) -> Job | None:
        expression = self._before_submit(_Expression())
        expression.require_equal("submit_lease_until", held_until)
        expression.require_rank("<=", _BEFORE_SUBMIT_RANK)
        return self._update(job_id, expression)

    def reject(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        expression = self._before_submit(_Expression())
        expression.set("error", error)
        return self._advance(job_id, JobState.REJECTED, now, expression)

    def fail_before_submit(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        expression = self._before_submit(_Expression())
        expression.set("error", error)
        return self._advance(job_id, JobState.FAILED, now, expression)

    # --------------------------------------------------------------------------- spend control

    def reserve_spend(
        self, job_id: str, reservation: SpendReservation, charges: Sequence[CounterCharge], *, lease: str
    ) -> ChargeOutcome:
        expression = _Expression()
        expression.set("reservation", reservation)
        expression.require_equal("state", JobState.ACCEPTED.value)
        expression.require_equal("submit_lease_until", lease)
        expression.require_absent("request_id")
        expression.require_absent("reservation")
        return self._charged(job_id, expression, charges)

    def hold(self, job_id: str, hold: JobHold, *, now: datetime, lease: str | None) -> Job | None:
        expression = self._before_submit(_Expression())
        expression.set("hold", hold)
        expression.require_equal("state", JobState.ACCEPTED.value)
        if lease is not None:
            expression.require_equal("submit_lease_until", lease)
        self._enter(job_id, JobState.HELD, now, expression)
        return self._update(job_id, expression)

    def release_held(
        self,
        job_id: str,
        *,
        now: datetime,
        reservation: SpendReservation | None = None,
        charges: Sequence[CounterCharge] = (),
    ) -> ChargeOutcome:
        expression = self._before_submit(_Expression())
        expression.remove("hold")
        expression.require_equal("state", JobState.HELD.value)
        if reservation is not None:
            expression.set("reservation", reservation)
            expression.require_absent("reservation")
        self._enter(job_id, JobState.ACCEPTED, now, expression)
        return self._charged(job_id, expression, charges)

    def settle_reservation(
        self, job_id: str, *, amount: float, charges: Sequence[CounterCharge], now: datetime
    ) -> ChargeOutcome:
        expression = _Expression()
        expression.set("reservation.settled_at", isoformat(now))
        expression.set("reservation.settled_amount", amount)
        expression.conditions.append(f"attribute_exists({expression.name('reservation')})")
        expression.require_absent("reservation.settled_at")
        return self._charged(job_id, expression, charges)

    def _charged(
        self, job_id: str, expression: _Expression, charges: Sequence[CounterCharge]
    ) -> ChargeOutcome:
        """The job's update and its charges in one transaction (alone when there are none)."""
        if not charges:
            return ChargeOutcome(self._update(job_id, expression))
        for charge in charges:
            if charge.ceiling is not None and charge.amount > charge.ceiling:
                return ChargeOutcome(None, full=charge)  # can never fit, whatever was spent
        items: list[Any] = [expression.transact_update(self._table, self._key(job_id))]
        items.extend(_charge_update(charge) for charge in charges)
        try:
            self._client.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            reasons = [reason.get("Code") for reason in error.response.get("CancellationReasons", [])]
            if any(code not in ("None", "ConditionalCheckFailed", None) for code in reasons):
                raise  # a conflict with another transaction, throttling: the caller retries
            full = next(
                (
                    charge
                    for charge, code in zip(charges, reasons[1:], strict=False)
                    if code == "ConditionalCheckFailed"
                ),
                None,
            )
            return ChargeOutcome(None, full=full)
        return ChargeOutcome(self.get(job_id))

    # ----------------------------------------------------------------------------- fal's answer

    def mark_in_progress(self, job_id: str, request_id: str, *, now: datetime) -> Job | None:
        expression = _Expression()
        expression.require_equal("request_id", request_id)
        return self._advance(job_id, JobState.IN_PROGRESS, now, expression)

    def record_completion(
        self, job_id: str, request_id: str, *, completion_key: str, source: str, now: datetime
    ) -> Job | None:
        expression = _Expression()
        expression.set("completion_key", completion_key)
        expression.set("completion_source", source)
        expression.require_equal("request_id", request_id)
        expression.require_absent("completion_key")
        return self._advance(job_id, JobState.STORING, now, expression)

    def mark_handed_over(self, job_id: str, completion_key: str, *, now: datetime) -> Job | None:
        expression = _Expression()
        expression.set("completion_enqueued_at", isoformat(now))
        expression.require_equal("completion_key", completion_key)
        return self._update(job_id, expression)

    # ------------------------------------------------------------------------------------ store

    def take_store_lease(
        self, job_id: str, *, seen_until: str | None, now: datetime, lease: timedelta
    ) -> Job | None:
        if seen_until is not None and seen_until > isoformat(now):
            return None
        expression = _Expression()
        expression.set("store_lease_until", isoformat(now + lease))
        if seen_until is None:
            expression.require_absent("store_lease_until")
        else:
            expression.require_equal("store_lease_until", seen_until)
        return self._update(job_id, expression)

    def release_store_lease(self, job_id: str, *, held_until: str) -> Job | None:
        expression = _Expression()
        expression.remove("store_lease_until")
        expression.require_equal("store_lease_until", held_until)
        return self._update(job_id, expression)

    def take_over_store_lease(self, job_id: str, *, expired_until: str, now: datetime) -> Job | None:
        if expired_until > isoformat(now):
            return None
        expression = _takeover(now)
        expression.remove("store_lease_until")
        expression.require_equal("store_lease_until", expired_until)
        return self._update(job_id, expression)

    def take_over_handoff(self, job_id: str, *, handed_over_at: str, now: datetime) -> Job | None:
        expression = _takeover(now)
        expression.require_absent("store_lease_until")
        expression.require_equal("completion_enqueued_at", handed_over_at)
        return self._update(job_id, expression)

    def complete(
        self,
        job_id: str,
        *,
        request_id: str | None,
        outputs: Sequence[str],
        result_key: str,
        timings: Mapping[str, Any],
        now: datetime,
        served_from: str | None = None,
        payloads_deleted_at: str | None = None,
    ) -> Job | None:
        expression = _Expression()
        expression.set("outputs", list(outputs))
        expression.set("result_key", result_key)
        expression.set("timings", dict(timings))
        if served_from is not None:
            expression.set("served_from", served_from)
        if payloads_deleted_at is not None:
            expression.set("payloads_deleted_at", payloads_deleted_at)
        if request_id is not None:
            expression.require_equal("request_id", request_id)
        return self._advance(job_id, JobState.COMPLETED, now, expression)

    def fail(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        expression = _Expression()
        expression.set("error", error)
        return self._advance(job_id, JobState.FAILED, now, expression)

    def fail_unanswered(self, job_id: str, error: JobError, *, now: datetime) -> Job | None:
        expression = _Expression()
        expression.set("error", error)
        expression.require_absent("completion_key")
        return self._advance(job_id, JobState.FAILED, now, expression)

    def claim_event(self, job_id: str, *, now: datetime, until: datetime) -> Job | None:
        expression = _Expression()
        expression.set("event_claimed_until", isoformat(until))
        expression.require_absent("event_published_at")
        claimed = expression.name("event_claimed_until")
        expression.conditions.append(
            f"(attribute_not_exists({claimed}) OR {claimed} < {expression.value(isoformat(now))})"
        )
        return self._update(job_id, expression)

    def mark_event_published(self, job_id: str, *, now: datetime) -> Job | None:
        expression = _Expression()
        expression.set("event_published_at", isoformat(now))
        expression.require_absent("event_published_at")
        return self._update(job_id, expression)

    # ------------------------------------------------------------------------------ collect, ops

    def record_cost(self, job_id: str, cost: JobCost, *, replace_existing: bool) -> Job | None:
        expression = _Expression()
        expression.set("cost", cost)
        batch = batch_of_job(job_id)
        if batch is None or self._batch_table is None:
            if not replace_existing:
                expression.require_absent("cost")
            return self._update(job_id, expression)
        # A batch line's cost moves its batch's cost so far by the difference, in the same write;
        # the write requires the cost it replaces to be the one read, so none is added twice.
        current = self.get(job_id)
        if current is None or (current.cost is not None and not replace_existing):
            return None
        if current.cost is None:
            expression.require_absent("cost")
        else:
            expression.require_equal("cost", current.cost)
        change = _usd(cost) - (_usd(current.cost) if current.cost else 0.0)
        written = self._transact(
            [
                expression.transact_update(self._table, self._key(job_id)),
                {"Update": batch_cost_update(self._batch_table, batch, change)},
            ]
        )
        return self.get(job_id) if written else None

    def cancel_unsubmitted(self, job_id: str, *, now: datetime) -> Job | None:
        expression = _Expression()
        expression.require_absent("request_id")
        return self._advance(job_id, JobState.CANCELLED, now, expression)

    def cancel(self, job_id: str, *, now: datetime) -> Job | None:
        return self._advance(job_id, JobState.CANCELLED, now, _Expression())

    def add_trail(self, job_id: str, entry: TrailEntry) -> None:
        # Read, bound, write back on condition that nobody appended meanwhile: (size, dropped) only
        # ever grows, so it versions the trail. One expression cannot append and trim the same list.
        for _ in range(_TRAIL_ATTEMPTS):
            job = self.get(job_id)
            if job is None:
                return
            appended = appended_trail(job.trail, entry)
            if appended is None:
                return
            trail, dropped = appended
            expression = _Expression()
            expression.set("trail", trail)
            expression.set("trail_dropped", job.trail_dropped + dropped)
            expression.require_trail_as_read(len(job.trail), job.trail_dropped)
            if self._update(job_id, expression) is not None:
                return
        raise TrailContendedError(f"job {job_id}: the trail changed under {_TRAIL_ATTEMPTS} writes in a row")


def batch_tally_update(table: str, batch: str, state: JobState) -> dict[str, Any]:
    """The update that counts one more line of `batch` final in `state` (``finished`` and
    ``jobs_<state>``, atomic counters of the batch's record: falflow.submit.batches)."""
    return {
        "TableName": table,
        "Key": {"pk": {"S": batch}},
        "UpdateExpression": "ADD #finished :one, #state :one",
        "ExpressionAttributeNames": {"#finished": "finished", "#state": f"jobs_{state.value}"},
        "ExpressionAttributeValues": {":one": {"N": "1"}},
    }


def batch_cost_update(table: str, batch: str, change: float) -> dict[str, Any]:
    """The update that moves `batch`'s cost so far (``cost_usd``) by `change`."""
    return {
        "TableName": table,
        "Key": {"pk": {"S": batch}},
        "UpdateExpression": "ADD #cost :change",
        "ExpressionAttributeNames": {"#cost": "cost_usd"},
        "ExpressionAttributeValues": {":change": {"N": repr(round(change, 10))}},
    }


def _usd(cost: JobCost) -> float:
    return cost.amount if cost.currency == "USD" else 0.0  # fal bills in USD


def _charge_update(charge: CounterCharge) -> dict[str, Any]:
    values: dict[str, Any] = {":amount": {"N": str(charge.amount)}}
    update: dict[str, Any] = {
        "TableName": charge.table,
        "Key": {"pk": {"S": charge.key}},
        "UpdateExpression": "ADD #spent :amount",
        "ExpressionAttributeNames": {"#spent": "spent"},
        "ExpressionAttributeValues": values,
    }
    if charge.ceiling is not None:
        # Fits if what is spent plus this charge stays within the ceiling.
        values[":room"] = {"N": str(charge.ceiling - charge.amount)}
        update["ConditionExpression"] = "attribute_not_exists(#spent) OR #spent <= :room"
    return {"Update": update}


def _claim_key(request_id: str) -> str:
    return f"{REQUEST_CLAIM_PREFIX}{request_id}"


def _takeover(now: datetime) -> _Expression:
    """A STORING job handed to the store again by the reconciler, counted as a takeover."""
    expression = _Expression()
    expression.set("completion_enqueued_at", isoformat(now))
    takeovers = expression.name("store_takeovers")
    expression.sets.append(
        f"{takeovers} = if_not_exists({takeovers}, {expression.value(0)}) + {expression.value(1)}"
    )
    expression.require_equal("state", JobState.STORING.value)
    return expression


def _state_key(shard: str, before: datetime | None, after: datetime | None) -> dict[str, Any]:
    """One `BY_STATE_INDEX` query's key condition: `shard`, entered between `after` and `before`."""
    key = "#s = :s"
    values: dict[str, Any] = {":s": {"S": shard}}
    names = {"#s": STATE_SHARD_ATTRIBUTE}
    if after:
        values[":lo"] = {"S": isoformat(after)}
    if before:
        values[":hi"] = {"S": isoformat(before)}
    if before or after:
        names["#t"] = "state_changed_at"
        key += {
            (True, True): " AND #t BETWEEN :lo AND :hi",
            (True, False): " AND #t >= :lo",
            (False, True): " AND #t <= :hi",
        }[(after is not None, before is not None)]
    return {
        "KeyConditionExpression": key,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }
