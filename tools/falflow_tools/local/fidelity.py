"""Where moto's server differs from AWS in a way falflow depends on, made to behave like AWS.

- S3 event notifications: for a versioned bucket, S3 puts the object's `versionId` (and a
  `sequencer`) in each record; moto leaves them out. falflow keys an S3 job on bucket, key and
  version, so without it a re-drop of the same bytes would map to the same job locally but not on
  AWS (see falflow.submit.sources).
- DynamoDB conditional writes: DynamoDB checks a condition and writes as one atomic step; moto
  checks and writes in separate Python steps, so two threads can both pass one condition. falflow's
  exactly-once rules (forward-only states, one request id, one submit lease) rest on that atomicity,
  so moto's writes (and its scans, which copy items a write may be changing) are serialised
  while the patch is active.
- DynamoDB transactions: moto backs up every table a transaction writes, whole, before it starts,
  so each budget reservation (one transaction with the job and its spend counters) copied the
  jobs table. Here only the items the transaction names are backed up and put back if it is
  cancelled, as DynamoDB's all-or-nothing is over those items.
- DynamoDB index queries: DynamoDB reads an index partition, so a query costs what it returns; moto
  scans every item of the table in Python for each one. The reconciler queries every shard of every
  waiting state each run (falflow.jobs.store `list_by_state`), so at a few thousand jobs moto spent
  most of a core on those scans and the local stack, not falflow, set the pace. Here each table
  keeps its items by the partition key of every global secondary index, updated on each write, and
  a query by that key looks only at those items; moto's own code still filters, sorts and pages
  them, so the results are moto's.
- SQS sends and receives: SQS's cost of a message does not grow with the messages waiting; moto's
  did. Its SendMessage builds every queue attribute to read one flag, and its ReceiveMessage asks
  for the retention period through GetQueueAttributes once per message it returns, so each counts
  the whole queue (ApproximateNumberOfMessages and its two siblings, two clock reads per message
  each): with 2,000 messages waiting, one ReceiveMessage of 10 took ~1 s (moto 5.2.5), and a batch
  fanned out into 1,000 job messages set the local stack's pace at about a job a second. Here the
  counts are not taken inside a send, and the retention period is read from the queue itself;
  GetQueueAttributes still counts, as SQS does.

The patches apply to the moto code running in this process (the local stack's server, or moto
in-process and moto's threaded server in tests) while `faithful_moto()` is active, and are undone
afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from moto.core.utils import unix_time
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType, Item
from moto.dynamodb.models.table import Table
from moto.s3 import notifications
from moto.sqs.models import Message, Queue, SQSBackend

_lock = threading.Lock()
_depth = 0
_originals: list[tuple[Any, str, Any]] = []
_write_lock = threading.RLock()


def _with_versions(original: Callable[..., dict[str, list[dict[str, Any]]]]) -> Callable[..., Any]:
    def s3_event(
        event_name: str, bucket: Any, key: Any, notification_id: str
    ) -> dict[str, list[dict[str, Any]]]:
        event = original(event_name, bucket, key, notification_id)
        if getattr(bucket, "is_versioned", False):
            for record in event["Records"]:
                obj = record["s3"]["object"]
                obj["versionId"] = key.version_id
                # S3's sequencer orders events of one key; a nanosecond clock does that here.
                obj.setdefault("sequencer", f"{time.time_ns():016X}")
        return event

    return s3_event


def _atomic(original: Callable[..., Any]) -> Callable[..., Any]:
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _write_lock:
            return original(*args, **kwargs)

    return locked


class _PartitionIndex:
    """A table's items by the partition-key value of each of its global secondary indexes."""

    def __init__(self, table: Table, items: list[Item]) -> None:
        self.attributes = _gsi_partition_keys(table)
        attributes = set(self.attributes.values())
        self._items: dict[str, dict[DynamoType, dict[Any, Item]]] = {a: {} for a in attributes}
        self._values: dict[Any, dict[str, DynamoType]] = {}  # item key -> its indexed values
        for item in items:
            self.put(item)

    def put(self, item: Item) -> None:
        key = (item.hash_key, item.range_key)
        self.remove(key)
        values = {a: v for a in self._items if isinstance(v := item.attrs.get(a), DynamoType)}
        for attribute, value in values.items():
            self._items[attribute].setdefault(value, {})[key] = item
        self._values[key] = values

    def remove(self, key: Any) -> None:
        for attribute, value in self._values.pop(key, {}).items():
            bucket = self._items[attribute].get(value, {})
            bucket.pop(key, None)
            if not bucket:
                self._items[attribute].pop(value, None)

    def items_with(self, attribute: str, value: DynamoType) -> list[Item]:
        return list(self._items[attribute].get(value, {}).values())


