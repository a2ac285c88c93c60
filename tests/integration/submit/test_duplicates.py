"""At-least-once delivery, exactly one fal submission per job: the same S3 event twice, the same
message three times, two batches (two execution environments) racing on the same jobs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bench.services import slow_fal
from falflow.jobs import JobState
from falflow_tools.emulator import RunningEmulator
from tests.integration.submit.conftest import Delivery, SubmitHarness

FAL_LATENCY_S = 0.3  # long enough for racing deliveries to overlap while a submit is in flight


@pytest.fixture
def submit_fal() -> Iterator[RunningEmulator]:
    with slow_fal(FAL_LATENCY_S) as fal:
        yield fal


def _one_submission_each(submit: SubmitHarness) -> None:
    jobs = submit.jobs()
    assert jobs
    for job in jobs:
        assert job.state is JobState.SUBMITTED, job
        (fal_job,) = submit.fal_jobs_for(job.job_id)
        assert fal_job.request_id == job.request_id
    assert len(submit.fal.control.jobs()) == len(jobs)


def test_the_same_s3_event_twice_submits_once(submit: SubmitHarness) -> None:
    event = submit.put("upscale/twice.png", b"\x89PNG", "image/png")
    again = submit.record(event["body"])  # S3 sent it again: a new message, the same notification

    first = submit.deliver([event])
    second = submit.deliver([again])

    assert first.responses == second.responses == [{"batchItemFailures": []}]
    _one_submission_each(submit)


def test_the_same_s3_event_twice_in_one_batch_submits_once(submit: SubmitHarness) -> None:
    event = submit.put("upscale/twice.png", b"\x89PNG", "image/png")
    again = submit.record(event["body"])

    delivery = submit.deliver([event, again])

    assert delivery.left == []
    _one_submission_each(submit)


def test_the_same_message_three_times_submits_once(submit: SubmitHarness) -> None:
    body = {"model": "fal-ai/flux/dev", "input": {"prompt": "thrice"}}
    deliveries = [submit.record(body) for _ in range(3)]

    together = submit.deliver(deliveries[:2])  # two in one batch: they race inside it
    later = submit.deliver(deliveries[2:])

    assert together.left == later.left == []
    _one_submission_each(submit)


def test_two_batches_racing_on_the_same_jobs_submit_each_once(submit: SubmitHarness) -> None:
    bodies = [
        {"model": "fal-ai/flux/dev", "input": {"prompt": f"race {n}"}, "job_id": f"race-{n}"}
        for n in range(5)
    ]
    containers = [submit.handler, submit.another_container()]
    batches = [[submit.record(body) for body in bodies] for _ in containers]
    start = threading.Barrier(len(containers))
    deliveries: list[Delivery] = []
    errors: list[BaseException] = []

    def run(handler: Any, records: list[dict[str, Any]]) -> None:
        try:
            start.wait(timeout=10)
            deliveries.append(submit.deliver(records, handler=handler))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(containers, batches, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert [delivery.left for delivery in deliveries] == [[], []]
    _one_submission_each(submit)
    assert {job.job_id for job in submit.jobs()} == {body["job_id"] for body in bodies}
    # The race happened: the losers found the job leased and came back later as duplicates.
    first_round_failures = sum(len(d.responses[0]["batchItemFailures"]) for d in deliveries)
    assert first_round_failures >= 1
