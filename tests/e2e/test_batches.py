"""Batches on the local stack: a manifest dropped under the batches prefix fans out, 20 lines a step
(the package's BATCH_CHUNK_LINES), into one job per good line, each sent to fal once, and is answered
by a reconcile run with results.jsonl, errors.jsonl and manifest.json and one Batch Completed event
(docs/adr/0031-a-batch-is-a-manifest-fanned-out-into-jobs.md), also when the submit worker is
killed in the middle of a fan-out step.

The manifests are sized for CI; FALFLOW_E2E_BATCH_LINES=1000 runs the first test at the size of a
real batch (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from falflow.batches.lines import batch_name
from falflow.batches.model import Batch, BatchState
from falflow.batches.results import COMPLETED_EVENT
from falflow.batches.store import DynamoBatchStore
from falflow.jobs import JobState
from falflow.jobs.batch import batch_job_id
from falflow.webhook.token import JOB_ID_PARAMETER
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.target import Target

pytestmark = pytest.mark.e2e

# Both active in the emulator's catalogue (submit rejects a deprecated one once collect has run).
MODELS = ("fal-ai/flux/dev", "workflows/falflow/text-to-image")
# Lines of the first test's manifest (three of them bad); the second's has 100 good lines.
BATCH_LINES = int(os.environ.get("FALFLOW_E2E_BATCH_LINES", "60"))


@dataclass(frozen=True)
class Manifest:
    """A manifest's lines and what each should become: its custom_id (None: it has none) and
    whether it is a job."""

    lines: list[str]
    custom_ids: list[str | None]
    bad: dict[int, str]  # 1-based line number -> the reason results.jsonl gives

    @property
    def body(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()

    def good_ids(self) -> list[str]:
        return [c for n, c in enumerate(self.custom_ids, 1) if n not in self.bad and c is not None]


def build_manifest(tag: str, size: int, *, with_bad_lines: bool) -> Manifest:
    """`size` lines of mixed models; with bad lines at 3 places: not JSON, no custom_id, a custom_id
    repeated from line 3."""
    lines: list[str] = []
    custom_ids: list[str | None] = []
    for number in range(1, size + 1):
        custom_id = f"{tag}-{number:04d}"
        lines.append(
            json.dumps(
                {
                    "custom_id": custom_id,
                    "model": MODELS[number % len(MODELS)],
                    "input": {"prompt": f"{tag} picture {number}"},
                }
            )
        )
        custom_ids.append(custom_id)
    bad: dict[int, str] = {}
    if with_bad_lines:
        lines[size // 10 - 1], custom_ids[size // 10 - 1] = '{"custom_id": "broken", ', None
        lines[size // 2 - 1], custom_ids[size // 2 - 1] = json.dumps({"model": MODELS[0], "input": {}}), None
        repeat = f"{tag}-0003"
        lines[size - 7] = json.dumps({"custom_id": repeat, "model": MODELS[1], "input": {"prompt": "again"}})
        custom_ids[size - 7] = repeat
        bad = {size // 10: "malformed_json", size // 2: "invalid_custom_id", size - 6: "duplicate_custom_id"}
    return Manifest(lines, custom_ids, bad)


@dataclass(frozen=True)
class Dropped:
    name: str
    key: str
    version_id: str
    notification: dict[str, Any]


def drop_manifest(stack: LocalStack, key: str, body: bytes) -> Dropped:
    """Put the manifest in the input bucket (its notification goes to the intake queue); the
    notification as S3 sends it, to send again."""
    bucket = stack.outputs()["InputBucketName"]
    put = stack.s3().put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/jsonl")
    version = put["VersionId"]
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": stack.config.region,
        "eventName": "ObjectCreated:Put",
        "s3": {
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "size": len(body), "eTag": put["ETag"].strip('"'), "versionId": version},
        },
    }
    return Dropped(batch_name(bucket, key, version), key, version, {"Records": [record]})


def batch_store(target: Target) -> DynamoBatchStore:
    return DynamoBatchStore(target.dynamodb(), target.output("BatchTableName"))


def wait_for_batch(
    target: Target, name: str, done: Callable[[Batch], bool], *, timeout_s: float, what: str
) -> Batch:
    store = batch_store(target)
    deadline = time.monotonic() + timeout_s
    batch = None
    while time.monotonic() < deadline:
        batch = store.get(name)
        if batch is not None and done(batch):
            return batch
        time.sleep(0.25)
    seen = batch and (batch.state.value, batch.cursor_line, batch.sent, batch.finished, batch.jobs)
    raise AssertionError(
        f"batch {name} not {what} in {timeout_s} s; last (state, cursor, sent, final, jobs) {seen}"
    )


def answer(stack: LocalStack, target: Target, name: str, *, timeout_s: float) -> Batch:
    """Wait until every line is final, then run reconcile (the e2e stack runs it only when asked)
    until the batch is answered and announced. While waiting, reconcile runs every 30 s, as the
    deployed schedule would: at a thousand lines the completions come faster than the stack's one
    webhook worker answers, and the emulator's retries are seconds apart (fal's are spread over two
    hours), so some deliveries are lost for good and the reconciler is what recovers their jobs."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            wait_for_batch(target, name, lambda b: b.all_final, timeout_s=min(30.0, left), what="all final")
            break
        except AssertionError:
            if left <= 30.0:
                raise
            result = stack.run_schedule("ReconcileFunction")
            assert result.ok, result.error
    store = batch_store(target)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        result = stack.run_schedule("ReconcileFunction")
        assert result.ok, result.error
        batch = store.get(name)
        assert batch is not None
        if batch.state is BatchState.COMPLETED and batch.event_published_at is not None:
            return batch
    raise AssertionError(f"batch {name} was not answered by reconcile runs for 60 s")


