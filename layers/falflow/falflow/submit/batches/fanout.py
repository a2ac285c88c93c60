"""The fan-out: a manifest read once whole to validate it, then sent as job messages a chunk at a
time, each chunk's cursor carried by a continuation message through the intake queue.

Every step is safe to repeat. The batch's name derives from the manifest's object version, so a
second notification of the file finds the batch it made; each line's job id derives from the batch
and its ``custom_id``, so a chunk sent again (its worker died before the cursor moved) makes no job
twice, and the submit path sends each job to fal once. A step runs under a lease on the batch's
cursor: a duplicate continuation finds the cursor moved, or the lease held, and does nothing; if the
worker holding the lease dies, its own message comes back after the queue's visibility timeout and
the lease has ended by then (docs/adr/0031-a-batch-is-a-manifest-fanned-out-into-jobs.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from aws_lambda_powertools import Logger

from falflow.aws.s3 import S3ObjectRef
from falflow.batches.lines import RawLine, batch_name, is_defaults, read_lines
from falflow.batches.model import RESULTS_PREFIX, RESUMABLE_STATES, Batch, BatchContinuation, BatchState
from falflow.batches.objects import ManifestObjects
from falflow.batches.store import DynamoBatchStore
from falflow.jobs.model import isoformat, utcnow
from falflow.submit.batches.manifest import (
    MAX_BAD_LINES,
    MAX_LINES,
    MAX_MANIFEST_BYTES,
    BadLine,
    GoodLine,
    LineParser,
)

logger = Logger(child=True)

BATCH_KEY: Final = "batch"
# Longer than the submit function's timeout (a live step never loses it), shorter than the intake
# queue's visibility timeout (a dead step's message comes back to a lease that has ended): the
# template's 60 s and 360 s. It is that share of the submit's own lease (SUBMIT_LEASE_SECONDS, 120 s),
# which sits between the same two, so a stack with other timings keeps the order.
STEP_LEASE: Final = timedelta(seconds=90)
STEP_LEASE_OF_SUBMIT_LEASE: Final = 0.75


class IntakeQueue(Protocol):
    def send(self, body: str) -> None: ...

    def send_many(self, bodies: Sequence[str]) -> None: ...


class BatchStepBusyError(RuntimeError):
    """This step must wait for another in flight: its message is tried again."""


class BatchRefusedError(Exception):
    """A batch message that can never be run as sent (dead-lettered with this reason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BatchManifest:
    """A manifest to run: dropped under the batches prefix, or named by a batch message."""

    object: S3ObjectRef
    etag: str | None = None
    name: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    budget_usd: float | None = None


@dataclass(frozen=True)
class BatchStep:
    """What one fan-out step did."""

    name: str
    action: str  # started, validated, sent, done, duplicate, stale, stopped, rejected
    sent: int = 0


class Estimator(Protocol):
    def estimate(self, model: str, fal_input: Any) -> Any: ...


class BatchFanOut:
    def __init__(
        self,
        store: DynamoBatchStore,
        objects: ManifestObjects,
        intake: IntakeQueue,
        *,
        chunk_lines: int = 500,
        estimator: Estimator | None = None,
        step_lease: timedelta = STEP_LEASE,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._objects = objects
        self._intake = intake
        self._chunk_lines = chunk_lines
        self._estimator = estimator
        self._step_lease = step_lease
        self._clock = clock

    # --------------------------------------------------------------------------------- entries

    def start(self, manifest: BatchManifest) -> BatchStep:
        """Record the manifest's batch (once per object version) and validate it."""
        ref, etag, size = self._objects.pin(manifest.object)
        name = manifest.name or batch_name(ref.bucket, ref.key, ref.version_id or (etag or "").strip('"'))
        now = self._clock()
        batch, created = self._store.create(
            Batch(
                name=name,
                state=BatchState.VALIDATING,
                source=ref.uri,
                etag=etag,
                created_at=isoformat(now),
                updated_at=isoformat(now),
                defaults=manifest.defaults,
                output_prefix=f"{RESULTS_PREFIX}/{name}",
                budget_usd=manifest.budget_usd,
            )
        )
        if not created and batch.source != ref.uri:
            raise BatchRefusedError(
                "batch_name_taken", f"batch {name!r} is already the batch of {batch.source}, not of {ref.uri}"
            )
        if batch.state in RESUMABLE_STATES and not batch.fan_out_done:
            # Notified again mid-fan-out: go on from the cursor, as its continuation would. A step
            # killed between validating and sending its first chunk leaves no continuation, so this
            # (or the reconciler's resend: falflow.batches.resume) is what carries the batch on.
            logger.info("batch notified again: going on from its cursor", batch=name, line=batch.cursor_line)
            return self.advance(BatchContinuation(name, batch.cursor_line))
        if batch.state is not BatchState.VALIDATING:
            logger.info("batch notified again: already fanned out", batch=name, state=batch.state.value)
            return BatchStep(name, "duplicate")
        if size > MAX_MANIFEST_BYTES:
            return self._refuse(
                batch, "manifest_too_large", f"a manifest may take at most {MAX_MANIFEST_BYTES} bytes"
            )
        return self._validate(batch)

    def advance(self, step: BatchContinuation) -> BatchStep:
        """Send the chunk after `step.line`, if the batch's cursor is still there."""
        batch = self._store.get(step.name)
        if batch is None:
            raise BatchRefusedError("unknown_batch", f"no batch {step.name!r} to continue")
        if batch.state is BatchState.CANCELLING:
            return self._stop_at(batch, step)
        if batch.state is not BatchState.FANNING_OUT or batch.cursor_line != step.line:
            logger.info("stale batch continuation", batch=step.name, line=step.line, cursor=batch.cursor_line)
            return BatchStep(step.name, "stale")
        now = self._clock()
        until = now + self._step_lease
        leased = self._store.take_lease(step.name, cursor_line=step.line, now=now, until=until)
        if leased is None:
            return BatchStep(step.name, "duplicate")  # another step holds it; its message returns if it dies
        return self._send_chunk(leased)

    # ------------------------------------------------------------------------------ validation

    def _validate(self, batch: Batch) -> BatchStep:
        now = self._clock()
        leased = self._store.take_lease(batch.name, cursor_line=0, now=now, until=now + self._step_lease)
        if leased is None:
            return BatchStep(batch.name, "duplicate")
        read = _WholeRead(
            LineParser(batch.name, batch.defaults, budget_usd=batch.budget_usd), self._estimator
        )
        for line in self._lines(leased, start=0):
            read.take(line)
            if read.refusal is not None:
                return self._refuse(leased, read.refusal.error_type, read.refusal.message)
            if read.lines > MAX_LINES:
                return self._refuse(
                    leased, "too_many_lines", f"a manifest may hold at most {MAX_LINES} job lines"
                )
            if len(read.bad) > MAX_BAD_LINES:
                return self._refuse(
                    leased,
                    "too_many_bad_lines",
                    f"more than {MAX_BAD_LINES} lines are not valid jobs: {read.invalid()[:3]}",
                )
        validated = self._store.validated(
            batch.name,
            lease=_lease(leased),
            now=self._clock(),
            lines=read.lines,
            invalid=read.invalid(),
            estimate_usd=read.estimate_usd,
            unpriced_lines=read.unpriced,
            defaults=read.parser.defaults,
            start_offset=read.start_offset,
            start_line=read.start_line,
        )
        if validated is None:
            current = self._store.get(batch.name)
            if current is not None and current.state is BatchState.CANCELLING:
                return self._stop(current, lines=read.lines, invalid=read.invalid())
            return BatchStep(batch.name, "duplicate")
        logger.info("batch validated", batch=batch.name, lines=read.lines, bad=len(read.bad))
        if validated.over_budget:
            logger.warning(
                "batch estimate over its budget: the lines that do not fit will be held",
                batch=batch.name,
                estimate_usd=validated.estimate_usd,
                budget_usd=validated.budget_usd,
            )
        return self._send_chunk(validated)

    def _refuse(self, batch: Batch, reason: str, message: str) -> BatchStep:
        self._store.reject(batch.name, {"type": reason, "message": message}, now=self._clock())
        logger.warning("batch rejected", batch=batch.name, reason=reason)
        return BatchStep(batch.name, "rejected")

    # -------------------------------------------------------------------------------- fan-out

    def _send_chunk(self, batch: Batch) -> BatchStep:
        parser = LineParser(batch.name, batch.defaults, budget_usd=batch.budget_usd)
        skip = batch.bad_lines
        bodies: list[str] = []
        last, offset, done = batch.cursor_line, batch.cursor_offset, True
        for count, line in enumerate(
            self._lines(batch, start=batch.cursor_offset, first=batch.cursor_line + 1)
        ):
            if count == self._chunk_lines:
                done = False
                break
            last, offset = line.number, line.end
            parsed = parser.parse(line)
            if isinstance(parsed, GoodLine) and line.number not in skip:
                bodies.append(json.dumps(parsed.message, separators=(",", ":")))
        self._intake.send_many(bodies)
        if not done:
            # Sent before the cursor moves: if this worker dies in between, its own message comes
            # back and sends the chunk again (duplicates of the same jobs), then this again.
            self._intake.send(BatchContinuation(batch.name, last).body())
        moved = self._store.advance(
            batch.name,
            lease=_lease(batch),
            now=self._clock(),
            from_line=batch.cursor_line,
            to_line=last,
            to_offset=offset,
            sent=len(bodies),
            done=done,
        )
        if moved is None:
            logger.info("batch chunk sent, but the cursor had moved on", batch=batch.name, line=last)
        elif done:
            self._store.mark_running(batch.name, now=self._clock())
        return BatchStep(batch.name, "done" if done else "sent", sent=len(bodies))

    def _stop_at(self, batch: Batch, step: BatchContinuation) -> BatchStep:
        """Stop a cancelled batch's fan-out at `step`, once no step is in flight: a step that sent
        its chunk but has not counted it yet would leave its lines counted as never sent."""
        if step.line < batch.cursor_line or batch.fan_out_done:
            return BatchStep(batch.name, "stale")
        in_flight = batch.lease_until is not None and batch.lease_until > isoformat(self._clock())
        if in_flight:
            raise BatchStepBusyError(f"batch {batch.name}: a step is still counting its chunk")
        return self._stop(batch)

    def _stop(
        self, batch: Batch, *, lines: int | None = None, invalid: list[dict[str, Any]] | None = None
    ) -> BatchStep:
        """A cancelled batch sends nothing more; its lines not sent never become jobs."""
        if batch.fan_out_done:
            return BatchStep(batch.name, "stopped")
        total = batch.lines if lines is None else lines
        bad = batch.bad if invalid is None else len(invalid)
        unsent = max((total or 0) - bad - batch.sent, 0)
        self._store.stop_fan_out(batch.name, now=self._clock(), unsent=unsent, lines=total, invalid=invalid)
        logger.info("batch fan-out stopped: cancelled", batch=batch.name, unsent=unsent)
        return BatchStep(batch.name, "stopped")

    def _lines(self, batch: Batch, *, start: int, first: int = 1) -> Iterator[RawLine]:
        return read_lines(
            self._objects.read(S3ObjectRef.parse(batch.source), start), start=start, first_number=first
        )


class _WholeRead:
    """What the validating read finds: job lines, bad ones (a repeated custom_id among them), where
    the first job line starts, and the batch's estimated cost."""

    def __init__(self, parser: LineParser, estimator: Estimator | None) -> None:
        self.parser = parser
        self._estimator = estimator
        self.lines = 0
        self.bad: list[BadLine] = []
        self.start_line = 0
        self.start_offset = 0
        self.estimate_usd: float | None = 0.0 if estimator else None
        self.unpriced = 0
        self._seen: dict[bytes, int] = {}  # a digest of each custom_id -> its line
        self.refusal: BadLine | None = None  # the defaults line did not validate: no line can run

    def take(self, line: RawLine) -> None:
        if self.lines == 0 and not self.bad and is_defaults(line):
            self.refusal = self.parser.take_defaults(line)
            self.start_line, self.start_offset = line.number, line.end
            return
        self.lines += 1
        parsed = self.parser.parse(line)
        if isinstance(parsed, BadLine):
            self.bad.append(parsed)
            return
        digest = hashlib.sha256(parsed.custom_id.encode("utf-8", "surrogatepass")).digest()[:16]
        first = self._seen.setdefault(digest, line.number)
        if first != line.number:
            self.bad.append(
                BadLine(
                    line.number, parsed.custom_id, "duplicate_custom_id", f"custom_id repeats line {first}'s"
                )
            )
            return
        self._estimate(parsed)

    def _estimate(self, line: GoodLine) -> None:
        if self._estimator is None or self.estimate_usd is None:
            return
        cost = self._estimator.estimate(line.request.model, line.request.input)
        if cost is None:
            self.unpriced += 1
        else:
            self.estimate_usd += float(cost.amount)

    def invalid(self) -> list[dict[str, Any]]:
        return [{"line": bad.number, "custom_id": bad.custom_id, **bad.as_error()} for bad in self.bad]


def _lease(batch: Batch) -> str:
    assert batch.lease_until is not None
    return batch.lease_until
