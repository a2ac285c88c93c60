"""The job record: one per unit of work, keyed by a job id chosen before fal hears of it."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field

from falflow.deferred import DeferredModel
from falflow.jobs.batch import JobBatch


class JobState(StrEnum):
    ACCEPTED = "ACCEPTED"
    HELD = "HELD"
    SUBMITTED = "SUBMITTED"
    IN_PROGRESS = "IN_PROGRESS"
    STORING = "STORING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


# States only move forward: a write may set a state only if its rank is higher than the stored one.
# All final states share the top rank, so a final state is never replaced, not even by another one.
FINAL_RANK = 9
STATE_RANK: dict[JobState, int] = {
    JobState.ACCEPTED: 0,
    # HELD and ACCEPTED share a rank: a job moves between them only by the named transitions
    # (hold, release), and anything fal says about the job still moves it forward from either.
    JobState.HELD: 0,
    JobState.SUBMITTED: 1,
    JobState.IN_PROGRESS: 2,
    JobState.STORING: 3,
    JobState.COMPLETED: FINAL_RANK,
    JobState.FAILED: FINAL_RANK,
    JobState.CANCELLED: FINAL_RANK,
    JobState.REJECTED: FINAL_RANK,
}
FINAL_STATES = frozenset(s for s, rank in STATE_RANK.items() if rank == FINAL_RANK)
# States the reconciler watches: fal has (or may have) the job and we are waiting for it.
WAITING_STATES = (JobState.SUBMITTED, JobState.IN_PROGRESS)

# A job's trail is bounded, so no replay flood or retry storm can grow a record towards DynamoDB's
# 400 KB item limit: the newest entries are kept (each reason clipped), the rest only counted.
MAX_TRAIL_ENTRIES = 50
MAX_TRAIL_REASON_CHARS = 1000

SourceKind = Literal["s3_media", "s3_document", "sqs"]
Priority = Literal["normal", "low"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    """One timestamp format everywhere, so stored timestamps sort as strings."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


class JobError(DeferredModel):
    """Why a job was rejected or failed; fal's own error type and detail are kept whole."""

    model_config = ConfigDict(extra="ignore")

    type: str
    message: str
    detail: Any = None


class JobCost(DeferredModel):
    model_config = ConfigDict(extra="ignore")

    amount: float
    currency: str = "USD"
    source: Literal["billing_event", "estimate"]
    unit: str | None = None
    units: float | None = None
    unit_price: float | None = None


HoldReason = Literal["budget", "unpriced", "fal_account_locked"]


class JobHold(DeferredModel):
    """Why a job waits before fal hears of it, and when it may run (spend control: falflow.spend)."""

    model_config = ConfigDict(extra="ignore")

    reason: HoldReason
    message: str
    held_at: str
    # When the cause may have gone (the cap's window resets, the next probe of fal's lock).
    resets_at: str | None = None
    # The cap that did not fit ("daily#all", "monthly#model:fal-ai/flux/dev"), for budget holds.
    cap: str | None = None


class SpendReservation(DeferredModel):
    """A job's estimate, charged to every budget window that applies to it (falflow.spend)."""

    model_config = ConfigDict(extra="ignore")

    amount: float
    # Keys of the window counters charged (``daily#2026-12-02#all`` ...); settled ones hold the
    # billed amount instead of the estimate.
    counters: list[str] = Field(default_factory=list)
    reserved_at: str
    settled_at: str | None = None
    settled_amount: float | None = None


class TrailEntry(DeferredModel):
    """A note of when and why a component acted on a job outside the happy path."""

    model_config = ConfigDict(extra="ignore")

    at: str
    actor: str
    action: str
    reason: str = ""

    def repeats(self, other: TrailEntry) -> bool:
        """The same note (who, what, why) at another time: a replay or a redelivery says nothing new."""
        return (self.actor, self.action, self.reason) == (other.actor, other.action, other.reason)


