"""A job's reason line: why it ended, or what it waits for and who moves it on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from falflow.jobs import Job, JobError, JobState, TrailEntry, isoformat
from falflow.jobs.status import job_status_reason

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=30)


def job(state: JobState, **fields: object) -> Job:
    return Job.new("j", source="sqs:m", source_kind="sqs", now=T0, state=state, model="m", **fields)


def at(minutes: int) -> str:
    return isoformat(T0 + timedelta(minutes=minutes))


def test_final_jobs_say_why_they_ended() -> None:
    failed = job(JobState.FAILED, error=JobError(type="output_unavailable", message="cdn answered 503"))
    assert job_status_reason(failed, LATER) == "output_unavailable: cdn answered 503"
    done = job(JobState.COMPLETED, outputs=["outputs/j/a.png", "outputs/j/b.png"])
    assert job_status_reason(done, LATER) == "2 output(s) stored"
    assert job_status_reason(job(JobState.CANCELLED), LATER) == "cancelled"


def test_accepted_jobs_say_who_holds_them() -> None:
    sending = job(JobState.ACCEPTED, submit_lease_until=at(40))
    assert job_status_reason(sending, LATER) == f"being sent to fal (submit lease until {at(40)})"
    lost = job(JobState.ACCEPTED, submit_lease_until=at(40), submit_ambiguous_at=at(1))
    assert "reply to the submit was lost" in job_status_reason(lost, LATER)
    dropped = job(JobState.ACCEPTED, submit_lease_until=at(2))
    assert "reconcile sends its request to the intake queue again" in job_status_reason(dropped, LATER)


def test_storing_jobs_say_whether_a_store_run_holds_them() -> None:
    not_handed = job(JobState.STORING, completion_key="inbox/k")
    assert "not yet handed to the store" in job_status_reason(not_handed, LATER)
    handed = {"completion_key": "inbox/k", "completion_enqueued_at": at(0)}
    live = job(JobState.STORING, store_lease_until=at(40), **handed)
    assert job_status_reason(live, LATER) == f"outputs being stored (store lease until {at(40)})"
    dead = job(JobState.STORING, store_lease_until=at(16), **handed)
    assert job_status_reason(dead, LATER) == (
        f"its store run stopped unfinished (lease ran out at {at(16)}); reconcile hands it to the store again"
    )
    queued = job(JobState.STORING, **handed)
    assert job_status_reason(queued, LATER) == f"outputs message sent at {at(0)}; waiting for the store"


def test_a_dead_lettered_message_is_what_a_waiting_job_shows() -> None:
    entry = TrailEntry(at=at(5), actor="store", action="dead_lettered", reason="ClientError: no inbox copy")
    stuck = job(JobState.STORING, completion_key="inbox/k", completion_enqueued_at=at(0), trail=[entry])
    assert job_status_reason(stuck, LATER) == "dead_lettered: ClientError: no inbox copy"
    # once redriven, a store run holding it is what it shows
    redriven = stuck.model_copy(update={"store_lease_until": at(45)})
    assert job_status_reason(redriven, LATER) == f"outputs being stored (store lease until {at(45)})"
    # an older dead letter (before the job moved on) no longer explains it
    moved_on = job(
        JobState.SUBMITTED, request_id="r-1", trail=[entry.model_copy(update={"at": "2026-11-01"})]
    )
    assert job_status_reason(moved_on, LATER).startswith("queued at fal as r-1")
