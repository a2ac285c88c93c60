"""Which intake messages are a batch's: a ``.jsonl`` object created under the batches prefix, a batch
message ``{"batch": "s3://…/file.jsonl", …}``, or a fan-out's continuation. Every other source is a
job's (a line's job message carries a ``batch`` object, not a URI, and is one)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, field_validator

from falflow.aws.s3 import S3ObjectRef
from falflow.batches.model import CONTINUE_KEY, BatchContinuation, BatchState
from falflow.batches.store import DynamoBatchStore
from falflow.deferred import DeferredModel
from falflow.jobs.batch import BatchName
from falflow.submit.batches.fanout import (
    BATCH_KEY,
    BatchFanOut,
    BatchManifest,
    BatchRefusedError,
    BatchStep,
)
from falflow.submit.batches.manifest import DEFAULT_FIELDS
from falflow.submit.request import S3Uri, validation_problems
from falflow.submit.sources import JobMessage, JobSource, ObjectCreated

MANIFEST_SUFFIX = ".jsonl"


class BatchMessage(DeferredModel):
    """``{"batch": "s3://bucket/key.jsonl", "name"?, "defaults"?, "budget_usd"?}``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    batch: S3Uri
    name: BatchName | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    budget_usd: Annotated[float, Field(gt=0)] | None = None

    @field_validator("defaults")
    @classmethod
    def _defaults_a_line_may_take(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - DEFAULT_FIELDS)
        if unknown:
            raise ValueError(f"defaults may set {sorted(DEFAULT_FIELDS)}, not {unknown}")
        return value


class _Continuation(DeferredModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: BatchName
    line: Annotated[int, Field(ge=0)]


class BatchIntake:
    def __init__(self, fan_out: BatchFanOut, *, prefix: str, input_bucket: str) -> None:
        self._fan_out = fan_out
        self._prefix = prefix
        self._input_bucket = input_bucket

    def step(self, source: JobSource) -> BatchStep | None:
        """Run the batch step `source` is; None when it is a job's. Raises `BatchRefusedError` for a
        batch message that can never run as sent."""
        found = self.batch_source(source)
        if isinstance(found, BatchContinuation):
            return self._fan_out.advance(found)
        if isinstance(found, BatchManifest):
            return self._fan_out.start(found)
        return None

    def batch_source(self, source: JobSource) -> BatchManifest | BatchContinuation | None:
        if isinstance(source, ObjectCreated):
            key = source.object.key
            if key.startswith(self._prefix) and key.endswith(MANIFEST_SUFFIX):
                return BatchManifest(object=source.object, etag=source.etag)
            return None
        return self._from_message(source)

    def _from_message(self, message: JobMessage) -> BatchManifest | BatchContinuation | None:
        if f'"{BATCH_KEY}"' not in message.body and f'"{CONTINUE_KEY}"' not in message.body:
            return None
        try:
            data = json.loads(message.body)
        except ValueError:
            return None  # the job path says what is wrong with it
        if not isinstance(data, dict):
            return None
        if CONTINUE_KEY in data:
            try:
                step = _Continuation.model_validate(data[CONTINUE_KEY])
            except ValidationError as error:
                raise BatchRefusedError("invalid_batch_message", _problems(error)) from error
            return BatchContinuation(step.name, step.line)
        if not isinstance(data.get(BATCH_KEY), str):
            return None  # a batch line's job message
        try:
            request = BatchMessage.model_validate(data)
        except ValidationError as error:
            raise BatchRefusedError("invalid_batch_message", _problems(error)) from error
        ref = S3ObjectRef.parse(request.batch)
        if ref.bucket != self._input_bucket:
            raise BatchRefusedError(
                "invalid_batch_message",
                f"a manifest is read from the input bucket {self._input_bucket!r} only",
            )
        return BatchManifest(
            object=ref, name=request.name, defaults=request.defaults, budget_usd=request.budget_usd
        )


def _problems(error: ValidationError) -> str:
    return "invalid batch message: " + "; ".join(
        f"{problem['loc'] or '(root)'}: {problem['msg']}" for problem in validation_problems(error)
    )


class CancelledBatches:
    """Whether a batch was cancelled, as the submit path asks before sending each of its lines: read
    at most every `ttl_s` per batch, so a cancel stops every line within that (and the fan-out's
    chunk) of the request."""

    def __init__(
        self, store: DynamoBatchStore, *, ttl_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._seen: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> bool:
        now = self._clock()
        with self._lock:
            seen = self._seen.get(name)
        if seen is not None and now - seen[0] < self._ttl_s:
            return seen[1]
        batch = self._store.get(name)
        cancelled = batch is not None and batch.state in (BatchState.CANCELLING, BatchState.CANCELLED)
        with self._lock:
            self._seen[name] = (now, cancelled)
        return cancelled