def appended_trail(trail: list[TrailEntry], entry: TrailEntry) -> tuple[list[TrailEntry], int] | None:
    """``trail`` with ``entry`` added and bounded to `MAX_TRAIL_ENTRIES` — and how many of the oldest
    entries that dropped — or None when the trail already holds the same note."""
    if any(entry.repeats(kept) for kept in trail):
        return None
    clipped = entry.model_copy(update={"reason": entry.reason[:MAX_TRAIL_REASON_CHARS]})
    grown = [*trail, clipped]
    dropped = max(len(grown) - MAX_TRAIL_ENTRIES, 0)
    return grown[dropped:], dropped


class Job(DeferredModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str
    state: JobState
    source: str
    source_kind: SourceKind
    model: str | None = None
    input: dict[str, Any] | None = None
    input_ref: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    priority: Priority = "normal"
    start_timeout: float | None = None
    output_prefix: str | None = None
    # The route table prefix a media drop came in under (caps per route: falflow.spend).
    route: str | None = None
    # The batch line this job is (falflow.submit.batches), None for a job of its own.
    batch: JobBatch | None = None
    # What fal may keep and do (docs/fal-contract.md §2, §4): fal keeps this job's payloads (input
    # and output JSON, 30 days by default); its output files are private from the start and expire
    # after output_expiry_seconds (None: the account's setting); fal's request payloads are deleted
    # once our copy is stored; fal may reroute the request to an "equivalent" endpoint. store_io
    # False (sent with X-Fal-Store-IO: 0) also hides the input from fal's request history, where
    # an ambiguous submit would be looked for.
    store_io: bool = True
    private_outputs: bool = False
    output_expiry_seconds: int | None = None
    delete_payloads: bool = False
    allow_fallbacks: bool = False

    request_id: str | None = None
    gateway_request_id: str | None = None
    status_url: str | None = None
    response_url: str | None = None
    cancel_url: str | None = None

    created_at: str
    state_changed_at: str
    state_times: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    submit_lease_until: str | None = None
    submit_ambiguous_at: str | None = None
    # fal requests of this job besides the bound one (a reply was lost and the job sent again):
    # each was asked to cancel, and is claimed for this job so that it binds no other.
    duplicate_requests: list[str] = Field(default_factory=list)

    # Completion hand-off (falflow.completion): where fal's answer was kept (webhook or reconciler),
    # when it was handed to the store, and the store's hold on the job while it copies outputs;
    # how often the reconciler took over a lease whose store run had died.
    completion_key: str | None = None
    completion_source: str | None = None
    completion_enqueued_at: str | None = None
    store_lease_until: str | None = None
    store_takeovers: int = 0

    error: JobError | None = None
    outputs: list[str] = Field(default_factory=list)
    result_key: str | None = None
    timings: dict[str, Any] = Field(default_factory=dict)
    # The endpoint fal reports having run the request on (X-Fal-Served-From), when it reports one.
    served_from: str | None = None
    payloads_deleted_at: str | None = None
    cost: JobCost | None = None
    # Spend control (falflow.spend): the estimate made before submit (None: the model has no
    # price), what it reserved against the budgets, and why the job is HELD while it is.
    estimate: JobCost | None = None
    reservation: SpendReservation | None = None
    hold: JobHold | None = None
    event_published_at: str | None = None
    # A completion event may have been sent until then; its receipt marks it published before
    # (falflow.completion.finalise). None: no one has tried to publish it.
    event_claimed_until: str | None = None
    trail: list[TrailEntry] = Field(default_factory=list)
    # How many of the oldest trail entries were dropped to keep it at MAX_TRAIL_ENTRIES.
    trail_dropped: int = 0
    expires_at: int | None = None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def cost_source(self) -> Literal["billed", "estimate"] | None:
        """Where the job's best known cost comes from: fal's billing event, or an estimate."""
        if self.cost is not None:
            return "billed" if self.cost.source == "billing_event" else "estimate"
        return "estimate" if self.estimate is not None else None

    @classmethod
    def new(
        cls,
        job_id: str,
        *,
        source: str,
        source_kind: SourceKind,
        now: datetime,
        state: JobState = JobState.ACCEPTED,
        **fields: Any,
    ) -> Job:
        at = isoformat(now)
        return cls(
            job_id=job_id,
            state=state,
            source=source,
            source_kind=source_kind,
            created_at=at,
            state_changed_at=at,
            state_times={state.value: at},
            **fields,
        )
