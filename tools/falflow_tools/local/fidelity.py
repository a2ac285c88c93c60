"""Where moto's server differs from AWS in a way falflow depends on, made to behave like AWS.

- S3 event notifications: for a versioned bucket, S3 puts the object's `versionId` (and a
  `sequencer`) in each record; moto leaves them out. falflow keys an S3 job on bucket, key and
  version, so without it a re-drop of the same bytes would map to the same job locally but not on
  AWS (see falflow.submit.sources).

The patch applies to the moto code running in this process (the local stack's server) while
`faithful_moto()` is active, and is undone afterwards.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from moto.s3 import notifications

_lock = threading.Lock()
_depth = 0
_original: Callable[..., dict[str, list[dict[str, Any]]]] | None = None


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


@contextlib.contextmanager
def faithful_moto() -> Iterator[None]:
    global _depth, _original  # noqa: PLW0603 - one patch for the process, counted
    with _lock:
        if _depth == 0:
            _original = notifications._get_s3_event
            notifications._get_s3_event = _with_versions(_original)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _original is not None:
                notifications._get_s3_event = _original
                _original = None
