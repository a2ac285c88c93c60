"""The batches table: one record per batch, written only by named, conditional steps.

The fan-out's steps are guarded by its cursor and lease, so a duplicate or stale continuation
changes nothing; the lines' tally (``finished``, ``jobs_<STATE>``) is added by the job store in the
transaction that makes a line's job final (falflow.jobs.store.batch_tally_update), so each job
counts exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from falflow.aws.dynamodb import is_condition_failure
from falflow.batches.model import FAN_OUT_STATES, RESUMABLE_STATES, Batch, BatchState, tally_from_item
from falflow.jobs.model import isoformat
from falflow.jobs.store import from_dynamo, to_dynamo

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BATCH_KEY: Final = "pk"
_NAMED = re.compile(r"#(\w+)")
_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def batch_from_item(item: Mapping[str, Any]) -> Batch:
    plain = {k: from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}
    plain["name"] = plain.pop(BATCH_KEY)
    plain["tally"] = tally_from_item(plain)
    return Batch.model_validate(plain)


class _Update:
    def __init__(self, now: datetime) -> None:
        self.sets: dict[str, Any] = {"updated_at": isoformat(now)}
        self.adds: dict[str, int] = {}
        self.removes: list[str] = []
        self.equal: dict[str, Any] = {}
        self.states: frozenset[BatchState] | None = None
        self.extra: list[str] = []
        self.extra_values: dict[str, Any] = {}

    def require_no_live_lease(self, now: datetime) -> None:
        self.extra.append("(attribute_not_exists(#lease_until) OR #lease_until < :now)")
        self.extra_values[":now"] = isoformat(now)

    def kwargs(self) -> dict[str, Any]:
        names: dict[str, str] = {"#pk": BATCH_KEY}
        values: dict[str, Any] = {}

        def name(attribute: str) -> str:
            names[f"#{attribute}"] = attribute
            return f"#{attribute}"

        def value(tag: str, item: Any) -> str:
            values[f":{tag}"] = _serializer.serialize(to_dynamo(item))
            return f":{tag}"

        parts = ["SET " + ", ".join(f"{name(k)} = {value('s_' + k, v)}" for k, v in self.sets.items())]
        if self.adds:
            parts.append("ADD " + ", ".join(f"{name(k)} {value('a_' + k, v)}" for k, v in self.adds.items()))
        if self.removes:
            parts.append("REMOVE " + ", ".join(name(k) for k in self.removes))
        conditions = ["attribute_exists(#pk)"]
        conditions += [f"{name(k)} = {value('e_' + k, v)}" for k, v in self.equal.items()]
        if self.states is not None:
            listed = ", ".join(value(f"st{i}", s.value) for i, s in enumerate(sorted(self.states)))
            conditions.append(f"{name('state')} IN ({listed})")
        conditions += self.extra
        values.update({k: _serializer.serialize(to_dynamo(v)) for k, v in self.extra_values.items()})
        for condition in self.extra:
            names.update({f"#{attribute}": attribute for attribute in _NAMED.findall(condition)})
        return {
            "UpdateExpression": " ".join(parts),
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }


class DynamoBatchStore:
    """The batch's write protocol on the batches table of template.yaml; None means refused."""

    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    @property
    def table(self) -> str:
        return self._table

    def _key(self, name: str) -> dict[str, Any]:
        return {BATCH_KEY: {"S": name}}

    def _update(self, name: str, update: _Update) -> Batch | None:
        try:
            response = self._client.update_item(TableName=self._table, Key=self._key(name), **update.kwargs())
        except ClientError as error:
            if is_condition_failure(error):
                return None
            raise
        return batch_from_item(response["Attributes"])

    # ------------------------------------------------------------------------------- queries

    def get(self, name: str) -> Batch | None:
        item = self._client.get_item(TableName=self._table, Key=self._key(name), ConsistentRead=True).get(
            "Item"
        )
        # A tally with no record (its batch was never recorded here) is no batch.
        return batch_from_item(item) if item and "state" in item else None

    def list_batches(self) -> Iterator[Batch]:
        """Every batch, newest first (a scan: batches are few beside their jobs)."""
        batches: list[Batch] = []
        for page in self._client.get_paginator("scan").paginate(TableName=self._table, ConsistentRead=True):
            batches.extend(batch_from_item(item) for item in page.get("Items", []) if "state" in item)
        return iter(sorted(batches, key=lambda b: b.created_at, reverse=True))

    # ------------------------------------------------------------------------------ the fan-out

    def create(self, batch: Batch) -> tuple[Batch, bool]:
        """Record a new batch; if one of its name exists, that one and False."""
        data = batch.model_dump(mode="json", exclude_none=True, exclude={"name", "tally"})
        item = {BATCH_KEY: {"S": batch.name}} | {
            k: _serializer.serialize(v) for k, v in to_dynamo(data).items()
        }
        try:
            self._client.put_item(
                TableName=self._table,
                Item=item,
                # A tally may have been written first by nothing but a batch of this name: none yet.
                ConditionExpression="attribute_not_exists(#s)",
                ExpressionAttributeNames={"#s": "state"},
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            existing = self.get(batch.name)
            assert existing is not None
            return existing, False
        return batch, True

    def take_lease(self, name: str, *, cursor_line: int, now: datetime, until: datetime) -> Batch | None:
        """Hold the fan-out at `cursor_line` until `until`; refused unless the batch is still being
        fanned out from that line and no live lease holds it."""
        update = _Update(now)
        update.sets["lease_until"] = isoformat(until)
        update.equal["cursor_line"] = cursor_line
        update.states = FAN_OUT_STATES
        update.require_no_live_lease(now)
        return self._update(name, update)

    def note_resumed(self, name: str, *, cursor_line: int, now: datetime) -> Batch | None:
        """Count a resend of the continuation at `cursor_line` (the stall clock, ``updated_at``,
        starts again); refused unless the fan-out is still at that line with no live lease."""
        update = _Update(now)
        update.sets["resumed_at"] = isoformat(now)
        update.adds["resumes"] = 1
        update.equal["cursor_line"] = cursor_line
        update.states = RESUMABLE_STATES
        update.extra.append("attribute_not_exists(#fanned_out_at)")
        update.require_no_live_lease(now)
        return self._update(name, update)

    def validated(
        self,
        name: str,
        *,
        lease: str,
        now: datetime,
        lines: int,
        invalid: list[dict[str, Any]],
        estimate_usd: float | None,
        unpriced_lines: int,
        defaults: dict[str, Any],
        start_offset: int,
        start_line: int,
    ) -> Batch | None:
        """VALIDATING → FANNING_OUT with what the whole read found; refused unless under `lease`."""
        update = _Update(now)
        update.sets.update(
            state=BatchState.FANNING_OUT.value,
            lines=lines,
            bad=len(invalid),
            invalid=invalid,
            unpriced_lines=unpriced_lines,
            defaults=defaults,
            cursor_line=start_line,
            cursor_offset=start_offset,
        )
        if estimate_usd is not None:
            update.sets["estimate_usd"] = estimate_usd
        update.equal.update(state=BatchState.VALIDATING.value, lease_until=lease)
        return self._update(name, update)

    def advance(
        self,
        name: str,
        *,
        lease: str,
        now: datetime,
        from_line: int,
        to_line: int,
        to_offset: int,
        sent: int,
        done: bool,
    ) -> Batch | None:
        """Move the cursor past a chunk whose `sent` lines went out, the lease dropped; the last
        chunk ends the fan-out. Refused unless the cursor and lease still read as taken. A batch
        cancelled meanwhile still counts the chunk it sent (so its lines not sent are counted right)."""
        update = _Update(now)
        update.sets.update(cursor_line=to_line, cursor_offset=to_offset)
        update.adds["sent"] = sent
        update.removes.append("lease_until")
        if done:
            update.sets["fanned_out_at"] = isoformat(now)
        update.equal.update(cursor_line=from_line, lease_until=lease)
        update.states = frozenset({BatchState.FANNING_OUT, BatchState.CANCELLING})
        return self._update(name, update)

    def mark_running(self, name: str, *, now: datetime) -> Batch | None:
        """FANNING_OUT → RUNNING once every line was sent; refused if it was cancelled meanwhile."""
        update = _Update(now)
        update.sets["state"] = BatchState.RUNNING.value
        update.equal["state"] = BatchState.FANNING_OUT.value
        update.extra.append("attribute_exists(#fanned_out_at)")
        return self._update(name, update)

    def stop_fan_out(
        self,
        name: str,
        *,
        now: datetime,
        unsent: int,
        lines: int | None,
        invalid: list[dict[str, Any]] | None,
    ) -> Batch | None:
        """A cancelled batch sends no more: its `unsent` lines will never be jobs (with what the
        validating read found, when it was cancelled during that read)."""
        update = _Update(now)
        update.sets.update(unsent=unsent, fanned_out_at=isoformat(now), lines=lines or 0)
        if invalid is not None:
            update.sets.update(bad=len(invalid), invalid=invalid)
        update.removes.append("lease_until")
        update.equal["state"] = BatchState.CANCELLING.value
        update.extra.append("attribute_not_exists(#fanned_out_at)")
        return self._update(name, update)

    def reject(self, name: str, error: dict[str, Any], *, now: datetime) -> Batch | None:
        """REJECTED with `error`: the manifest as a whole cannot run; refused once past VALIDATING."""
        update = _Update(now)
        update.sets.update(state=BatchState.REJECTED.value, error=error, finished_at=isoformat(now))
        update.removes.append("lease_until")
        update.equal["state"] = BatchState.VALIDATING.value
        return self._update(name, update)

    # -------------------------------------------------------------------------- its life after

    def request_cancel(self, name: str, *, now: datetime) -> Batch | None:
        """CANCELLING; refused once the batch is final."""
        update = _Update(now)
        update.sets.update(state=BatchState.CANCELLING.value, cancel_requested_at=isoformat(now))
        update.states = frozenset(BatchState) - frozenset(
            {BatchState.COMPLETED, BatchState.CANCELLED, BatchState.REJECTED}
        )
        return self._update(name, update)

    def finish(self, name: str, *, seen: Batch, now: datetime, outputs: dict[str, str]) -> Batch | None:
        """COMPLETED (or CANCELLED, if it was cancelling) once its results are written; refused
        unless the batch still reads as `seen` (its state and tally)."""
        update = _Update(now)
        final = BatchState.CANCELLED if seen.state is BatchState.CANCELLING else BatchState.COMPLETED
        update.sets.update(state=final.value, finished_at=isoformat(now), outputs=outputs)
        update.equal["state"] = seen.state.value
        if seen.finished:
            update.equal["finished"] = seen.finished
        else:
            update.extra.append("attribute_not_exists(#finished)")
        return self._update(name, update)

    def mark_event_published(self, name: str, *, now: datetime) -> Batch | None:
        update = _Update(now)
        update.sets["event_published_at"] = isoformat(now)
        update.extra.append("attribute_not_exists(#event_published_at)")
        return self._update(name, update)
