"""A batch line's final state is tallied on its batch exactly once, in the write that makes it final,
and its cost moves the batch's cost so far by the change, in the write that records it (the job
store on DynamoDB, and its in-memory fake, alike); a job of no batch tallies nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from falflow.aws.clients import aws_client
from falflow.batches.model import Batch, BatchState
from falflow.batches.store import DynamoBatchStore
from falflow.jobs import DynamoJobStore, Job, JobCost, JobError, JobState, JobStore
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


def test_a_line_s_cost_moves_its_batch_s_cost_so_far_once_by_the_change(
    store_and_tally: tuple[JobStore, Tally], request: pytest.FixtureRequest
) -> None:
    store, _ = store_and_tally
    cost_so_far = batch_cost(store, request)
    for custom_id in ("a", "b"):
        store.create(line(custom_id))
    a, b = batch_job_id(BATCH, "a"), batch_job_id(BATCH, "b")
    estimate = JobCost(amount=0.025, source="estimate")
    assert store.record_cost(a, estimate, replace_existing=False) is not None
    assert store.record_cost(a, estimate, replace_existing=False) is None  # recorded: adds nothing
    assert store.record_cost(b, JobCost(amount=0.05, source="estimate"), replace_existing=False) is not None
    assert cost_so_far() == pytest.approx(0.075)
    # fal's bill replaces the estimate: the batch moves by the difference.
    billed = JobCost(amount=0.04, source="billing_event")
    assert store.record_cost(a, billed, replace_existing=True) is not None
    assert store.record_cost(a, billed, replace_existing=True) is not None  # the same again: no change
    assert cost_so_far() == pytest.approx(0.09)
    job = store.get(a)
    assert job is not None
    assert job.cost == billed


def batch_cost(store: JobStore, request: pytest.FixtureRequest) -> Callable[[], float]:
    if isinstance(store, InMemoryJobStore):
        return lambda: store.batch_costs[BATCH]
    batches = DynamoBatchStore(aws_client("dynamodb"), request.getfixturevalue("aws").tables["BatchTable"])

    def cost_usd() -> float:
        batch = batches.get(BATCH)
        return batch.cost_usd if batch else 0.0

    return cost_usd
