"""A batch line's final state is tallied on its batch exactly once, in the write that makes it final
(the job store on DynamoDB, and its in-memory fake, alike); a job of no batch tallies nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from falflow.aws.clients import aws_client
from falflow.batches.model import Batch, BatchState
from falflow.batches.store import DynamoBatchStore
from falflow.jobs import DynamoJobStore, Job, JobError, JobState, JobStore
from falflow.jobs.batch import JobBatch, batch_job_id
from falflow_tools.local.resources import ProvisionedStack
from tests.fakes.job_store import InMemoryJobStore

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
BATCH = "cats-1234abcd"
ERROR = JobError(type="boom", message="it failed")

Tally = Callable[[], dict[str, int]]


@pytest.fixture(params=["dynamodb", "memory"])
def store_and_tally(request: pytest.FixtureRequest) -> Iterator[tuple[JobStore, Tally]]:
    if request.param == "memory":
        memory = InMemoryJobStore(retention=timedelta(days=1))
        yield (
            memory,
            lambda: {state: n for (batch, state), n in memory.batch_tallies.items() if batch == BATCH},
        )
        return
    stack: ProvisionedStack = request.getfixturevalue("aws")
    client = aws_client("dynamodb")
    batches = DynamoBatchStore(client, stack.tables["BatchTable"])
    store = DynamoJobStore(
        client, stack.tables["JobsTable"], retention=timedelta(days=1), batch_table=stack.tables["BatchTable"]
    )

    now = T0.isoformat()
    batches.create(
        Batch(name=BATCH, state=BatchState.RUNNING, source="s3://in/b.jsonl", created_at=now, updated_at=now)
    )

    def tally() -> dict[str, int]:
        batch = batches.get(BATCH)
        return batch.tally if batch else {}

    yield store, tally


def line(custom_id: str, state: JobState = JobState.ACCEPTED) -> Job:
    return Job.new(
        batch_job_id(BATCH, custom_id),
        source="sqs:m-1",
        source_kind="sqs",
        now=T0,
        state=state,
        model="fal-ai/flux/dev",
        batch=JobBatch(name=BATCH, custom_id=custom_id, line=2),
    )


def test_each_line_counts_once_in_the_state_it_ended_in(store_and_tally: tuple[JobStore, Tally]) -> None:
    store, tally = store_and_tally
    for custom_id in ("a", "b", "c"):
        store.create(line(custom_id))
    assert store.fail(batch_job_id(BATCH, "a"), ERROR, now=T0) is not None
    assert store.fail(batch_job_id(BATCH, "a"), ERROR, now=T0) is None  # already final: counts nothing
    assert store.cancel_unsubmitted(batch_job_id(BATCH, "b"), now=T0) is not None
    assert store.cancel(batch_job_id(BATCH, "b"), now=T0) is None
    assert tally() == {"FAILED": 1, "CANCELLED": 1}


def test_a_line_recorded_final_at_once_counts_once_however_often_it_is_recorded(
    store_and_tally: tuple[JobStore, Tally],
) -> None:
    store, tally = store_and_tally
    _, created = store.create(line("d", JobState.REJECTED))
    _, again = store.create(line("d", JobState.REJECTED))
    assert (created, again) == (True, False)
    assert tally() == {"REJECTED": 1}


def test_a_job_of_no_batch_tallies_nothing(store_and_tally: tuple[JobStore, Tally]) -> None:
    store, tally = store_and_tally
    store.create(Job.new("job-1", source="sqs:m-2", source_kind="sqs", now=T0, model="fal-ai/flux/dev"))
    assert store.fail("job-1", ERROR, now=T0) is not None
    assert tally() == {}
