"""The completion hand-off: one recorded completion per job, whatever order and however often
deliveries arrive; a lost hand-off is recovered; another request id is never stored."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falflow.completion.handoff import CompletionHandoff, HandoffOutcome
from falflow.jobs import Job, JobError, JobState, RequestUrls, utcnow
from tests.fakes.completion import MemoryInbox, MemoryOutputsQueue
from tests.fakes.job_store import InMemoryJobStore
from tests.fakes.webhook_events import delivery

NOW = utcnow()
GRACE = timedelta(seconds=60)


def accepted(store: InMemoryJobStore, job_id: str = "job-1") -> Job:
    job, _ = store.create(
        Job.new(job_id, source="sqs:m1", source_kind="sqs", now=NOW, model="fal-ai/flux/dev")
    )
    return job


def submit_write(store: InMemoryJobStore, job_id: str, request_id: str) -> None:
    """What the submit path writes once fal answered: bind, then advance (may be a no-op)."""
    store.bind_request(
        job_id,
        request_id,
        urls=RequestUrls(status_url=f"https://queue.fal.run/x/requests/{request_id}/status"),
    )
    store.confirm_submission(job_id, request_id, now=NOW)


@pytest.fixture
def parts() -> tuple[InMemoryJobStore, MemoryInbox, MemoryOutputsQueue, CompletionHandoff]:
    store, inbox, queue = InMemoryJobStore(), MemoryInbox(), MemoryOutputsQueue()
    return store, inbox, queue, CompletionHandoff(store, inbox, queue, handoff_grace=GRACE)


def test_first_delivery_is_recorded_and_handed_over_once(parts) -> None:
    store, inbox, queue, handoff = parts
    accepted(store)
    submit_write(store, "job-1", "req-1")
    body = delivery("req-1", payload={"images": []})

    first = handoff.record("job-1", "req-1", body, source="webhook", now=NOW)
    again = [
        handoff.record("job-1", "req-1", body, source="webhook", now=NOW + timedelta(minutes=5))
        for _ in range(3)
    ]

    assert first.outcome is HandoffOutcome.RECORDED
    assert {r.outcome for r in again} == {HandoffOutcome.DUPLICATE}
    assert len(queue.messages) == 1
    message = queue.messages[0]
    assert (message.job_id, message.request_id) == ("job-1", "req-1")
    assert inbox.objects[message.completion_key] == body  # the exact bytes fal sent
    job = store.get("job-1")
    assert job is not None
    assert job.state is JobState.STORING
    assert job.completion_key == message.completion_key
    assert job.completion_enqueued_at is not None
    assert inbox.puts == 1  # duplicates write nothing


def test_webhook_before_the_submits_write_binds_the_request_and_the_submit_cannot_regress_it(parts) -> None:
    store, _, queue, handoff = parts
    accepted(store)

    result = handoff.record("job-1", "req-1", delivery("req-1", payload={}), source="webhook", now=NOW)
    submit_write(store, "job-1", "req-1")  # the submit's own write comes later

    assert result.outcome is HandoffOutcome.RECORDED
    job = store.get("job-1")
    assert job is not None
    assert job.state is JobState.STORING  # not moved back to SUBMITTED
    assert job.request_id == "req-1"
    assert job.status_url is not None  # the submit's URLs still land
    assert len(queue.messages) == 1


def test_a_completion_for_another_request_of_the_job_is_kept_aside_never_stored(parts) -> None:
    store, inbox, queue, handoff = parts
    accepted(store)
    submit_write(store, "job-1", "req-1")

    result = handoff.record("job-1", "req-2", delivery("req-2", payload={}), source="webhook", now=NOW)

    assert result.outcome is HandoffOutcome.FOREIGN_REQUEST
    assert result.outcome.recorded
    assert queue.messages == []
    job = store.get("job-1")
    assert job is not None
    assert job.state is JobState.SUBMITTED
    assert job.request_id == "req-1"
    assert job.completion_key is None
    assert [t.action for t in job.trail] == ["ignored_foreign_request"]
    assert "req-2" in job.trail[0].reason
    assert any("req-2" in key for key in inbox.objects)  # kept for operators


def test_unknown_job_writes_nothing(parts) -> None:
    store, inbox, queue, handoff = parts
    result = handoff.record("nope", "req-1", delivery("req-1"), source="webhook", now=NOW)
    assert result.outcome is HandoffOutcome.UNKNOWN_JOB
    assert not result.outcome.recorded
    assert (inbox.objects, queue.messages, store.get("nope")) == ({}, [], None)


def test_a_lost_hand_off_is_recovered_by_a_later_duplicate_but_not_during_the_grace(parts) -> None:
    store, _, _, _ = parts
    crashing_queue = MemoryOutputsQueue(fail_sends=1)
    handoff = CompletionHandoff(store, MemoryInbox(), crashing_queue, handoff_grace=GRACE)
    accepted(store)
    submit_write(store, "job-1", "req-1")
    body = delivery("req-1", payload={})

    with pytest.raises(ConnectionError):  # the writer dies between its write and the send
        handoff.record("job-1", "req-1", body, source="webhook", now=NOW)
    job = store.get("job-1")
    assert job is not None
    assert job.state is JobState.STORING
    assert job.completion_enqueued_at is None

    soon = handoff.record("job-1", "req-1", body, source="webhook", now=NOW + GRACE / 2)
    later = handoff.record("job-1", "req-1", body, source="webhook", now=NOW + GRACE * 2)
    latest = handoff.record("job-1", "req-1", body, source="webhook", now=NOW + GRACE * 3)

    assert soon.outcome is HandoffOutcome.DUPLICATE  # the first writer might still be sending
    assert later.outcome is HandoffOutcome.HANDED_OVER_AGAIN
    assert latest.outcome is HandoffOutcome.DUPLICATE
    assert len(crashing_queue.messages) == 1


def test_a_completion_after_the_job_ended_changes_nothing(parts) -> None:
    store, _, queue, handoff = parts
    accepted(store)
    submit_write(store, "job-1", "req-1")
    store.fail("job-1", JobError(type="gave_up", message="given up"), now=NOW)

    result = handoff.record("job-1", "req-1", delivery("req-1", payload={}), source="webhook", now=NOW)

    assert result.outcome is HandoffOutcome.AFTER_FINAL
    job = store.get("job-1")
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.completion_key is None
    assert queue.messages == []
    assert [t.action for t in job.trail] == ["completion_after_final"]


@settings(max_examples=60, deadline=None)
@given(
    copies=st.integers(min_value=1, max_value=4),
    submit_at=st.integers(min_value=0, max_value=12),
    seed=st.integers(min_value=0, max_value=10_000),
    reconciler=st.booleans(),
)
def test_any_interleaving_records_one_completion(
    copies: int, submit_at: int, seed: int, reconciler: bool
) -> None:
    """Webhook copies and a reconciler's completion in any order, the submit's write anywhere
    between them: one recorded completion, one hand-off, the submit's request id bound."""
    store, inbox, queue = InMemoryJobStore(), MemoryInbox(), MemoryOutputsQueue()
    handoff = CompletionHandoff(store, inbox, queue, handoff_grace=GRACE)
    accepted(store)
    events: list[str] = ["webhook"] * copies + (["reconcile"] if reconciler else [])
    random.Random(seed).shuffle(events)
    events.insert(min(submit_at, len(events)), "submit")

    outcomes = []
    for event in events:
        if event == "submit":
            submit_write(store, "job-1", "req-1")
        else:
            source = "webhook" if event == "webhook" else "reconcile"
            outcomes.append(
                handoff.record(
                    "job-1", "req-1", delivery("req-1", payload={}), source=source, now=NOW
                ).outcome
            )

    assert outcomes.count(HandoffOutcome.RECORDED) == 1
    assert set(outcomes) <= {HandoffOutcome.RECORDED, HandoffOutcome.DUPLICATE}
    assert len(queue.messages) == 1
    job = store.get("job-1")
    assert job is not None
    assert job.state is JobState.STORING
    assert job.request_id == "req-1"
