"""The reconcile function (real handler, moto's server, fal emulator): lost webhooks are covered,
results fal no longer holds end FAILED, and two runs racing each other and the webhooks store
every output once."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from falflow.aws.clients import aws_client
from falflow.jobs import Job, JobState, isoformat, utcnow
from falflow_tools.emulator import RunningEmulator
from tests.fixtures.completion import CompletionStack, CompletionStackFactory
from tests.fixtures.fal_emulator import EmulatorFactory, WebhookSink
from tests.integration.completion.helpers import (
    EXPECTED_OUTPUTS,
    MODELS,
    SentJob,
    cdn_downloads,
    send,
    submit_write,
)


def replay_all(stack: CompletionStack, sink: WebhookSink) -> list[int]:
    return [
        stack.deliver(d.body, d.headers, d.path.split("job_id=", 1)[1], base64_body=True)
        for d in sink.received
    ]


def test_webhooks_dropped_for_30_percent_of_jobs_the_reconciler_completes_every_one_once(
    completion_stack: CompletionStackFactory, fal_emulator: RunningEmulator, webhook_sink: WebhookSink
) -> None:
    fal_emulator.control.set_faults(seed=11, webhook={"drop_rate": 0.3})
    stack = completion_stack(fal=fal_emulator)
    sent = []
    for i in range(12):
        model = list(MODELS)[i % 3]
        job = send(stack, fal_emulator, f"job-{i}", model, MODELS[model], webhook_base=webhook_sink.url)
        submit_write(stack, job)
        sent.append(job)
    fal_emulator.control.wait_idle()
    delivered = {d.headers["x-fal-webhook-request-id"] for d in webhook_sink.received}
    dropped = {job.job_id for job in sent if job.submission.request_id not in delivered}
    assert 2 <= len(dropped) <= 6  # about 30% of 12, fixed by the seed

    # The webhooks that did arrive, and two reconcilers at once, all racing.
    with ThreadPoolExecutor(3) as pool:
        webhooks = pool.submit(replay_all, stack, webhook_sink)
        runs = [pool.submit(stack.reconcile) for _ in range(2)]
        assert set(webhooks.result()) == {200}
        reports = [run.result() for run in runs]
    assert sum(r.get("completed", 0) for r in reports) >= len(dropped)
    handled = stack.drain_outputs()

    assert handled == len(sent)  # one hand-off per job, whoever recorded it
    _assert_every_job_completed_and_stored_once(stack, fal_emulator, sent, dropped)

    # A later run finds nothing left to do.
    assert stack.reconcile()["examined"] == 0


def _assert_every_job_completed_and_stored_once(
    stack: CompletionStack, fal_emulator: RunningEmulator, sent: list[SentJob], dropped: set[str]
) -> None:
    """Every output downloaded once, one event per job, and the dropped ones completed by reconcile."""
    downloads = cdn_downloads(fal_emulator)
    assert set(downloads.values()) == {1}  # every output stored once
    assert sum(downloads.values()) == sum(EXPECTED_OUTPUTS[job.model] for job in sent)
    events = Counter(e["detail"]["job_id"] for e in stack.completion_events())
    assert events == {job.job_id: 1 for job in sent}
    for job in sent:
        record = stack.job(job.job_id)
        assert record.state is JobState.COMPLETED, job.job_id
        assert len(record.outputs) == EXPECTED_OUTPUTS[job.model]
        if job.job_id in dropped:
            assert record.completion_source == "reconcile"
            assert any(t.actor == "reconcile" and t.action == "completion_recorded" for t in record.trail)


def test_a_job_whose_result_fal_no_longer_holds_ends_failed_with_that_reason(
    completion_stack: CompletionStackFactory, fal_emulator_factory: EmulatorFactory
) -> None:
    fal = fal_emulator_factory(result_retention_s=0.0)
    stack = completion_stack(fal=fal)
    gone = send(stack, fal, "gone", "fal-ai/flux/dev", {"prompt": "x"}, webhook_base=None, store_io=False)
    submit_write(stack, gone)
    fal.control.wait_idle()

    report = stack.reconcile()

    assert report["failed"] == 1
    job = stack.job("gone")
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.type == "result_unavailable"
    assert "no longer holds its result" in job.error.message
    assert [e["detail-type"] for e in stack.completion_events()] == ["Job Failed"]
    assert stack.queue_depth("OutputsQueue") == 0
    assert stack.reconcile()["examined"] == 0  # not stuck: nothing left waiting


def test_a_job_left_accepted_by_a_crashed_submit_goes_back_to_the_intake_queue(
    completion_stack: CompletionStackFactory, fal_emulator: RunningEmulator
) -> None:
    stack = completion_stack(fal=fal_emulator)
    past = utcnow() - timedelta(minutes=30)
    stack.jobs.create(
        Job.new(
            "orphan",
            source="sqs:m",
            source_kind="sqs",
            now=past,
            model="fal-ai/flux/dev",
            input={"prompt": "x"},
            submit_lease_until=isoformat(past + timedelta(minutes=5)),
            attempts=1,
        )
    )

    assert stack.reconcile()["redriven"] == 1

    received = aws_client("sqs").receive_message(
        QueueUrl=stack.stack.queue("IntakeQueue").url, MaxNumberOfMessages=10
    )["Messages"]
    bodies = [json.loads(m["Body"]) for m in received]
    jobs = [b for b in bodies if b.get("Event") != "s3:TestEvent"]  # S3's notification self-test
    assert [b["job_id"] for b in jobs] == ["orphan"]
    assert fal_emulator.control.jobs() == []  # nothing was sent to fal from here
    assert stack.job("orphan").state is JobState.ACCEPTED
