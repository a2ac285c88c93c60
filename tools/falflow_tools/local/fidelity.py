"""Where moto's server differs from AWS in a way falflow depends on, made to behave like AWS.

- S3 event notifications: for a versioned bucket, S3 puts the object's `versionId` (and a
  `sequencer`) in each record; moto leaves them out. falflow keys an S3 job on bucket, key and
  version, so without it a re-drop of the same bytes would map to the same job locally but not on
  AWS (see falflow.submit.sources).
- DynamoDB conditional writes: DynamoDB checks a condition and writes as one atomic step; moto
  checks and writes in separate Python steps, so two threads can both pass one condition. falflow's
  exactly-once rules (forward-only states, one request id, one submit lease) rest on that atomicity,
  so moto's writes are serialised while the patch is active.

The patches apply to the moto code running in this process (the local stack's server, or moto
in-process and moto's threaded server in tests) while `faithful_moto()` is active, and are undone
afterwards.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.s3 import notifications

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


_PATCHES: tuple[tuple[Any, str, Callable[[Any], Any]], ...] = (
    (notifications, "_get_s3_event", _with_versions),
    *(
        (DynamoDBBackend, name, _atomic)
        for name in ("put_item", "update_item", "delete_item", "transact_write_items")
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
