"""`falflow demo`: the whole job on one machine, in well under a minute.

Starts the local stack, starts jobs the ways other systems do — media drops under routed
prefixes, a job document, job messages on the intake queue — shows their progress, has the
collect function price them, and prints where every output landed. It fails (exit 1) unless
every job it started COMPLETED with its outputs in the output bucket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from falflow.jobs import FINAL_STATES, Job, JobState
from falflow_tools.emulator import EmulatorConfig
from falflow_tools.emulator.media import render_png
from falflow_tools.local.stack import LocalStack, LocalStackConfig
from falflow_tools.ops.jobs import job_duration_s
from falflow_tools.ops.render import money, seconds, table
from falflow_tools.ops.submit import drop_file, job_message, send_message
from falflow_tools.ops.target import Target, target_for_local
from falflow_tools.template import REPO_ROOT

Echo = Callable[[str], None]

# fal-like pacing, quick enough for a demo: a short queue wait, a second or two of "inference".
DEMO_EMULATOR = EmulatorConfig(queue_wait_s=0.4, run_time_s=1.2, log_interval_s=0.2)


@dataclass
class DemoJob:
    label: str  # how the job was started, as the table shows it
    job_id: str
    job: Job | None = None
    seen: list[JobState] = field(default_factory=list)


@dataclass
class DemoResult:
    jobs: list[DemoJob]
    output_bucket: str
    events: int
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return all(
            j.job is not None and j.job.state == JobState.COMPLETED and j.job.outputs for j in self.jobs
        )

    def rows(self) -> list[list[str]]:
        rows = []
        for demo_job in self.jobs:
            job = demo_job.job
            if job is None:
                rows.append([demo_job.label, "-", "NOT SEEN", "-", "-", "-"])
                continue
            outputs = [f"s3://{self.output_bucket}/{key}" for key in job.outputs]
            where = (
                outputs[0] + (f" (+{len(outputs) - 1} more)" if len(outputs) > 1 else "") if outputs else "-"
            )
            if job.error:
                where = f"{job.error.type}: {job.error.message}"
            cost = money(job.cost.amount, job.cost.currency) if job.cost else "-"
            rows.append(
                [demo_job.label, job.model or "-", job.state.value, seconds(job_duration_s(job)), cost, where]
            )
        return rows

    def table(self) -> str:
        return table(["SOURCE", "MODEL", "STATE", "DURATION", "COST", "OUTPUT"], self.rows(), max_width=250)

    def summary(self) -> str:
        completed = sum(1 for j in self.jobs if j.job is not None and j.job.state == JobState.COMPLETED)
        total = sum(j.job.cost.amount for j in self.jobs if j.job is not None and j.job.cost is not None)
        return (
            f"{completed}/{len(self.jobs)} jobs completed, total cost {money(total)}, "
            f"{self.events} completion events on EventBridge, {self.elapsed_s:.1f}s in all."
        )


def demo_config(*, log_dir: Path, fal_key: str | None = None) -> LocalStackConfig:
    return LocalStackConfig(
        # Retries after a failure come back in seconds rather than minutes (the store's timeout and
        # lease scale with it: falflow_tools.local.timings).
        visibility_timeout_s=10,
        # The reconciler looks for jobs whose webhook never came after 20 s (real fal: minutes);
        # with real fal (webhooks cannot reach this machine) it is what finishes every job.
        parameters={"ReconcileAfterMinutes": "0.33"},
        schedule_intervals_s={"ReconcileFunction": 5.0, "CollectFunction": 0},
        emulator=DEMO_EMULATOR,
        fal_key=fal_key,
        log_dir=log_dir,
    )


def start_jobs(target: Target) -> list[DemoJob]:
    """One job of each input form, across image, video and audio models."""
    started = []
    picture = render_png(256, 256, 1)
    drop = drop_file(target, picture, key="upscale/lighthouse.png", content_type="image/png")
    started.append(DemoJob("S3 drop upscale/lighthouse.png", drop.job_id))
    prompt = b"a paper boat drifting across a pond at dawn, soft light"
    drop = drop_file(target, prompt, key="animate/paper-boat.txt", content_type="text/plain")
    started.append(DemoJob("S3 drop animate/paper-boat.txt", drop.job_id))
    document = {
        "model": "fal-ai/flux/dev",
        "input": {"prompt": "an isometric city block, watercolor"},
        "metadata": {"requested_by": "demo"},
    }
    drop = drop_file(
        target, json.dumps(document).encode(), key="jobs/city.json", content_type="application/json"
    )
    started.append(DemoJob("S3 job document jobs/city.json", drop.job_id))
    sent = send_message(
        target,
        job_message(
            "fal-ai/flux/dev",
            {"prompt": "a lighthouse on a cliff at dusk, oil painting", "num_images": 2},
            metadata={"requested_by": "demo"},
        ),
    )
    started.append(DemoJob("SQS message fal-ai/flux/dev", sent.job_id))
    sent = send_message(
        target,
        job_message("fal-ai/stable-audio", {"prompt": "waves on a pebble beach", "seconds_total": 5}),
    )
    started.append(DemoJob("SQS message fal-ai/stable-audio", sent.job_id))
    return started


def follow(target: Target, jobs: list[DemoJob], echo: Echo, *, started: float, timeout_s: float) -> None:
    """Print each state change until every job is final (or time runs out)."""
    store = target.job_store()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for demo_job in jobs:
            job = store.get(demo_job.job_id)
            if job is None:
                continue
            demo_job.job = job
            if not demo_job.seen or demo_job.seen[-1] != job.state:
                demo_job.seen.append(job.state)
                echo(f"  {time.monotonic() - started:5.1f}s  {job.state.value:<11} {demo_job.label}")
        if all(j.job is not None and j.job.state in FINAL_STATES for j in jobs):
            return
        time.sleep(0.25)


def count_events(stack: LocalStack) -> int:
    """Completion events that reached the events queue (EventBridge rule on source falflow)."""
    if stack.events_queue is None:
        return 0
    sqs = stack.sqs()
    seen = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=stack.events_queue.url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return seen
        seen += len(messages)
        sqs.delete_message_batch(
            QueueUrl=stack.events_queue.url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
        )


def run_demo(
    echo: Echo,
    *,
    timeout_s: float = 60.0,
    fal_key: str | None = None,
    log_dir: Path | None = None,
    before_stop: Callable[[Target, DemoResult], None] | None = None,
) -> DemoResult:
    """The demo; `before_stop` runs with the stack still up (the command serves the console)."""
    log_dir = log_dir or REPO_ROOT / ".falflow" / "logs"
    began = time.monotonic()
    fal = "real fal (FAL_KEY)" if fal_key else "the fal emulator"
    echo(f"Starting the local stack: moto (S3, SQS, DynamoDB, EventBridge, Secrets Manager), {fal},")
    echo("and the five functions of template.yaml, each in its own process ...")
    with LocalStack(demo_config(log_dir=log_dir, fal_key=fal_key)) as stack:
        echo(f"  up in {time.monotonic() - began:.1f}s; function logs in {log_dir}/")
        target = target_for_local(stack.state())
        echo("\nStarting jobs:")
        jobs = start_jobs(target)
        for job in jobs:
            echo(f"  {job.label:<34} -> job {job.job_id}")
        echo("\nProgress:")
        started = time.monotonic()
        follow(target, jobs, echo, started=started, timeout_s=timeout_s)
        echo("\nCollecting usage and per-job cost (the collect function's scheduled run) ...")
        collected = stack.run_schedule("CollectFunction")
        if not collected.ok and collected.error:
            echo(f"  collect failed: {collected.error['errorType']}: {collected.error['errorMessage']}")
        store = target.job_store()
        for demo_job in jobs:
            demo_job.job = store.get(demo_job.job_id) or demo_job.job
        result = DemoResult(
            jobs=jobs,
            output_bucket=target.output("OutputBucketName"),
            events=count_events(stack),
            elapsed_s=time.monotonic() - began,
        )
        if before_stop is not None:
            before_stop(target, result)
        echo("Stopping the local stack ...")
    return result
