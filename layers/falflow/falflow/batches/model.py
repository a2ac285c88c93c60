"""A batch's record: where its manifest is, how far the fan-out got, and its lines' tally."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from pydantic import ConfigDict, Field

from falflow.deferred import DeferredModel
from falflow.jobs.model import JobState


class BatchState(StrEnum):
    VALIDATING = "VALIDATING"  # the manifest is read once whole: lines counted, bad lines found
    FANNING_OUT = "FANNING_OUT"  # its lines are sent as job messages, a chunk at a time
    RUNNING = "RUNNING"  # every line was sent; its jobs run
    CANCELLING = "CANCELLING"  # `falflow batch cancel`: lines not sent are not, queued ones cancelled
    COMPLETED = "COMPLETED"  # every line final; results written
    CANCELLED = "CANCELLED"  # cancelled; results written for what finished
    REJECTED = "REJECTED"  # the manifest as a whole cannot run (too large, too many bad lines)


# Where a batch's results.jsonl, errors.jsonl and manifest.json go in the output bucket: NAME/ under it.
RESULTS_PREFIX: Final = "batches"
FINAL_BATCH_STATES: Final = frozenset({BatchState.COMPLETED, BatchState.CANCELLED, BatchState.REJECTED})
# A fan-out's next step is a continuation message on the intake queue: {"batch_continue": {...}}.
CONTINUE_KEY: Final = "batch_continue"
FAN_OUT_STATES: Final = frozenset({BatchState.VALIDATING, BatchState.FANNING_OUT})
# States whose fan-out a continuation carries on (a cancelled one's, to its stop).
RESUMABLE_STATES: Final = frozenset({BatchState.FANNING_OUT, BatchState.CANCELLING})


@dataclass(frozen=True)
class BatchContinuation:
    """The next chunk of a batch's fan-out: the cursor's line it starts after."""

    name: str
    line: int

    def body(self) -> str:
        return json.dumps({CONTINUE_KEY: {"name": self.name, "line": self.line}})


class Batch(DeferredModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    state: BatchState
    source: str  # s3://bucket/key?versionId=… of the manifest
    etag: str | None = None
    created_at: str
    updated_at: str
    defaults: dict[str, Any] = Field(default_factory=dict)
    output_prefix: str = ""  # where results.jsonl, errors.jsonl and manifest.json go
    # The fan-out's cursor: the last line number handled and the offset of the next line.
    cursor_line: int = 0
    cursor_offset: int = 0
    lease_until: str | None = None
    lines: int | None = None  # job lines in the manifest (known once validated)
    bad: int = 0
    # The lines that are no job: {line, custom_id, type, message} each (at most MAX_BAD_LINES).
    invalid: list[dict[str, Any]] = Field(default_factory=list)
    sent: int = 0  # lines sent as job messages (a chunk re-sent after a crash counts once)
    unsent: int = 0  # good lines never sent (the batch was cancelled first)
    finished: int = 0  # jobs final (tallied by the job store with the write that made them so)
    tally: dict[str, int] = Field(default_factory=dict)  # jobs final, by state
    # What its jobs' recorded costs add up to so far (billed, or estimated until fal bills them):
    # added by the job store in the write that records or changes a job's cost.
    cost_usd: float = 0.0
    estimate_usd: float | None = None
    unpriced_lines: int = 0
    budget_usd: float | None = None
    error: dict[str, Any] | None = None
    fanned_out_at: str | None = None
    cancel_requested_at: str | None = None
    finished_at: str | None = None
    # The reconciler sent the continuation at the cursor again: the fan-out had stalled.
    resumes: int = 0
    resumed_at: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)  # results, errors, manifest: their keys
    event_published_at: str | None = None

    @property
    def bad_lines(self) -> set[int]:
        return {int(row["line"]) for row in self.invalid}

    @property
    def over_budget(self) -> bool:
        """Whether the batch's estimate, made before its fan-out, is more than its budget (its lines
        that do not fit are HELD as they come: falflow.spend)."""
        return bool(self.budget_usd and self.estimate_usd and self.estimate_usd > self.budget_usd)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_BATCH_STATES

    @property
    def fan_out_done(self) -> bool:
        return self.fanned_out_at is not None

    @property
    def jobs(self) -> int | None:
        """Lines that are (or will be) jobs."""
        return None if self.lines is None else self.lines - self.bad - self.unsent

    @property
    def all_final(self) -> bool:
        return self.fan_out_done and self.jobs is not None and self.finished >= self.jobs

    def pending(self) -> int:
        return max((self.jobs or 0) - self.finished, 0)


def tally_from_item(item: dict[str, Any]) -> dict[str, int]:
    """The by-state counts the job store adds as ``jobs_<STATE>`` attributes."""
    return {
        name.removeprefix("jobs_"): int(value)
        for name, value in item.items()
        if name.startswith("jobs_") and name.removeprefix("jobs_") in JobState.__members__
    }
