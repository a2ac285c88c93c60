"""Jobs: the record every path of falflow meets at, and the store that keeps it."""

from falflow.jobs.model import (
    FINAL_STATES,
    MAX_TRAIL_ENTRIES,
    STATE_RANK,
    WAITING_STATES,
    Job,
    JobCost,
    JobError,
    JobHold,
    JobState,
    SpendReservation,
    TrailEntry,
    appended_trail,
    isoformat,
    utcnow,
)
from falflow.jobs.store import (
    BindOutcome,
    ChargeOutcome,
    CounterCharge,
    DynamoJobStore,
    JobStore,
    RequestUrls,
)

__all__ = [
    "FINAL_STATES",
    "MAX_TRAIL_ENTRIES",
    "STATE_RANK",
    "WAITING_STATES",
    "BindOutcome",
    "ChargeOutcome",
    "CounterCharge",
    "DynamoJobStore",
    "Job",
    "JobCost",
    "JobError",
    "JobHold",
    "JobState",
    "JobStore",
    "RequestUrls",
    "SpendReservation",
    "TrailEntry",
    "appended_trail",
    "isoformat",
    "utcnow",
]