def _gsi_partition_keys(table: Table) -> dict[str, str]:
    """Each global secondary index with a one-attribute partition key: index name -> attribute."""
    keys = {}
    for index in table.global_indexes:
        hashes = [k["AttributeName"] for k in index.schema if k["KeyType"] == "HASH"]
        if len(hashes) == 1:
            keys[index.name] = hashes[0]
    return keys


_INDEX_ATTRIBUTE = "_falflow_partition_index"
_query_scope = threading.local()  # (table, its candidate items) while one of its queries runs


def _partition_index(table: Table) -> _PartitionIndex:
    """The table's index, built from its items on its first query (and when its indexes change)."""
    with _write_lock:
        index: _PartitionIndex | None = getattr(table, _INDEX_ATTRIBUTE, None)
        if index is None or index.attributes != _gsi_partition_keys(table):
            index = _PartitionIndex(table, _ORIGINAL_ALL_ITEMS(table))
            setattr(table, _INDEX_ATTRIBUTE, index)
        return index


def _indexed(table: Table) -> _PartitionIndex | None:
    return getattr(table, _INDEX_ATTRIBUTE, None)


def _reindexing_put(original: Callable[..., Item]) -> Callable[..., Item]:
    def put_item(self: Table, *args: Any, **kwargs: Any) -> Item:
        item = original(self, *args, **kwargs)
        if (index := _indexed(self)) is not None:
            with _write_lock:
                index.put(item)
        return item

    return put_item


def _reindexing_delete(original: Callable[..., Item | None]) -> Callable[..., Item | None]:
    def delete_item(self: Table, hash_key: DynamoType, range_key: DynamoType | None) -> Item | None:
        item = original(self, hash_key, range_key)
        if (index := _indexed(self)) is not None:
            with _write_lock:
                index.remove((hash_key, range_key))
        return item

    return delete_item


def _reindexing_update(original: Callable[..., Item]) -> Callable[..., Item]:
    """moto updates an existing item in place, not through `Table.put_item`."""

    def update_item(self: DynamoDBBackend, table_name: str, *args: Any, **kwargs: Any) -> Item:
        item = original(self, table_name, *args, **kwargs)
        if (index := _indexed(self.get_table(table_name))) is not None:
            with _write_lock:
                index.put(item)
        return item

    return update_item


def _index_query(original: Callable[..., Any]) -> Callable[..., Any]:
    def query(self: Table, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[7] if len(args) > 7 else None)
        conditions = kwargs.get("hash_key_conditions") or []
        attribute = _gsi_partition_keys(self).get(index_name) if index_name else None
        if attribute is None or len(conditions) != 1 or conditions[0][0] != attribute:
            return original(self, *args, **kwargs)
        index = _partition_index(self)
        with _write_lock:
            candidates = index.items_with(attribute, conditions[0][1])
        _query_scope.current = (self, candidates)
        try:
            return original(self, *args, **kwargs)
        finally:
            _query_scope.current = None

    return query


_ORIGINAL_ALL_ITEMS = Table.all_items


def _scoped_all_items(original: Callable[[Table], list[Item]]) -> Callable[[Table], list[Item]]:
    def all_items(self: Table) -> list[Item]:
        scoped = getattr(_query_scope, "current", None)
        if scoped is not None and scoped[0] is self:
            candidates: list[Item] = scoped[1]
            return candidates
        return original(self)

    return all_items


class _NoTableCopies:
    """`copy` as moto's DynamoDB backend sees it during a transaction: no deep copies (its only
    uses there are the whole-table backups of `transact_write_items` and an update's old image)."""

    @staticmethod
    def deepcopy(value: Any, memo: Any = None) -> Any:
        return value


