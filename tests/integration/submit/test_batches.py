"""Batches through the real submit handler on moto and the fal emulator: a manifest notified twice
fans out into one job per good line, chunk by chunk through continuation messages; bad lines are
recorded with their reasons; each line's final state is tallied once; the reconcile side answers
the batch with results.jsonl, errors.jsonl and manifest.json."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from falflow.aws.clients import aws_client
from falflow.aws.intake import SqsIntakeQueue
from falflow.batches.model import CONTINUE_KEY, Batch, BatchState
from falflow.batches.objects import S3Manifests, S3ResultObjects
from falflow.batches.results import COMPLETED_EVENT, BatchResults
from falflow.batches.resume import StalledFanOuts
from falflow.batches.store import DynamoBatchStore
from falflow.jobs import JobError, JobState, utcnow
from falflow.jobs.batch import batch_job_id
from tests.integration.submit.conftest import SubmitHarness

MODELS = ("fal-ai/flux/dev", "fal-ai/fast-sdxl")


@pytest.fixture
def submit_env() -> dict[str, str]:
    return {"BATCH_CHUNK_LINES": "4"}  # 17 lines: five steps, four continuations


def manifest(lines: int, *, bad: dict[int, str]) -> bytes:
    rows: list[str] = [json.dumps({"defaults": {"priority": "low", "metadata": {"team": "art"}}})]
    for number in range(lines):
        if number in bad:
            rows.append(bad[number])
            continue
        rows.append(
            json.dumps(
                {
                    "custom_id": f"line-{number}",
                    "model": MODELS[number % 2],
                    "input": {"prompt": f"cat {number}"},
                }
            )
        )
    return ("\n".join(rows) + "\n").encode()


def drain(submit: SubmitHarness, first: list[dict[str, Any]]) -> int:
    """Deliver `first`, then whatever the intake queue holds, until it is empty; how many rounds."""
    pending, rounds = first, 0
    while pending:
        delivery = submit.deliver(pending)
        assert not delivery.left
        rounds += 1
        pending = submit.notifications()
    return rounds


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        self.events.append((detail_type, detail))


@dataclass
class FannedOut:
    submit: SubmitHarness
    batches: DynamoBatchStore
    batch: Batch
    good: list[int]
    job_ids: list[str]
    notification: dict[str, Any]


BAD = {
    3: "{not json",
    7: json.dumps({"model": MODELS[0], "input": {}}),  # no custom_id
    11: json.dumps({"custom_id": "line-2", "model": MODELS[0], "input": {"prompt": "again"}}),
}


@pytest.fixture
def fanned_out(submit: SubmitHarness) -> FannedOut:
    """A 17-line manifest (3 bad) dropped, its notification delivered twice, the queue drained."""
    notification = submit.put("batches/cats.jsonl", manifest(17, bad=BAD))
    submit.notifications()  # the bucket's own notification: the test delivers its copy twice
    drain(submit, [notification, submit.record(notification["body"])])
    batches = DynamoBatchStore(aws_client("dynamodb"), submit.stack.tables["BatchTable"])
    [batch] = list(batches.list_batches())
    good = [n for n in range(17) if n not in BAD]
    job_ids = [batch_job_id(batch.name, f"line-{n}") for n in good]
    return FannedOut(submit, batches, batch, good, job_ids, notification)


def test_a_manifest_notified_twice_fans_out_one_job_per_good_line(fanned_out: FannedOut) -> None:
    batch, submit = fanned_out.batch, fanned_out.submit
    assert batch.state is BatchState.RUNNING
    assert (batch.lines, batch.bad, batch.sent) == (17, 3, 14)
    assert sorted(batch.bad_lines) == [5, 9, 13]  # physical lines (the defaults line is line 1)
    assert {row["type"] for row in batch.invalid} == {
        "malformed_json",
        "invalid_custom_id",
        "duplicate_custom_id",
    }
    jobs = submit.store.get_many(fanned_out.job_ids)
    assert len(jobs) == 14
    assert {job.state for job in jobs.values()} == {JobState.SUBMITTED}
    assert {(job.priority, json.dumps(job.metadata)) for job in jobs.values()} == {("low", '{"team": "art"}')}
    assert [len(submit.fal_jobs_for(job_id)) for job_id in fanned_out.job_ids] == [1] * 14  # once each


def test_each_line_is_tallied_once_and_the_batch_is_answered_when_all_are_final(
    fanned_out: FannedOut,
) -> None:
    submit, batches, name = fanned_out.submit, fanned_out.batches, fanned_out.batch.name
    now = utcnow()
    for job_id in fanned_out.job_ids[:4]:
        assert submit.store.fail(job_id, JobError(type="boom", message="fal failed it"), now=now)
        assert submit.store.fail(job_id, JobError(type="boom", message="again"), now=now) is None
    recorder = Recorder()
    s3 = aws_client("s3")
    out = submit.stack.buckets["OutputBucket"]
    results = BatchResults(
        batches, submit.store, S3Manifests(s3), S3ResultObjects(s3, out), events=recorder, output_bucket=out
    )
    assert results.finish_ready() == {}  # ten lines still run
    running = batches.get(name)
    assert running is not None
    assert Counter(row["state"] for row in results.rows(running)) == {
        "SUBMITTED": 10,
        "FAILED": 4,
        "INVALID": 3,
    }

    for job_id in fanned_out.job_ids[4:]:
        assert submit.store.cancel(job_id, now=now + timedelta(seconds=1))
    done = batches.get(name)
    assert done is not None
    assert (done.finished, done.tally) == (14, {"FAILED": 4, "CANCELLED": 10})

    assert results.finish_ready() == {"batches_finished": 1, "batches_announced": 1}
    assert results.finish_ready() == {}  # answered and announced once
    finished = batches.get(name)
    assert finished is not None
    assert finished.state is BatchState.COMPLETED
    assert [event for event, _ in recorder.events] == [COMPLETED_EVENT]
    assert_answer(s3, out, finished, fanned_out)


def assert_answer(s3: Any, bucket: str, finished: Batch, fanned_out: FannedOut) -> None:
    body = s3.get_object(Bucket=bucket, Key=finished.outputs["results"])["Body"]
    rows = [json.loads(line) for line in body.iter_lines()]
    assert len(rows) == 17
    assert [row["custom_id"] for row in rows if row["state"] != "INVALID"] == [
        f"line-{n}" for n in fanned_out.good
    ]
    errors = s3.get_object(Bucket=bucket, Key=finished.outputs["errors"])["Body"].read().decode().splitlines()
    assert len(errors) == 17  # nothing completed here
    summary = json.loads(s3.get_object(Bucket=bucket, Key=finished.outputs["manifest"])["Body"].read())
    assert summary["counts"] == {"CANCELLED": 10, "FAILED": 4, "INVALID": 3}
    assert summary["lines"] == 17
    assert summary["input"]["version_id"] == notification_version(fanned_out.notification)


def notification_version(record: dict[str, Any]) -> str:
    version: str = json.loads(record["body"])["Records"][0]["s3"]["object"]["versionId"]
    return version


def test_a_batch_budget_holds_the_lines_that_do_not_fit_and_sends_the_rest(submit: SubmitHarness) -> None:
    rows = [
        json.dumps({"custom_id": f"p-{n}", "model": MODELS[0], "input": {"prompt": f"dog {n}"}})
        for n in range(4)
    ]
    put = submit.s3.put_object(
        Bucket=submit.bucket, Key="manifests/dogs.jsonl", Body="\n".join(rows).encode()
    )
    uri = f"s3://{submit.bucket}/manifests/dogs.jsonl?versionId={put['VersionId']}"
    submit.notifications()  # not under the batches prefix: an ignored object (no route)
    drain(submit, [submit.record({"batch": uri, "name": "dogs", "budget_usd": 0.06})])

    batch = DynamoBatchStore(aws_client("dynamodb"), submit.stack.tables["BatchTable"]).get("dogs")
    assert batch is not None
    assert batch.estimate_usd == pytest.approx(0.1)  # fal-ai/flux/dev: $0.025 an image in the emulator
    assert batch.over_budget
    jobs = submit.store.get_many([batch_job_id("dogs", f"p-{n}") for n in range(4)])
    states = Counter(job.state for job in jobs.values())
    assert states == {JobState.SUBMITTED: 2, JobState.HELD: 2}
    held = [job for job in jobs.values() if job.state is JobState.HELD]
    assert {job.hold.cap for job in held if job.hold} == {"batch#batch:dogs"}
    assert sum(len(submit.fal_jobs_for(job.job_id)) for job in held) == 0


def test_a_cancelled_batch_sends_no_more_lines_and_cancels_those_not_yet_sent_to_fal(
    submit: SubmitHarness,
) -> None:
    notification = submit.put("batches/cats.jsonl", manifest(17, bad=BAD))
    submit.notifications()
    assert not submit.deliver([notification]).left  # validated; its first chunk: 4 lines, 1 bad
    batches = DynamoBatchStore(aws_client("dynamodb"), submit.stack.tables["BatchTable"])
    [batch] = list(batches.list_batches())
    assert (batch.state, batch.sent) == (BatchState.FANNING_OUT, 3)

    assert batches.request_cancel(batch.name, now=utcnow()) is not None
    drain(submit, submit.notifications())  # the chunk's 3 job messages and its continuation

    stopped = batches.get(batch.name)
    assert stopped is not None
    assert (stopped.state, stopped.sent, stopped.unsent, stopped.finished) == (
        BatchState.CANCELLING,
        3,
        11,
        3,
    )
    assert stopped.tally == {"CANCELLED": 3}
    assert submit.fal.control.jobs() == []  # nothing of it reached fal

    s3 = aws_client("s3")
    out = submit.stack.buckets["OutputBucket"]
    recorder = Recorder()
    results = BatchResults(
        batches, submit.store, S3Manifests(s3), S3ResultObjects(s3, out), events=recorder, output_bucket=out
    )
    assert results.finish_ready() == {"batches_finished": 1, "batches_announced": 1}
    assert [(event, detail["state"]) for event, detail in recorder.events] == [(COMPLETED_EVENT, "CANCELLED")]
    answered = batches.get(batch.name)
    assert answered is not None
    assert answered.state is BatchState.CANCELLED
    summary = json.loads(s3.get_object(Bucket=out, Key=answered.outputs["manifest"])["Body"].read())
    assert summary["counts"] == {"CANCELLED": 3, "INVALID": 3, "NOT_SENT": 11}


@pytest.mark.parametrize("submit_env", [{"BATCH_CHUNK_LINES": "4", "SUBMIT_LEASE_SECONDS": "1"}])
def test_a_fan_out_whose_continuation_is_lost_is_carried_on_by_the_reconciler_and_a_new_notification(
    submit: SubmitHarness,
) -> None:
    """A continuation lost (dead-lettered, or never sent by a step killed before it) leaves the
    batch FANNING_OUT with nothing queued to move it: once it has not moved for the stall time, the
    reconciler sends the continuation at its cursor again; a notification of the file delivered
    again mid-fan-out also goes on from the cursor. Nothing is sent twice either way."""
    notification = submit.put("batches/cats.jsonl", manifest(17, bad=BAD))
    submit.notifications()
    assert not submit.deliver([notification]).left  # validated and its first chunk sent
    batches = DynamoBatchStore(aws_client("dynamodb"), submit.stack.tables["BatchTable"])
    [batch] = list(batches.list_batches())
    jobs, continuation = split_continuation(submit.notifications())
    assert not submit.deliver(jobs).left  # the continuation is lost: it stays in flight, unseen
    time.sleep(1.0)  # the step's lease (3/4 of the submit's 1 s) has ended

    assert not submit.deliver([submit.record(notification["body"])]).left  # S3 again: on it goes
    moved = batches.get(batch.name)
    assert moved is not None
    assert (moved.state, moved.cursor_line, moved.sent) == (BatchState.FANNING_OUT, 9, 6)
    jobs, _ = split_continuation(submit.notifications())
    assert not submit.deliver(jobs).left  # and its continuation is lost too
    assert not submit.deliver(continuation).left  # the first one, come back late: stale
    time.sleep(1.0)

    intake = SqsIntakeQueue(submit.stack.queue("IntakeQueue").url)
    later = utcnow() + timedelta(minutes=16)
    stalls = StalledFanOuts(batches, intake, stall_after=timedelta(minutes=15), clock=lambda: later)
    assert StalledFanOuts(batches, intake, stall_after=timedelta(minutes=15)).resume() == {}  # not yet
    assert stalls.resume() == {"batches_resumed": 1}
    assert stalls.resume() == {}  # sent: the stall clock starts again
    drain(submit, submit.notifications())

    done = batches.get(batch.name)
    assert done is not None
    assert (done.state, done.sent, done.resumes) == (BatchState.RUNNING, 14, 1)
    good = [n for n in range(17) if n not in BAD]
    assert [len(submit.fal_jobs_for(batch_job_id(batch.name, f"line-{n}"))) for n in good] == [1] * 14


def split_continuation(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A chunk's job messages, and its continuation."""
    continuations = [r for r in records if CONTINUE_KEY in r["body"]]
    assert len(continuations) == 1
    return [r for r in records if CONTINUE_KEY not in r["body"]], continuations