def fal_requests(stack: LocalStack, job_ids: list[str]) -> Counter[str]:
    """How many requests the emulator took for each of `job_ids` (by the webhook URL's job_id)."""
    assert stack.emulator is not None
    wanted = set(job_ids)
    sent: Counter[str] = Counter()
    for view in stack.emulator.control.jobs():
        job_id = parse_qs(urlsplit(view.webhook_url or "").query).get(JOB_ID_PARAMETER, [""])[0]
        if job_id in wanted:
            sent[job_id] += 1
    return sent


def completed_events(stack: LocalStack, name: str, *, quiet_s: float = 3.0) -> list[dict[str, Any]]:
    """Every Batch Completed event of batch `name` on the events queue, read until none came for
    `quiet_s`; other events are left for their tests."""
    assert stack.events_queue is not None
    sqs, url = stack.sqs(), stack.events_queue.url
    found: list[dict[str, Any]] = []
    others: list[str] = []
    quiet_until = time.monotonic() + quiet_s
    while time.monotonic() < quiet_until:
        for message in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30
        ).get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail-type"] == COMPLETED_EVENT and event["detail"].get("batch") == name:
                found.append(event)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                quiet_until = time.monotonic() + quiet_s
            else:
                others.append(message["ReceiptHandle"])
    for handle in others:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return found


def read_output(stack: LocalStack, key: str) -> bytes:
    body: bytes = stack.s3().get_object(Bucket=stack.outputs()["OutputBucketName"], Key=key)["Body"].read()
    return body


def assert_each_good_line_is_one_job_sent_once(
    stack: LocalStack, target: Target, dropped: Dropped, manifest: Manifest
) -> None:
    job_ids = [batch_job_id(dropped.name, custom_id) for custom_id in manifest.good_ids()]
    jobs = target.job_store().get_many(job_ids)
    assert len(jobs) == len(job_ids)
    assert Counter(job.state for job in jobs.values()) == {JobState.COMPLETED: len(job_ids)}
    sent = fal_requests(stack, job_ids)
    assert set(sent) == set(job_ids)
    assert Counter(sent.values()) == {1: len(job_ids)}  # each job sent to fal exactly once


def assert_answered(stack: LocalStack, finished: Batch, dropped: Dropped, manifest: Manifest) -> None:
    good = len(manifest.good_ids())
    assert finished.tally == {"COMPLETED": good}
    rows = [json.loads(line) for line in read_output(stack, finished.outputs["results"]).splitlines()]
    assert [row["custom_id"] for row in rows] == manifest.custom_ids
    assert [row["line"] for row in rows] == list(range(1, len(manifest.lines) + 1))
    invalid = {row["line"]: row["error"]["type"] for row in rows if row["state"] == "INVALID"}
    assert invalid == manifest.bad
    assert {row["state"] for row in rows if row["line"] not in manifest.bad} == {"COMPLETED"}
    assert {row["job_id"] for row in rows if row["line"] not in manifest.bad} == {
        batch_job_id(dropped.name, custom_id) for custom_id in manifest.good_ids()
    }
    errors = read_output(stack, finished.outputs["errors"]).splitlines()
    assert sorted(json.loads(line)["line"] for line in errors) == sorted(manifest.bad)
    summary = json.loads(read_output(stack, finished.outputs["manifest"]))
    expected = {"COMPLETED": good, "INVALID": len(manifest.bad)} if manifest.bad else {"COMPLETED": good}
    assert summary["counts"] == expected
    assert summary["lines"] == len(manifest.lines)
    assert summary["state"] == "COMPLETED"
    assert (summary["input"]["key"], summary["input"]["version_id"]) == (dropped.key, dropped.version_id)


