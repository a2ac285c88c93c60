"""The JobStore contract, held by the DynamoDB adapter (on moto, tables from template.yaml) and by
the in-memory fake the unit tests use, so the fake cannot drift from the real thing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from falflow.aws.clients import aws_client
from falflow.jobs import (
    MAX_TRAIL_ENTRIES,
    Job,
    JobCost,
    JobError,
    JobHold,
    JobState,
    JobStore,
    RequestUrls,
    SpendReservation,
    TrailEntry,
    isoformat,
)
from falflow.jobs.model import MAX_TRAIL_REASON_CHARS
from falflow.jobs.store import (
    BY_REQUEST_ID_INDEX,
    BY_STATE_INDEX,
    JOB_KEY,
    STATE_SHARD_ATTRIBUTE,
    STATE_SHARDS,
    TTL_ATTRIBUTE,
    DynamoJobStore,
    state_shard,
)
from falflow_tools.local.resources import ProvisionedStack
from falflow_tools.template import load_template
from tests.fakes.job_store import InMemoryJobStore

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    if request.param == "memory":
        yield InMemoryJobStore(retention=timedelta(days=1))
        return
    stack: ProvisionedStack = request.getfixturevalue("aws")
    yield DynamoJobStore(aws_client("dynamodb"), stack.tables["JobsTable"], retention=timedelta(days=1))


def new_job(job_id: str = "job-1", **fields: object) -> Job:
    return Job.new(
        job_id, source="s3://in/a.png", source_kind="s3_media", now=T0, model="fal-ai/flux/dev", **fields
    )


def test_template_names_match_the_code() -> None:
    table = load_template()["Resources"]["JobsTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": JOB_KEY, "KeyType": "HASH"}]
    assert table["TimeToLiveSpecification"]["AttributeName"] == TTL_ATTRIBUTE
    indexes = {index["IndexName"]: index["KeySchema"] for index in table["GlobalSecondaryIndexes"]}
    assert [k["AttributeName"] for k in indexes[BY_STATE_INDEX]] == [
        STATE_SHARD_ATTRIBUTE,
        "state_changed_at",
    ]
    assert [k["AttributeName"] for k in indexes[BY_REQUEST_ID_INDEX]] == ["request_id"]


def test_create_is_idempotent_and_keeps_the_first_record(store: JobStore) -> None:
    job, created = store.create(new_job(input={"prompt": "a cat", "guidance": 3.5, "steps": 28}))
    assert created
    again, created_again = store.create(new_job(input={"prompt": "a dog"}))
    assert not created_again
    assert again.input == {"prompt": "a cat", "guidance": 3.5, "steps": 28}
    stored = store.get("job-1")
    assert stored is not None
    assert stored.input == job.input
    assert stored.state_times == {"ACCEPTED": "2026-11-21T12:00:00.000+00:00"}


URLS = RequestUrls(
    status_url="http://fal/r-1/status",
    response_url="http://fal/r-1",
    cancel_url="http://fal/r-1/cancel",
    gateway_request_id="gw-1",
)
ERROR = JobError(type="validation_error", message="bad", detail=[{"loc": ["body", "prompt"]}])


def submitted(store: JobStore, job_id: str = "job-1", request_id: str = "r-1") -> Job:
    store.create(new_job(job_id))
    job = store.record_submission(job_id, request_id, URLS, now=T0)
    assert job is not None
    return job


def storing(store: JobStore, job_id: str = "job-1", request_id: str = "r-1") -> Job:
    submitted(store, job_id, request_id)
    job = store.record_completion(job_id, request_id, completion_key="inbox/k", source="webhook", now=T0)
    assert job is not None
    return job


def test_states_move_forward_only(store: JobStore) -> None:
    store.create(new_job())
    store.bind_request("job-1", "r-1")
    stored = store.record_completion(
        "job-1", "r-1", completion_key="inbox/k", source="webhook", now=T0 + timedelta(seconds=5)
    )
    assert stored is not None
    assert stored.state is JobState.STORING
    # A late SUBMITTED write (the webhook beat the submit) must not move the job back.
    assert store.confirm_submission("job-1", "r-1", now=T0 + timedelta(seconds=6)) is None
    done = store.complete(
        "job-1",
        request_id="r-1",
        outputs=["outputs/job-1/a.png"],
        result_key="outputs/job-1/result.json",
        timings={"fal_s": 1.5},
        now=T0 + timedelta(seconds=9),
    )
    assert done is not None
    assert done.state is JobState.COMPLETED
    assert done.outputs == ["outputs/job-1/a.png"]
    assert done.result_key == "outputs/job-1/result.json"
    assert set(done.state_times) == {"ACCEPTED", "STORING", "COMPLETED"}
    assert done.expires_at == int((T0 + timedelta(seconds=9, days=1)).timestamp())
    # Final states never replace each other.
    assert store.fail("job-1", ERROR, now=T0 + timedelta(seconds=10)) is None
    assert store.cancel("job-1", now=T0 + timedelta(seconds=10)) is None
    assert store.confirm_submission("missing", "r-1", now=T0) is None


def test_record_submission_only_without_a_request_id(store: JobStore) -> None:
    store.create(new_job())
    assert store.confirm_submission("job-1", "r-1", now=T0) is None  # no request bound: refused
    job = store.record_submission("job-1", "r-1", URLS, now=T0)
    assert job is not None
    assert job.state is JobState.SUBMITTED
    assert (job.request_id, job.status_url, job.cancel_url, job.gateway_request_id) == (
        "r-1",
        "http://fal/r-1/status",
        "http://fal/r-1/cancel",
        "gw-1",
    )
    assert job.submit_lease_until is None  # the lease goes with the write
    store.create(new_job("job-2"))
    store.bind_request("job-2", "r-other")
    assert store.record_submission("job-2", "r-2", URLS, now=T0) is None  # the webhook was first


def test_confirm_submission_needs_the_bound_request(store: JobStore) -> None:
    store.create(new_job())
    store.claim_submit_lease("job-1", now=T0, lease=timedelta(seconds=30))
    store.bind_request("job-1", "r-1")
    assert store.confirm_submission("job-1", "r-2", now=T0) is None
    job = store.confirm_submission("job-1", "r-1", now=T0)
    assert job is not None
    assert job.state is JobState.SUBMITTED
    assert job.submit_lease_until is None


def test_an_ambiguous_submit_holds_the_lease_only_before_fal_has_the_job(store: JobStore) -> None:
    store.create(new_job())
    held = store.record_ambiguous_submit("job-1", now=T0, hold_until=T0 + timedelta(minutes=2))
    assert held is not None
    assert held.submit_ambiguous_at == "2026-11-21T12:00:00.000+00:00"
    assert held.submit_lease_until == "2026-11-21T12:02:00.000+00:00"
    assert (
        store.claim_submit_lease("job-1", now=T0 + timedelta(minutes=1), lease=timedelta(seconds=30)) is None
    )
    submitted(store, "job-2", "r-2")
    assert store.record_ambiguous_submit("job-2", now=T0, hold_until=T0 + timedelta(minutes=2)) is None
    store.create(new_job("job-3"))
    store.bind_request("job-3", "r-3")  # the webhook bound a request while the job is ACCEPTED
    assert store.record_ambiguous_submit("job-3", now=T0, hold_until=T0 + timedelta(minutes=2)) is None


def test_release_submit_lease_only_the_lease_held(store: JobStore) -> None:
    store.create(new_job())
    claimed = store.claim_submit_lease("job-1", now=T0, lease=timedelta(seconds=30))
    assert claimed is not None
    assert claimed.submit_lease_until is not None
    assert store.release_submit_lease("job-1", held_until="2026-01-01T00:00:00.000+00:00") is None
    released = store.release_submit_lease("job-1", held_until=claimed.submit_lease_until)
    assert released is not None
    assert released.submit_lease_until is None
    assert store.release_submit_lease("job-1", held_until=claimed.submit_lease_until) is None  # gone
    store.create(new_job("job-2"))
    lease = store.claim_submit_lease("job-2", now=T0, lease=timedelta(seconds=30))
    assert lease is not None
    assert lease.submit_lease_until is not None
    store.bind_request("job-2", "r-2")
    assert store.release_submit_lease("job-2", held_until=lease.submit_lease_until) is None


def test_reject_and_fail_before_submit_only_before_fal_has_the_job(store: JobStore) -> None:
    store.create(new_job())
    store.claim_submit_lease("job-1", now=T0, lease=timedelta(seconds=30))
    rejected = store.reject("job-1", ERROR, now=T0)
    assert rejected is not None
    assert (rejected.state, rejected.error, rejected.submit_lease_until) == (JobState.REJECTED, ERROR, None)
    assert rejected.expires_at == int((T0 + timedelta(days=1)).timestamp())
    store.create(new_job("job-2"))
    failed = store.fail_before_submit("job-2", ERROR, now=T0)
    assert failed is not None
    assert (failed.state, failed.error) == (JobState.FAILED, ERROR)
    submitted(store, "job-3")
    assert store.reject("job-3", ERROR, now=T0) is None
    assert store.fail_before_submit("job-3", ERROR, now=T0) is None
    assert store.reject("job-1", ERROR, now=T0) is None  # final already


def test_mark_in_progress_needs_the_jobs_request(store: JobStore) -> None:
    submitted(store)
    assert store.mark_in_progress("job-1", "r-2", now=T0) is None
    job = store.mark_in_progress("job-1", "r-1", now=T0)
    assert job is not None
    assert job.state is JobState.IN_PROGRESS
    assert store.mark_in_progress("job-1", "r-1", now=T0) is None  # not forward


def test_record_completion_once_for_the_jobs_request(store: JobStore) -> None:
    submitted(store)
    assert store.record_completion("job-1", "r-2", completion_key="inbox/k", source="webhook", now=T0) is None
    job = store.record_completion("job-1", "r-1", completion_key="inbox/k", source="reconcile", now=T0)
    assert job is not None
    assert (job.state, job.completion_key, job.completion_source) == (
        JobState.STORING,
        "inbox/k",
        "reconcile",
    )
    assert store.record_completion("job-1", "r-1", completion_key="inbox/j", source="webhook", now=T0) is None
    store.create(new_job("job-2"))
    store.bind_request("job-2", "r-9")
    store.fail("job-2", ERROR, now=T0)
    assert store.record_completion("job-2", "r-9", completion_key="inbox/k", source="webhook", now=T0) is None


def test_mark_handed_over_needs_the_recorded_completion(store: JobStore) -> None:
    storing(store)
    assert store.mark_handed_over("job-1", "inbox/other", now=T0) is None
    job = store.mark_handed_over("job-1", "inbox/k", now=T0)
    assert job is not None
    assert job.completion_enqueued_at == "2026-11-21T12:00:00.000+00:00"


def test_store_lease_is_compare_and_set(store: JobStore) -> None:
    storing(store)
    held = store.take_store_lease("job-1", seen_until=None, now=T0, lease=timedelta(minutes=5))
    assert held is not None
    assert held.store_lease_until == "2026-11-21T12:05:00.000+00:00"
    # someone else read no lease: their compare-and-set fails
    assert store.take_store_lease("job-1", seen_until=None, now=T0, lease=timedelta(minutes=5)) is None
    # a live lease is never taken
    live = held.store_lease_until
    assert store.take_store_lease("job-1", seen_until=live, now=T0, lease=timedelta(minutes=5)) is None
    later = T0 + timedelta(minutes=6)
    taken = store.take_store_lease("job-1", seen_until=live, now=later, lease=timedelta(minutes=5))
    assert taken is not None
    assert taken.store_lease_until is not None
    assert store.release_store_lease("job-1", held_until=live) is None  # not ours any more
    released = store.release_store_lease("job-1", held_until=taken.store_lease_until)
    assert released is not None
    assert released.store_lease_until is None


def test_a_dead_runs_store_lease_is_taken_over_once_and_only_once_expired(store: JobStore) -> None:
    storing(store)
    held = store.take_store_lease("job-1", seen_until=None, now=T0, lease=timedelta(minutes=16))
    assert held is not None
    assert held.store_lease_until is not None
    lease = held.store_lease_until
    assert store.take_over_store_lease("job-1", expired_until=lease, now=T0 + timedelta(minutes=15)) is None
    assert store.take_over_store_lease("job-1", expired_until="2026", now=T0 + timedelta(hours=1)) is None
    later = T0 + timedelta(minutes=17)
    taken = store.take_over_store_lease("job-1", expired_until=lease, now=later)
    assert taken is not None
    assert (taken.store_lease_until, taken.store_takeovers) == (None, 1)
    assert taken.completion_enqueued_at == "2026-11-21T12:17:00.000+00:00"
    assert store.take_over_store_lease("job-1", expired_until=lease, now=later) is None  # once
    # the handed-over message's run takes the free lease like any first run
    again = store.take_store_lease("job-1", seen_until=None, now=later, lease=timedelta(minutes=16))
    assert again is not None
    assert again.store_lease_until is not None
    after = T0 + timedelta(minutes=40)
    second = store.take_over_store_lease("job-1", expired_until=again.store_lease_until, now=after)
    assert second is not None
    assert second.store_takeovers == 2
    # a final job is never taken over
    final = store.take_store_lease("job-1", seen_until=None, now=after, lease=timedelta(minutes=16))
    assert final is not None
    assert final.store_lease_until is not None
    store.fail("job-1", ERROR, now=after)
    gone = T0 + timedelta(hours=2)
    assert store.take_over_store_lease("job-1", expired_until=final.store_lease_until, now=gone) is None


def test_a_handoff_no_store_run_took_is_taken_over_once(store: JobStore) -> None:
    storing(store)
    handed = store.mark_handed_over("job-1", "inbox/k", now=T0)
    assert handed is not None
    assert handed.completion_enqueued_at is not None
    at = handed.completion_enqueued_at
    assert store.take_over_handoff("job-1", handed_over_at="2026", now=T0 + timedelta(hours=8)) is None
    later = T0 + timedelta(hours=8)
    taken = store.take_over_handoff("job-1", handed_over_at=at, now=later)
    assert taken is not None
    assert (taken.store_takeovers, taken.completion_enqueued_at) == (1, isoformat(later))
    assert store.take_over_handoff("job-1", handed_over_at=at, now=later) is None  # once
    # a store run holding the job's lease is not overtaken
    held = store.take_store_lease("job-1", seen_until=None, now=later, lease=timedelta(minutes=16))
    assert held is not None
    assert store.take_over_handoff("job-1", handed_over_at=isoformat(later), now=later) is None


def test_unannounced_final_jobs_are_listed_until_their_event_is_marked(store: JobStore) -> None:
    storing(store)
    store.fail("job-1", ERROR, now=T0 + timedelta(minutes=1))
    window = {"changed_before": T0 + timedelta(minutes=30), "changed_after": T0}
    assert [j.job_id for j in store.list_unannounced(JobState.FAILED, **window)] == ["job-1"]
    assert (
        list(
            store.list_unannounced(JobState.FAILED, changed_before=T0, changed_after=T0 - timedelta(hours=1))
        )
        == []
    )
    store.mark_event_published("job-1", now=T0 + timedelta(minutes=2))
    assert list(store.list_unannounced(JobState.FAILED, **window)) == []


def test_complete_needs_the_jobs_request(store: JobStore) -> None:
    storing(store)

    def complete(job_id: str, request_id: str | None) -> Job | None:
        return store.complete(
            job_id, request_id=request_id, outputs=["o"], result_key="r.json", timings={}, now=T0
        )

    assert complete("job-1", "r-2") is None
    done = complete("job-1", "r-1")
    assert done is not None
    assert done.state is JobState.COMPLETED
    store.create(new_job("job-2"))  # no request id on the record: no condition on it
    assert complete("job-2", None) is not None


def test_fail_unanswered_only_without_a_completion(store: JobStore) -> None:
    storing(store)
    assert store.fail_unanswered("job-1", ERROR, now=T0) is None
    failed = store.fail("job-1", ERROR, now=T0)  # the store's own failure needs no such condition
    assert failed is not None
    assert (failed.state, failed.error) == (JobState.FAILED, ERROR)
    submitted(store, "job-2", "r-2")
    gave_up = store.fail_unanswered("job-2", ERROR, now=T0)
    assert gave_up is not None
    assert gave_up.state is JobState.FAILED


def test_mark_event_published_once(store: JobStore) -> None:
    store.create(new_job())
    first = store.mark_event_published("job-1", now=T0)
    assert first is not None
    assert first.event_published_at == "2026-11-21T12:00:00.000+00:00"
    assert store.mark_event_published("job-1", now=T0 + timedelta(seconds=1)) is None
    assert store.mark_event_published("missing", now=T0) is None


def test_record_cost_keeps_a_stored_cost_unless_replacing(store: JobStore) -> None:
    store.create(new_job())
    estimate = JobCost(amount=0.025, source="estimate")
    billed = JobCost(amount=0.03, source="billing_event")
    written = store.record_cost("job-1", estimate, replace_existing=False)
    assert written is not None
    assert written.cost == estimate
    assert store.record_cost("job-1", JobCost(amount=1.0, source="estimate"), replace_existing=False) is None
    replaced = store.record_cost("job-1", billed, replace_existing=True)
    assert replaced is not None
    assert replaced.cost == billed
    assert store.record_cost("missing", billed, replace_existing=True) is None


def test_cancel_unsubmitted_only_before_fal_has_the_job(store: JobStore) -> None:
    store.create(new_job())
    cancelled = store.cancel_unsubmitted("job-1", now=T0)
    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    submitted(store, "job-2", "r-2")
    assert store.cancel_unsubmitted("job-2", now=T0) is None
    asked = store.cancel("job-2", now=T0)
    assert asked is not None
    assert asked.state is JobState.CANCELLED
    assert store.cancel("job-2", now=T0) is None


def test_bind_request_accepts_one_request_id(store: JobStore) -> None:
    store.create(new_job())
    first = store.bind_request("job-1", "req-a", urls=RequestUrls(status_url="http://fal/status"))
    assert first.bound
    assert first.job is not None
    assert first.job.status_url == "http://fal/status"
    assert store.bind_request("job-1", "req-a").bound  # the same id again is fine
    other = store.bind_request("job-1", "req-b")
    assert not other.bound
    assert other.conflicting_request_id == "req-a"
    assert not store.bind_request("missing", "req-c").bound


def test_a_fal_request_binds_at_most_one_job(store: JobStore) -> None:
    submitted(store, "job-1", "r-1")
    store.create(new_job("job-2"))

    assert store.record_submission("job-2", "r-1", URLS, now=T0) is None
    taken = store.bind_request("job-2", "r-1")
    assert not taken.bound
    assert taken.job is not None
    assert taken.job.request_id is None  # job-2 still waits for a request of its own
    assert store.request_holder("r-1") == "job-1"
    assert store.request_holder("r-2") is None
    assert store.bind_request("job-1", "r-1").bound  # its own request, again: fine
    assert store.record_submission("job-2", "r-2", URLS, now=T0) is not None
    assert store.request_holder("r-2") == "job-2"


def test_concurrent_bindings_of_one_request_have_exactly_one_winner(store: JobStore) -> None:
    jobs = [f"job-{n}" for n in range(6)]
    for job_id in jobs:
        store.create(new_job(job_id))
    barrier = threading.Barrier(len(jobs))
    won: list[str] = []

    def bind(job_id: str) -> None:
        barrier.wait()
        if store.record_submission(job_id, "r-shared", URLS, now=T0) is not None:
            won.append(job_id)

    threads = [threading.Thread(target=bind, args=(job_id,)) for job_id in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1
    assert store.request_holder("r-shared") == won[0]
    assert [job_id for job_id in jobs if (store.get(job_id) or new_job()).request_id] == won


def test_a_duplicate_request_is_noted_once_and_claimed_for_its_job(store: JobStore) -> None:
    submitted(store, "job-1", "r-1")
    store.create(new_job("job-2"))

    noted = store.record_duplicate_request("job-1", "r-2")
    assert noted is not None
    assert noted.duplicate_requests == ["r-2"]
    assert noted.request_id == "r-1"
    assert store.record_duplicate_request("job-1", "r-2") is None  # once
    assert store.record_duplicate_request("job-1", "r-1") is None  # the bound request is no duplicate
    assert store.record_duplicate_request("job-2", "r-2") is None  # job-1's: not job-2's to cancel
    assert store.record_submission("job-2", "r-2", URLS, now=T0) is None  # nor to bind
    assert store.request_holder("r-2") == "job-1"
    assert store.record_duplicate_request("job-1", "r-3") is not None
    assert (store.get("job-1") or new_job()).duplicate_requests == ["r-2", "r-3"]


def test_claim_submit_lease_is_exclusive_until_the_lease_expires(store: JobStore) -> None:
    store.create(new_job())
    first = store.claim_submit_lease("job-1", now=T0, lease=timedelta(seconds=30))
    assert first is not None
    assert first.attempts == 1
    assert (
        store.claim_submit_lease("job-1", now=T0 + timedelta(seconds=10), lease=timedelta(seconds=30)) is None
    )
    later = store.claim_submit_lease("job-1", now=T0 + timedelta(seconds=31), lease=timedelta(seconds=30))
    assert later is not None
    assert later.attempts == 2
    store.bind_request("job-1", "req-a")
    assert (
        store.claim_submit_lease("job-1", now=T0 + timedelta(minutes=5), lease=timedelta(seconds=30)) is None
    )


def test_concurrent_claims_have_exactly_one_winner(store: JobStore) -> None:
    store.create(new_job())
    winners: list[Job] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        job = store.claim_submit_lease("job-1", now=T0, lease=timedelta(seconds=30))
        if job is not None:
            winners.append(job)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_trail_appends(store: JobStore) -> None:
    store.create(new_job())
    store.add_trail("job-1", TrailEntry(at="t1", actor="reconcile", action="polled", reason="no webhook"))
    store.add_trail("job-1", TrailEntry(at="t2", actor="reconcile", action="completed"))
    job = store.get("job-1")
    assert job is not None
    assert [entry.action for entry in job.trail] == ["polled", "completed"]


def test_the_trail_keeps_the_newest_entries_and_counts_the_dropped_ones(store: JobStore) -> None:
    store.create(new_job())
    extra = 7
    for n in range(MAX_TRAIL_ENTRIES + extra):
        store.add_trail("job-1", TrailEntry(at=f"t{n:03}", actor="webhook", action="note", reason=f"n{n}"))
    job = store.get("job-1")
    assert job is not None
    assert len(job.trail) == MAX_TRAIL_ENTRIES
    assert job.trail_dropped == extra
    assert [entry.reason for entry in job.trail] == [f"n{n}" for n in range(extra, MAX_TRAIL_ENTRIES + extra)]


def test_the_same_note_again_adds_nothing_and_a_long_reason_is_clipped(store: JobStore) -> None:
    store.create(new_job())
    note = TrailEntry(at="t1", actor="webhook", action="ignored_foreign_request", reason="r-9 kept aside")
    store.add_trail("job-1", note)
    store.add_trail("job-1", note.model_copy(update={"at": "t2"}))  # a replay, later
    store.add_trail("job-1", TrailEntry(at="t3", actor="webhook", action="long", reason="x" * 5000))
    job = store.get("job-1")
    assert job is not None
    assert [entry.at for entry in job.trail] == ["t1", "t3"]
    assert len(job.trail[1].reason) == MAX_TRAIL_REASON_CHARS
    assert job.trail_dropped == 0


def test_concurrent_trail_writers_lose_no_entry(store: JobStore) -> None:
    store.create(new_job())
    barrier = threading.Barrier(4)

    def note(n: int) -> None:
        barrier.wait()
        store.add_trail("job-1", TrailEntry(at=f"t{n}", actor="reconcile", action="note", reason=f"n{n}"))

    threads = [threading.Thread(target=note, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job = store.get("job-1")
    assert job is not None
    assert sorted(entry.reason for entry in job.trail) == ["n0", "n1", "n2", "n3"]


def test_list_by_state_and_find_by_request_id(store: JobStore) -> None:
    for n in range(5):
        store.create(Job.new(f"job-{n}", source="sqs://q/m", source_kind="sqs", now=T0, model="m"))
        store.record_submission(f"job-{n}", f"r-{n}", URLS, now=T0 + timedelta(minutes=n))
    waited = [
        job.job_id
        for job in store.list_by_state(JobState.SUBMITTED, changed_before=T0 + timedelta(minutes=2))
    ]
    assert waited == ["job-0", "job-1", "job-2"]
    newest = [job.job_id for job in store.list_by_state(JobState.SUBMITTED, newest_first=True, limit=2)]
    assert newest == ["job-4", "job-3"]
    found = store.find_by_request_id("r-3")
    assert found is not None
    assert found.job_id == "job-3"
    assert store.find_by_request_id("nope") is None


def test_list_by_state_merges_every_shard_in_order(store: JobStore) -> None:
    # More jobs than shards, entering SUBMITTED in an order unrelated to their shards.
    count = STATE_SHARDS + 4
    for n in range(count):
        store.create(Job.new(f"job-{n}", source="sqs://q/m", source_kind="sqs", now=T0, model="m"))
        store.record_submission(f"job-{n}", f"r-{n}", URLS, now=T0 + timedelta(seconds=(n * 7) % count))
    entered = sorted(range(count), key=lambda n: (n * 7) % count)
    listed = [job.job_id for job in store.list_by_state(JobState.SUBMITTED)]
    assert listed == [f"job-{n}" for n in entered]
    newest = [job.job_id for job in store.list_by_state(JobState.SUBMITTED, newest_first=True, limit=5)]
    assert newest == [f"job-{n}" for n in reversed(entered[-5:])]
    window = store.list_by_state(
        JobState.SUBMITTED,
        changed_after=T0 + timedelta(seconds=10),
        changed_before=T0 + timedelta(seconds=12),
    )
    assert [job.job_id for job in window] == [f"job-{n}" for n in entered[10:13]]
    assert list(store.list_by_state(JobState.ACCEPTED)) == []


def test_every_write_that_moves_a_job_moves_its_shard(aws: ProvisionedStack) -> None:
    client = aws_client("dynamodb")
    table = aws.tables["JobsTable"]
    store = DynamoJobStore(client, table, retention=timedelta(days=1))

    def shard_of(job_id: str) -> str:
        return client.get_item(TableName=table, Key={JOB_KEY: {"S": job_id}})["Item"][STATE_SHARD_ATTRIBUTE][
            "S"
        ]

    store.create(new_job("job-1"))
    assert shard_of("job-1") == state_shard("job-1", JobState.ACCEPTED)
    store.record_submission("job-1", "r-1", URLS, now=T0)
    assert shard_of("job-1") == state_shard("job-1", JobState.SUBMITTED)
    store.record_completion("job-1", "r-1", completion_key="inbox/k", source="webhook", now=T0)
    assert shard_of("job-1") == state_shard("job-1", JobState.STORING)
    store.fail("job-1", ERROR, now=T0)
    assert shard_of("job-1") == state_shard("job-1", JobState.FAILED)
    rejected = Job.new(
        "job-2", source="s3://in/b.png", source_kind="s3_media", now=T0, state=JobState.REJECTED
    )
    store.create(rejected)
    assert shard_of("job-2") == state_shard("job-2", JobState.REJECTED)


# ------------------------------------------------------------------------- spend control


def _leased(store: JobStore, job_id: str = "job-1") -> Job:
    job, _ = store.create(new_job(job_id, submit_lease_until=isoformat(T0 + timedelta(minutes=2))))
    return job


def _reservation(amount: float = 0.05) -> SpendReservation:
    return SpendReservation(amount=amount, counters=["daily#2026-11-21#all"], reserved_at=isoformat(T0))


def _hold() -> JobHold:
    return JobHold(reason="budget", message="over", held_at=isoformat(T0), cap="daily#all")


def test_a_reservation_needs_the_submit_lease_and_is_recorded_once(store: JobStore) -> None:
    job = _leased(store)
    assert job.submit_lease_until is not None
    assert not store.reserve_spend(
        job.job_id, _reservation(), [], lease="2000-01-01T00:00:00.000+00:00"
    ).written
    assert store.reserve_spend(job.job_id, _reservation(), [], lease=job.submit_lease_until).written
    assert not store.reserve_spend(job.job_id, _reservation(), [], lease=job.submit_lease_until).written
    stored = store.get(job.job_id)
    assert stored is not None
    assert stored.reservation == _reservation()


def test_hold_and_release_move_between_accepted_and_held_only(store: JobStore) -> None:
    job = _leased(store)
    assert not store.release_held(job.job_id, now=T0).written  # not HELD
    assert store.hold(job.job_id, _hold(), now=T0, lease="2000-01-01T00:00:00.000+00:00") is None
    held = store.hold(job.job_id, _hold(), now=T0, lease=job.submit_lease_until)
    assert held is not None
    assert held.state is JobState.HELD
    assert held.submit_lease_until is None
    assert [j.job_id for j in store.list_by_state(JobState.HELD)] == [job.job_id]
    assert store.hold(job.job_id, _hold(), now=T0, lease=None) is None  # already HELD

    released = store.release_held(job.job_id, now=T0 + timedelta(seconds=1), reservation=_reservation())
    assert released.job is not None
    assert released.job.state is JobState.ACCEPTED
    assert released.job.hold is None
    assert released.job.reservation == _reservation()
    assert list(store.list_by_state(JobState.HELD)) == []
    assert [j.job_id for j in store.list_by_state(JobState.ACCEPTED)] == [job.job_id]
    assert not store.release_held(job.job_id, now=T0).written


def test_a_held_job_still_moves_forward_when_fal_answers(store: JobStore) -> None:
    job = _leased(store)
    store.hold(job.job_id, _hold(), now=T0, lease=job.submit_lease_until)
    assert store.record_submission(job.job_id, "req-1", RequestUrls(), now=T0) is not None
    stored = store.get(job.job_id)
    assert stored is not None
    assert stored.state is JobState.SUBMITTED


def test_a_reservation_is_settled_once(store: JobStore) -> None:
    job = _leased(store)
    assert not store.settle_reservation(job.job_id, amount=0.04, charges=[], now=T0).written  # none
    assert job.submit_lease_until is not None
    store.reserve_spend(job.job_id, _reservation(), [], lease=job.submit_lease_until)
    settled = store.settle_reservation(job.job_id, amount=0.04, charges=[], now=T0)
    assert settled.job is not None
    assert settled.job.reservation is not None
    assert settled.job.reservation.settled_amount == 0.04
    assert settled.job.reservation.amount == 0.05
    assert not store.settle_reservation(job.job_id, amount=0.04, charges=[], now=T0).written
