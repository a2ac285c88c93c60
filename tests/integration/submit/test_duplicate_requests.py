"""A duplicate that happens anyway: fal's queue is long, so the first request is not in the request
history yet when the submit path looks, and the job is sent again. The duplicate is found later, by
the reconciler, and cancelled at fal through its cancel URL and recorded on the job."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from falflow.completion.finalise import Finaliser
from falflow.completion.handoff import CompletionHandoff
from falflow.fal import FalPlatformClient, FalQueueClient
from falflow.jobs import JobState, utcnow
from falflow.jobs.requests import CANCELLED_ACTION, JobRequests
from falflow.reconcile.reconciler import ACTOR, ReconcilePolicy, Reconciler
from falflow.settings import FalSettings
from falflow_tools.emulator import RunningEmulator
from tests.fakes.completion import MemoryInbox, MemoryOutputsQueue, RecordingPublisher
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.submit.conftest import GRACE_S, SubmitHarness

# Much longer than the grace plus a redelivery: the second delivery's lookup cannot see the first
# request, and the second request starts well after the first (the third delivery sees only that).
QUEUE_WAIT_S = 3.0
RUN_TIME_S = 3.0  # the duplicate is still running when it is cancelled
MESSAGE = {"job_id": "twice", "model": "fal-ai/flux/dev", "input": {"prompt": "sent twice"}}


@pytest.fixture
def submit_fal(fal_emulator_factory: EmulatorFactory) -> RunningEmulator:
    return fal_emulator_factory(queue_wait_s=QUEUE_WAIT_S, run_time_s=RUN_TIME_S)


class IntakeQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, body: str) -> None:
        self.sent.append(body)


def _reconciler(submit: SubmitHarness) -> Reconciler:
    settings = FalSettings()  # from the environment the submit function was given
    fal = FalQueueClient(settings, lambda: submit.fal.api_key)
    history = FalPlatformClient(settings, lambda: submit.fal.api_key)
    store = submit.store
    return Reconciler(
        store,
        fal=fal,
        handoff=CompletionHandoff(store, MemoryInbox(), MemoryOutputsQueue()),
        finaliser=Finaliser(store, RecordingPublisher(), "outputs"),
        intake_queue=IntakeQueue(),
        policy=ReconcilePolicy(reconcile_after=timedelta(0)),
        requests=JobRequests(store, fal, history, actor=ACTOR),
    )


def _wait_started(submit: SubmitHarness, request_id: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while submit.fal.control.job(request_id).started_at is None:
        assert time.monotonic() < deadline, f"{request_id} never started"
        time.sleep(0.05)


def test_a_duplicate_found_later_is_cancelled_at_fal_and_recorded_on_the_job(submit: SubmitHarness) -> None:
    submit.fal.control.set_faults(
        submit={"rate_reset_after": 1.0, "max_faults": 2}, webhook={"drop_rate": 1.0}
    )

    record = submit.record(MESSAGE)
    assert submit.invoke([record])["batchItemFailures"]  # reply lost: held for the grace
    time.sleep(GRACE_S + 0.2)
    assert submit.invoke([record])["batchItemFailures"]  # not in the history yet: sent again, lost again
    first, second = sorted(submit.fal_jobs_for("twice"), key=lambda fal_job: fal_job.submitted_at)
    _wait_started(submit, first.request_id)
    assert submit.invoke([record])["batchItemFailures"] == []

    job = submit.job("twice")
    assert job.request_id == first.request_id  # found in the history by the third delivery
    # The second reset repeats the first's note, which the trail keeps once.
    assert [entry.action for entry in job.trail] == [
        "submit_ambiguous",
        "resubmit",
        "found_in_request_history",
    ]
    assert job.duplicate_requests == []  # the second had not started yet: not listed either
    _wait_started(submit, second.request_id)

    _reconciler(submit).run(utcnow())

    job = submit.job("twice")
    assert job.duplicate_requests == [second.request_id]
    assert submit.fal.control.job(second.request_id).cancel_requested  # cancelled at fal
    assert not submit.fal.control.job(first.request_id).cancel_requested
    (cancelled,) = [entry for entry in job.trail if entry.action == CANCELLED_ACTION]
    assert cancelled.actor == ACTOR
    assert f"the job is bound to {first.request_id}" in cancelled.reason
    assert job.state in (JobState.SUBMITTED, JobState.IN_PROGRESS, JobState.STORING)
    # A second run finds it noted: fal is not asked to cancel again.
    _reconciler(submit).run(utcnow())
    cancels = [r for r in submit.fal.control.requests() if r.group == "cancel"]
    assert len(cancels) == 1