def test_a_manifest_notified_twice_is_one_job_per_good_line_and_one_answer(
    stack: LocalStack, target: Target
) -> None:
    tag = f"bm-{uuid.uuid4().hex[:6]}"
    manifest = build_manifest(tag, BATCH_LINES, with_bad_lines=True)
    dropped = drop_manifest(stack, f"batches/{tag}.jsonl", manifest.body)
    # S3 delivers at least once: the same notification again, while the first may be fanning out.
    stack.sqs().send_message(
        QueueUrl=target.output("IntakeQueueUrl"), MessageBody=json.dumps(dropped.notification)
    )

    finished = answer(stack, target, dropped.name, timeout_s=120.0 + 2.0 * BATCH_LINES)

    good = BATCH_LINES - 3
    assert (finished.lines, finished.bad, finished.sent, finished.jobs) == (BATCH_LINES, 3, good, good)
    assert_each_good_line_is_one_job_sent_once(stack, target, dropped, manifest)
    assert_answered(stack, finished, dropped, manifest)
    stack.run_schedule("ReconcileFunction")  # a run after the answer announces nothing again
    events = completed_events(stack, dropped.name)
    assert len(events) == 1
    detail = events[0]["detail"]
    assert (detail["state"], detail["lines"], detail["invalid"]) == ("COMPLETED", BATCH_LINES, 3)
    assert detail["jobs"] == {"COMPLETED": good}


class StepKiller:
    """SIGKILLs the submit worker while a fan-out step of one batch runs, as the reliability suite
    kills workers (tests/reliability/harness.py `WorkerKiller`): when the batch's record shows a
    continuation step's lease (cursor past line 0), every busy submit worker is killed. A kill
    landed if, a second later, the record still shows that lease at that cursor: the step died
    between taking its lease and moving the cursor (nothing else can move it while the lease
    holds). A kill that came after the step finished is tried again on the next step."""

    def __init__(self, stack: LocalStack, target: Target, name: str, *, max_kills: int = 4) -> None:
        self._stack = stack
        self._store = batch_store(target)
        self._name = name
        self._max_kills = max_kills
        self.kills = 0
        self.landed: Batch | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="step-killer", daemon=True)

    def __enter__(self) -> StepKiller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def wait(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)

    def _run(self) -> None:
        seen: set[str] = set()
        while not self._stop.is_set() and self.landed is None and self.kills < self._max_kills:
            batch = self._store.get(self._name)
            if batch is not None and batch.fan_out_done:
                return
            if (
                batch is None
                or batch.lease_until is None
                or batch.cursor_line == 0
                or batch.lease_until in seen
            ):
                time.sleep(0.005)
                continue
            seen.add(batch.lease_until)
            if self._kill_busy_submit_workers():
                self.kills += 1
                time.sleep(1.0)
                after = self._store.get(self._name)
                if after is not None and (after.cursor_line, after.lease_until) == (
                    batch.cursor_line,
                    batch.lease_until,
                ):
                    self.landed = batch

    def _kill_busy_submit_workers(self) -> bool:
        workers = self._stack.functions["SubmitFunction"].workers
        busy = [worker.pid for worker in workers if worker.busy and worker.pid is not None]
        for pid in busy:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                busy.remove(pid)
        return bool(busy)


def test_a_submit_worker_killed_in_a_fan_out_step_leaves_the_batch_to_resume_with_nothing_doubled(
    stack: LocalStack, target: Target
) -> None:
    tag = f"bk-{uuid.uuid4().hex[:6]}"
    manifest = build_manifest(tag, 100, with_bad_lines=False)

    dropped = drop_manifest(stack, f"batches/{tag}.jsonl", manifest.body)
    # Started before the first continuation can run: the first step validates the whole file first.
    with StepKiller(stack, target, dropped.name) as killer:
        killer.wait(timeout_s=120.0)
    assert killer.landed is not None, f"no kill landed inside a fan-out step ({killer.kills} tried)"
    assert dropped.name == killer.landed.name
    assert any("SubmitFunction worker crashed" in report for report in stack.reports)

    # The killed step's message comes back after the intake queue's visibility timeout, to a
    # lease that has ended by then, and redoes the step; the rest of the fan-out follows.
    finished = answer(stack, target, dropped.name, timeout_s=300.0)

    assert (finished.lines, finished.bad, finished.sent, finished.jobs) == (100, 0, 100, 100)
    assert finished.cursor_line == 100
    assert_each_good_line_is_one_job_sent_once(stack, target, dropped, manifest)
    assert_answered(stack, finished, dropped, manifest)
    assert len(completed_events(stack, dropped.name)) == 1
