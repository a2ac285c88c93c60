"""What a person reads about a job at a glance: why it ended, or what it waits for and who moves it
on (`falflow jobs list` shows it). Worded from the record alone, so it never claims more than the
record knows."""

from __future__ import annotations

from datetime import datetime

from falflow.jobs.model import Job, JobState, isoformat

# Trail actions that leave a job waiting on a person (a message in a DLQ).
_NEEDS_A_PERSON = frozenset({"dead_lettered"})


def job_status_reason(job: Job, now: datetime) -> str:
    """Why `job` is final, or what it is waiting for at `now`."""
    if job.is_final:
        return _final_reason(job)
    at = isoformat(now)
    held = _held_reason(job, at)
    if held is not None:
        return held
    latest = job.trail[-1] if job.trail else None
    if latest is not None and latest.action in _NEEDS_A_PERSON and latest.at >= job.state_changed_at:
        return f"{latest.action}: {latest.reason}"
    if job.state is JobState.HELD:
        return _hold_reason(job)
    if job.state is JobState.ACCEPTED:
        return "no submit holds it; reconcile sends its request to the intake queue again"
    if job.state is JobState.STORING:
        return _storing_reason(job)
    where = "queued" if job.state is JobState.SUBMITTED else "running"
    return f"{where} at fal as {job.request_id}; waiting for its webhook (reconcile polls fal if none comes)"


def _final_reason(job: Job) -> str:
    if job.error is not None:
        return f"{job.error.type}: {job.error.message}"
    if job.state is JobState.COMPLETED:
        return f"{len(job.outputs)} output(s) stored"
    return job.state.value.lower()


def _held_reason(job: Job, at: str) -> str | None:
    """What a live lease says: a worker is on the job now."""
    submit, store = job.submit_lease_until, job.store_lease_until
    if job.state is JobState.ACCEPTED and submit is not None and submit > at:
        if job.submit_ambiguous_at is not None:
            return (
                f"fal's reply to the submit was lost at {job.submit_ambiguous_at}; held until {submit}, "
                "then settled before anything is sent again"
            )
        return f"being sent to fal (submit lease until {submit})"
    if job.state is JobState.STORING and store is not None and store > at:
        return f"outputs being stored (store lease until {store})"
    return None


def _hold_reason(job: Job) -> str:
    if job.hold is None:
        return "held before submit; reconcile's release run re-checks it"
    when = f" (may run from {job.hold.resets_at})" if job.hold.resets_at else ""
    return f"held: {job.hold.reason}{when}: {job.hold.message}"


def _storing_reason(job: Job) -> str:
    if job.completion_enqueued_at is None:
        return "completion recorded, not yet handed to the store; reconcile hands it over"
    if job.store_lease_until is not None:
        return (
            f"its store run stopped unfinished (lease ran out at {job.store_lease_until}); "
            "reconcile hands it to the store again"
        )
    return f"outputs message sent at {job.completion_enqueued_at}; waiting for the store"
