"""The dead-letter sweep against fakes: a message whose jobs all completed (or were cancelled) is
removed with a note on each job; every other message is released for operators."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from falflow.aws.dead_letter import DeadLetterMessage
from falflow.jobs import Job, JobState, TrailEntry, utcnow
from falflow.reconcile.dead_letters import REMOVED_ACTION, DeadLetterSweep
from tests.fakes.job_store import InMemoryJobStore

NOW = utcnow()


@dataclass
class FakeDeadLetterQueue:
    """Receives each message once per sweep; what is neither deleted nor released stays hidden."""

    name: str
    messages: list[DeadLetterMessage] = field(default_factory=list)
    fail_receive: bool = False
    fail_delete: set[str] = field(default_factory=set)
    received: list[int] = field(default_factory=list)  # the limit of each receive
    released: list[str] = field(default_factory=list)

    def receive(self, limit: int) -> list[DeadLetterMessage]:
        self.received.append(limit)
        if self.fail_receive:
            raise RuntimeError("sqs is down")
        return self.messages[:limit]

    def delete(self, message: DeadLetterMessage) -> None:
        if message.message_id in self.fail_delete:
            raise RuntimeError("delete failed")
        self.messages.remove(message)

    def release(self, messages: Sequence[DeadLetterMessage]) -> None:
        self.released.extend(m.message_id for m in messages)

    def ids(self) -> list[str]:
        return [m.message_id for m in self.messages]


def letter(message_id: str, *job_ids: str) -> DeadLetterMessage:
    return DeadLetterMessage(message_id, f"receipt-{message_id}", tuple(job_ids))


@pytest.fixture
def jobs() -> InMemoryJobStore:
    store = InMemoryJobStore()
    for job_id, state in {
        "done": JobState.COMPLETED,
        "done-2": JobState.COMPLETED,
        "cancelled": JobState.CANCELLED,
        "failed": JobState.FAILED,
        "rejected": JobState.REJECTED,
        "storing": JobState.STORING,
        "accepted": JobState.ACCEPTED,
    }.items():
        store.create(Job.new(job_id, source="sqs:m", source_kind="sqs", now=NOW, state=state))
    return store


def sweep(jobs: InMemoryJobStore, *queues: FakeDeadLetterQueue, limit: int = 100) -> DeadLetterSweep:
    return DeadLetterSweep(jobs, queues, limit=limit, actor="reconcile")


def mixed_queues() -> tuple[FakeDeadLetterQueue, FakeDeadLetterQueue]:
    outputs = FakeDeadLetterQueue(
        "outputs", [letter("m-done", "done"), letter("m-storing", "storing"), letter("m-failed", "failed")]
    )
    intake = FakeDeadLetterQueue(
        "intake",
        [
            letter("m-cancelled", "cancelled"),
            letter("m-both", "done", "done-2"),
            letter("m-half", "done", "accepted"),  # one job of it still needs it
            letter("m-rejected", "rejected"),
            letter("m-unknown", "no-such-job"),
            letter("m-nobody"),  # names no job (a reused job id; a body that says none)
        ],
    )
    return intake, outputs


def test_messages_whose_jobs_all_completed_or_were_cancelled_are_removed_the_rest_released(
    jobs: InMemoryJobStore,
) -> None:
    intake, outputs = mixed_queues()

    report = sweep(jobs, intake, outputs).sweep(NOW)

    assert outputs.ids() == ["m-storing", "m-failed"]
    assert intake.ids() == ["m-half", "m-rejected", "m-unknown", "m-nobody"]
    # what stays is visible again at once, for operators
    assert outputs.released == ["m-storing", "m-failed"]
    assert intake.released == ["m-half", "m-rejected", "m-unknown", "m-nobody"]
    assert report.as_dict() == {
        "dead_letters_removed": {"intake": 2, "outputs": 1},
        "dead_letters_kept": {"intake": 4, "outputs": 2},
    }


def test_each_removal_is_noted_on_every_job_of_the_message(jobs: InMemoryJobStore) -> None:
    sweep(jobs, *mixed_queues()).sweep(NOW)

    notes = [t for t in trail(jobs, "done") if t.action == REMOVED_ACTION]
    assert [n.actor for n in notes] == ["reconcile", "reconcile"]  # m-done and m-both
    assert {n.reason.split(";")[0] for n in notes} == {"dead letter removed: job completed"}
    assert {"m-done" in n.reason and "outputs DLQ" in n.reason for n in notes} == {True, False}
    (cancelled,) = trail(jobs, "cancelled")
    assert cancelled.reason.startswith("dead letter removed: job cancelled; message m-cancelled")
    assert {job_id: trail(jobs, job_id) for job_id in ("storing", "failed", "accepted", "rejected")} == {
        "storing": [],
        "failed": [],
        "accepted": [],
        "rejected": [],
    }


def trail(jobs: InMemoryJobStore, job_id: str) -> list[TrailEntry]:
    job = jobs.get(job_id)
    assert job is not None
    return job.trail


def test_each_run_reads_a_bounded_number_of_messages_per_queue(jobs: InMemoryJobStore) -> None:
    outputs = FakeDeadLetterQueue("outputs", [letter(f"m-{i}", "done") for i in range(5)])

    assert sweep(jobs, outputs, limit=2).sweep(NOW).removed == {"outputs": 2}
    assert outputs.received == [2]
    assert len(outputs.messages) == 3  # the next run reads on
    sweep(jobs, outputs, limit=2).sweep(NOW)
    assert len(outputs.messages) == 1


def test_one_queues_or_one_messages_trouble_leaves_the_rest_swept(jobs: InMemoryJobStore) -> None:
    intake = FakeDeadLetterQueue("intake", [letter("m-1", "done")], fail_receive=True)
    outputs = FakeDeadLetterQueue(
        "outputs", [letter("m-stuck", "done"), letter("m-2", "done-2")], fail_delete={"m-stuck"}
    )

    report = sweep(jobs, intake, outputs).sweep(NOW)

    assert intake.ids() == ["m-1"]  # the next run tries again
    assert outputs.ids() == ["m-stuck"]
    assert outputs.released == ["m-stuck"]
    assert report.removed == {"outputs": 1}
    assert trail(jobs, "done") == []  # not removed: nothing said


def test_a_message_sqs_moved_unstarted_is_handed_back_by_its_queues_hand_back_and_then_deleted(
    jobs: InMemoryJobStore,
) -> None:
    """Only in a queue that hands back, only what SQS moved itself (no falflow reason), only a
    message of one job, and deleted only when its job was handed on."""
    moved = DeadLetterMessage("m-moved", "rh-moved", ("storing",), moved_by_sqs=True, body="b-moved")
    outputs = FakeDeadLetterQueue(
        "outputs",
        [
            moved,
            letter("m-reasoned", "storing"),  # the store dead-lettered it with its reason
            DeadLetterMessage("m-two", "rh-two", ("storing", "accepted"), moved_by_sqs=True),
            DeadLetterMessage("m-refused", "rh-refused", ("accepted",), moved_by_sqs=True, body="b-refused"),
        ],
    )
    intake = FakeDeadLetterQueue(
        "intake", [DeadLetterMessage("m-intake", "rh-intake", ("storing",), moved_by_sqs=True)]
    )
    asked: list[tuple[str, str, datetime]] = []

    def hand_back(job: Job, body: str, now: datetime) -> bool:
        asked.append((job.job_id, body, now))
        return job.job_id == "storing"

    report = DeadLetterSweep(
        jobs, [intake, outputs], limit=100, actor="reconcile", unstarted={"outputs": hand_back}
    ).sweep(NOW)

    assert asked == [("storing", "b-moved", NOW), ("accepted", "b-refused", NOW)]
    assert outputs.ids() == ["m-reasoned", "m-two", "m-refused"]
    assert outputs.released == ["m-reasoned", "m-two", "m-refused"]
    assert intake.ids() == ["m-intake"]
    assert report.removed == {"outputs": 1, "intake": 0}
