"""The JobStore contract, held by the DynamoDB adapter (on moto, tables from template.yaml) and by
the in-memory fake the unit tests use, so the fake cannot drift from the real thing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from falflow.aws.clients import aws_client
from falflow.jobs import ABSENT, Job, JobError, JobState, JobStore, TrailEntry
from falflow.jobs.store import BY_REQUEST_ID_INDEX, BY_STATE_INDEX, JOB_KEY, TTL_ATTRIBUTE, DynamoJobStore
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
    assert [k["AttributeName"] for k in indexes[BY_STATE_INDEX]] == ["state", "state_changed_at"]
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


def test_advance_moves_forward_only(store: JobStore) -> None:
    store.create(new_job())
    stored = store.advance("job-1", JobState.STORING, now=T0 + timedelta(seconds=5))
    assert stored is not None
    assert stored.state is JobState.STORING
    # A late SUBMITTED write (the webhook beat the submit) must not move the job back.
    assert store.advance("job-1", JobState.SUBMITTED, now=T0 + timedelta(seconds=6)) is None
    done = store.advance(
        "job-1",
        JobState.COMPLETED,
        now=T0 + timedelta(seconds=9),
        fields={"outputs": ["outputs/job-1/a.png"]},
    )
    assert done is not None
    assert done.state is JobState.COMPLETED
    assert done.outputs == ["outputs/job-1/a.png"]
    assert set(done.state_times) == {"ACCEPTED", "STORING", "COMPLETED"}
    assert done.expires_at == int((T0 + timedelta(seconds=9, days=1)).timestamp())
    # Final states never replace each other.
    assert store.advance("job-1", JobState.FAILED, now=T0 + timedelta(seconds=10)) is None
    assert store.advance("missing", JobState.SUBMITTED, now=T0) is None


def test_advance_and_update_honour_conditions(store: JobStore) -> None:
    store.create(new_job())
    assert store.advance("job-1", JobState.SUBMITTED, now=T0, require={"request_id": "r-1"}) is None
    assert store.advance("job-1", JobState.SUBMITTED, now=T0, require={"request_id": ABSENT}) is not None
    error = JobError(type="validation_error", message="bad", detail=[{"loc": ["body", "prompt"]}])
    assert store.update("job-1", fields={"error": error}, max_rank=0) is None
    updated = store.update("job-1", fields={"error": error}, max_rank=1)
    assert updated is not None
    assert updated.error == error
    cleared = store.update("job-1", remove=["error"])
    assert cleared is not None
    assert cleared.error is None


def test_bind_request_accepts_one_request_id(store: JobStore) -> None:
    store.create(new_job())
    first = store.bind_request("job-1", "req-a", fields={"status_url": "http://fal/status"})
    assert first.bound
    assert first.job is not None
    assert first.job.status_url == "http://fal/status"
    assert store.bind_request("job-1", "req-a").bound  # the same id again is fine
    other = store.bind_request("job-1", "req-b")
    assert not other.bound
    assert other.conflicting_request_id == "req-a"
    assert not store.bind_request("missing", "req-c").bound


def test_claim_submit_is_exclusive_until_the_lease_expires(store: JobStore) -> None:
    store.create(new_job())
    first = store.claim_submit("job-1", now=T0, lease=timedelta(seconds=30))
    assert first is not None
    assert first.attempts == 1
    assert store.claim_submit("job-1", now=T0 + timedelta(seconds=10), lease=timedelta(seconds=30)) is None
    later = store.claim_submit("job-1", now=T0 + timedelta(seconds=31), lease=timedelta(seconds=30))
    assert later is not None
    assert later.attempts == 2
    store.bind_request("job-1", "req-a")
    assert store.claim_submit("job-1", now=T0 + timedelta(minutes=5), lease=timedelta(seconds=30)) is None


def test_concurrent_claims_have_exactly_one_winner(store: JobStore) -> None:
    store.create(new_job())
    winners: list[Job] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        job = store.claim_submit("job-1", now=T0, lease=timedelta(seconds=30))
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


def test_list_by_state_and_find_by_request_id(store: JobStore) -> None:
    for n in range(5):
        store.create(Job.new(f"job-{n}", source="sqs://q/m", source_kind="sqs", now=T0, model="m"))
        store.advance(
            f"job-{n}", JobState.SUBMITTED, now=T0 + timedelta(minutes=n), fields={"request_id": f"r-{n}"}
        )
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
