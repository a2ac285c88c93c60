"""Jobs: the record every path of falflow meets at, and the store that keeps it."""

from falflow.jobs.model import (
    FINAL_STATES,
    STATE_RANK,
    WAITING_STATES,
    Job,
    JobCost,
    JobError,
    JobState,
    TrailEntry,
    isoformat,
    utcnow,
)
from falflow.jobs.store import BindOutcome, DynamoJobStore, JobStore, RequestUrls

__all__ = [
    "FINAL_STATES",
    "STATE_RANK",
    "WAITING_STATES",
    "BindOutcome",
    "DynamoJobStore",
    "Job",
    "JobCost",
    "JobError",
    "JobState",
    "JobStore",
    "RequestUrls",
    "TrailEntry",
    "isoformat",
    "utcnow",
]
