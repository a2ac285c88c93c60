"""One local stack for the whole e2e package: moto's server, the fal emulator and the five real
handlers in their worker processes, all over loopback HTTP.

Package scope: starting it (five cold starts) is the expensive part, and moto's state is global to
the process, so the stack must not overlap tests that reset moto; the package runs contiguously.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from falflow.jobs import FINAL_STATES, Job, JobState
from falflow_tools.emulator import EmulatorConfig
from falflow_tools.local.stack import LocalStack, LocalStackConfig
from falflow_tools.ops.target import Target, target_for_local

# A job nobody hears about for this long is polled by the reconciler (when a test runs it).
RECONCILE_AFTER_S = 1.2
# A changed budget is seen at once, and fal's lock is probed a second after it was seen.
SPEND_ENVIRONMENT = {"BUDGET_CACHE_SECONDS": "0", "FAL_LOCK_PROBE_SECONDS": "1"}


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    home = tmp_path_factory.mktemp("local-stack")
    emulator = EmulatorConfig(queue_wait_s=0.05, run_time_s=0.2, webhook_backoff_s=0.05)
    config = LocalStackConfig(
        visibility_timeout_s=2,
        parameters={
            "ReconcileAfterMinutes": f"{RECONCILE_AFTER_S / 60:.4f}",
            # Pinned to the emulator's account, as the README tells operators to pin theirs.
            "FalWebhookUserIds": json.dumps([emulator.user_id]),
        },
        # The tests run reconcile and collect themselves, when their jobs are where they want them.
        schedule_intervals_s={"ReconcileFunction": 0, "CollectFunction": 0},
        # Dead-letter on the second receive instead of the fifth: the path is the same, only quicker.
        environment={
            # A batch fans out 20 lines a step, so a test's small manifest has continuations.
            "SubmitFunction": {"MAX_RECEIVES": "2", "BATCH_CHUNK_LINES": "20", **SPEND_ENVIRONMENT},
            "StoreFunction": {"MAX_RECEIVES": "2"},
            "ReconcileFunction": SPEND_ENVIRONMENT,
        },
        emulator=emulator,
        log_dir=home / "logs",
        state_file=home / "local.json",
        # Five cold starts at once on a shared 2-core machine can take longer than Lambda's limit.
        init_timeout_s=180.0,
    )
    with LocalStack(config) as running:
        yield running


@pytest.fixture(scope="package")
def target(stack: LocalStack) -> Target:
    return target_for_local(stack.state())


@pytest.fixture
def fal_faults(stack: LocalStack) -> Iterator[Callable[..., Any]]:
    """Set emulator faults for one test; they are cleared afterwards."""
    assert stack.emulator is not None
    control = stack.emulator.control
    yield control.set_faults
    control.set_faults()


def wait_for_job(
    target: Target,
    job_id: str,
    states: frozenset[JobState] | set[JobState] = FINAL_STATES,
    timeout_s: float = 30.0,
) -> Job:
    store = target.job_store()
    deadline = time.monotonic() + timeout_s
    job = None
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job is not None and job.state in states:
            return job
        time.sleep(0.1)
    raise AssertionError(
        f"job {job_id} did not reach {sorted(states)}; last seen {job.state if job else None}"
    )


def read_events(stack: LocalStack, job_id: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Completion events for one job from the events queue; others are left for their tests."""
    assert stack.events_queue is not None
    sqs, url = stack.sqs(), stack.events_queue.url
    deadline = time.monotonic() + timeout_s
    found: list[dict[str, Any]] = []
    others: list[str] = []
    while time.monotonic() < deadline and not found:
        # Held briefly while looking, so each receive walks further through the queue.
        for message in sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30
        ).get("Messages", []):
            event = json.loads(message["Body"])
            if event["detail"].get("job_id") == job_id:
                found.append(event)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            else:
                others.append(message["ReceiptHandle"])
    for handle in others:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return found


def state_file(stack: LocalStack) -> Path:
    assert stack.config.state_file is not None
    return stack.config.state_file
