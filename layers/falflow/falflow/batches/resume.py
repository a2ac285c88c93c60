"""Fan-outs that stalled, carried on: a batch whose cursor has not moved for a while with no step
holding it gets the continuation at its cursor sent again.

A fan-out moves only through its continuation messages (ADR 0031). One can be lost to the
intake DLQ (a step that failed on every receive), or never sent (a step killed between validating
and sending its first chunk, whose notification is not redelivered). Sending it again is always
safe: a duplicate of one still queued finds the cursor moved, or the lease held, and does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from aws_lambda_powertools import Logger

from falflow.batches.model import RESUMABLE_STATES, BatchContinuation
from falflow.batches.store import DynamoBatchStore
from falflow.jobs.model import isoformat, utcnow

logger = Logger(child=True)


class ContinuationQueue(Protocol):
    def send(self, body: str) -> None: ...


class StalledFanOuts:
    def __init__(
        self,
        store: DynamoBatchStore,
        intake: ContinuationQueue,
        *,
        stall_after: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._intake = intake
        self._stall_after = stall_after
        self._clock = clock

    def resume(self) -> dict[str, int]:
        """Send the continuation of every fan-out unmoved for `stall_after`; how many, counted."""
        now = self._clock()
        cutoff = isoformat(now - self._stall_after)
        resumed = 0
        for batch in self._store.list_batches():
            if batch.state not in RESUMABLE_STATES or batch.fan_out_done or batch.updated_at > cutoff:
                continue
            if self._store.note_resumed(batch.name, cursor_line=batch.cursor_line, now=now) is None:
                continue  # it moved, or a step holds it, since it was read
            self._intake.send(BatchContinuation(batch.name, batch.cursor_line).body())
            logger.warning(
                "batch fan-out stalled: its continuation is sent again",
                batch=batch.name,
                line=batch.cursor_line,
                since=batch.updated_at,
            )
            resumed += 1
        return {"batches_resumed": resumed} if resumed else {}