def _item_scoped_transaction(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto backs up every table a transaction touches, whole, before it starts: a copy of the jobs
    table per budget reservation. DynamoDB's transaction is all or nothing over its items; so
    here only the items it names are kept, and put back if it is cancelled."""

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        with _write_lock:
            kept = [_kept_item(self, op) for item in transact_items for op in item.values()]
            models = sys.modules[DynamoDBBackend.__module__]
            real_copy = getattr(models, "copy")  # noqa: B009 - the module's own name for `copy`
            setattr(models, "copy", _NoTableCopies)  # noqa: B010
            try:
                original(self, transact_items)
            except Exception:
                for table_name, key, before in kept:
                    _put_back(self, table_name, key, before)
                raise
            finally:
                setattr(models, "copy", real_copy)  # noqa: B010

    return transact_write_items


def _kept_item(backend: DynamoDBBackend, op: dict[str, Any]) -> tuple[str, dict[str, Any], Any]:
    table = backend.get_table(op["TableName"])
    key = op.get("Key") or {
        name: op["Item"][name] for name in (table.hash_key_attr, table.range_key_attr) if name
    }
    current = backend.get_item(op["TableName"], key)
    return op["TableName"], key, copy.deepcopy(current.to_json()["Attributes"]) if current else None


def _put_back(backend: DynamoDBBackend, table_name: str, key: dict[str, Any], before: Any) -> None:
    if before is None:
        if backend.get_item(table_name, key) is not None:
            backend.delete_item(table_name, key)
    else:
        backend.put_item(table_name, before)


_sending = threading.local()  # set while this thread is inside moto's SendMessage


def _uncounted_while_sending(original: property) -> property:
    def count(queue: Queue) -> int:
        if getattr(_sending, "active", False):
            return 0  # SendMessage builds every attribute but reads only ContentBasedDeduplication
        value: int = original.fget(queue)  # type: ignore[misc]
        return value

    return property(count)


def _send_without_counting(original: Callable[..., Message]) -> Callable[..., Message]:
    def send_message(self: SQSBackend, *args: Any, **kwargs: Any) -> Message:
        _sending.active = True
        try:
            return original(self, *args, **kwargs)
        finally:
            _sending.active = False

    return send_message


def _retention_of_the_queue(original: Callable[..., bool]) -> Callable[..., bool]:
    def is_message_valid_based_on_retention_period(
        self: SQSBackend, queue_name: str, message: Message
    ) -> bool:
        # The attribute GetQueueAttributes would return for MessageRetentionPeriod, read directly.
        retention_s = int(getattr(self.get_queue(queue_name), "message_retention_period"))  # noqa: B009
        return retention_s + message.sent_timestamp / 1000 > unix_time()  # type: ignore[operator]

    return is_message_valid_based_on_retention_period


_PATCHES: tuple[tuple[Any, str, Callable[[Any], Any]], ...] = (
    (notifications, "_get_s3_event", _with_versions),
    (SQSBackend, "send_message", _send_without_counting),
    (SQSBackend, "is_message_valid_based_on_retention_period", _retention_of_the_queue),
    *(
        (Queue, name, _uncounted_while_sending)
        for name in (
            "approximate_number_of_messages",
            "approximate_number_of_messages_delayed",
            "approximate_number_of_messages_not_visible",
        )
    ),
    (Table, "put_item", _reindexing_put),
    (Table, "delete_item", _reindexing_delete),
    (Table, "query", _index_query),
    (Table, "all_items", _scoped_all_items),
    # Before `_atomic` wraps it, so the index changes under the write lock too.
    (DynamoDBBackend, "update_item", _reindexing_update),
    (DynamoDBBackend, "transact_write_items", _item_scoped_transaction),
    *(
        (DynamoDBBackend, name, _atomic)
        # A scan copies each item; a write mutating it meanwhile broke moto's copy ("dictionary
        # changed size during iteration") in a 1,000-job run, where DynamoDB reads each item whole.
        for name in ("put_item", "update_item", "delete_item", "transact_write_items", "scan")
    ),
)


@contextlib.contextmanager
def faithful_moto() -> Iterator[None]:
    global _depth  # noqa: PLW0603 - one set of patches for the process, counted
    with _lock:
        if _depth == 0:
            for owner, name, wrap in _PATCHES:
                original = getattr(owner, name)
                _originals.append((owner, name, original))
                setattr(owner, name, wrap(original))
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                while _originals:
                    owner, name, original = _originals.pop()
                    setattr(owner, name, original)
