"""Benchmark: jobs per second through the whole local stack, and how it scales with workers.

    .venv/bin/python -m bench.local_throughput [--jobs 50 200 1000] [--workers 1 2]

The local stack (tools/falflow_tools/local: moto's server, the fal emulator, the five real handlers
each in worker processes of their own, SQS sources polling as Lambda's do) runs end to end: ``N``
job messages are sent to the intake queue in batches of 10, submit records and submits them, the
emulator finishes each and calls the webhook through the front door, the store copies its output
into S3. The clock runs from the first send to the moment the last job became final (its record's
``state_changed_at``); jobs/s is N over that time. ``--workers`` sets
the workers (concurrent invocations) of the submit, webhook and store functions; the reconciler
runs every 10 s (for jobs silent 30 s), the collect schedule is off. Everything shares this
machine's cores, so the figure is the local stack's, not AWS's: it says where the pipeline's own
cost is, and whether adding workers helps.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from falflow.jobs import FINAL_STATES, JobState, utcnow
from falflow_tools.emulator import EmulatorConfig
from falflow_tools.local.stack import LocalStack, LocalStackConfig
from falflow_tools.ops.submit import job_message

MODEL = "fal-ai/flux/dev"
# A scan of the jobs table is work for moto's one process, which the pipeline also needs: polled
# every 0.2 s, the scans of a 1,000-job run took half of moto's time. The end time is the last
# job's own, so the poll's period does not change the figure.
POLL_S = 2.0
SCALED_FUNCTIONS = ("SubmitFunction", "WebhookFunction", "StoreFunction")
_FINAL = frozenset(state.value for state in FINAL_STATES)


@dataclass(frozen=True)
class ThroughputRun:
    jobs: int
    workers: int
    seconds: float
    states: dict[str, int]

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    @property
    def all_completed(self) -> bool:
        return self.states == {JobState.COMPLETED.value: self.jobs}


def run_once(jobs: int, workers: int, *, timeout_s: float | None = None) -> ThroughputRun:
    with tempfile.TemporaryDirectory(prefix="falflow-throughput-") as home:
        config = LocalStackConfig(
            # The reconciler runs as deployed, on a short clock: a webhook lost under load is
            # found and finished as it would be in AWS, instead of leaving its job waiting.
            parameters={"ReconcileAfterMinutes": "0.5"},
            schedule_intervals_s={"ReconcileFunction": 10, "CollectFunction": 0},
            concurrency=dict.fromkeys(SCALED_FUNCTIONS, workers),
            emulator=EmulatorConfig(queue_wait_s=0.0, run_time_s=0.05, webhook_backoff_s=0.05),
            log_dir=Path(home) / "logs",
        )
        with LocalStack(config) as stack:
            return measure(stack, jobs, workers, timeout_s or max(120.0, jobs * 2.0))


def measure(stack: LocalStack, jobs: int, workers: int, timeout_s: float) -> ThroughputRun:
    """Send ``jobs`` job messages to the running ``stack`` and time them until all are final: from
    the first send to the last job's move into its final state, as its record says."""
    sqs = stack.sqs()
    intake = stack.outputs()["IntakeQueueUrl"]
    run = uuid.uuid4().hex[:8]
    ids = [f"throughput-{run}-{n}" for n in range(jobs)]
    started, started_at = time.monotonic(), utcnow()
    for first in range(0, jobs, 10):
        entries = [
            {"Id": str(n), "MessageBody": json.dumps(job_message(MODEL, {"prompt": job_id}, job_id=job_id))}
            for n, job_id in enumerate(ids[first : first + 10])
        ]
        sqs.send_message_batch(QueueUrl=intake, Entries=entries)  # type: ignore[arg-type]
    progress = _progress(stack, run)
    while progress.final < jobs:
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(
                f"{jobs} jobs with {workers} workers not final after {timeout_s:.0f} s: {progress.states}"
            )
        time.sleep(POLL_S)
        progress = _progress(stack, run)
    assert progress.last_final_at is not None
    seconds = (progress.last_final_at - started_at).total_seconds()
    return ThroughputRun(jobs, workers, seconds, dict(progress.states))


@dataclass(frozen=True)
class _Progress:
    states: Counter[str]
    last_final_at: datetime | None

    @property
    def final(self) -> int:
        return sum(self.states[state] for state in _FINAL)


def _progress(stack: LocalStack, run: str) -> _Progress:
    """How many of this run's jobs are in each state, and when the latest final one got there (one
    scan of the jobs table)."""
    counts: Counter[str] = Counter()
    last_final_at: datetime | None = None
    pages = (
        stack.dynamodb()
        .get_paginator("scan")
        .paginate(
            TableName=stack.resources.tables["JobsTable"],
            ProjectionExpression="job_id, #s, state_changed_at",
            ExpressionAttributeNames={"#s": "state"},
        )
    )
    for page in pages:
        for item in page["Items"]:
            if not item["job_id"]["S"].startswith(f"throughput-{run}-"):
                continue
            state = item["state"]["S"]
            counts[state] += 1
            if state in _FINAL:
                changed_at = datetime.fromisoformat(item["state_changed_at"]["S"])
                last_final_at = changed_at if last_final_at is None else max(last_final_at, changed_at)
    return _Progress(counts, last_final_at)


def run(jobs: tuple[int, ...] = (50, 200, 1000), workers: tuple[int, ...] = (1, 2)) -> list[ThroughputRun]:
    """Every N with the fewest workers, then the middle N with each number of workers."""
    runs = [run_once(n, workers[0]) for n in jobs]
    scaled = jobs[len(jobs) // 2]
    runs += [run_once(scaled, w) for w in workers[1:]]
    return runs


def report(runs: list[ThroughputRun]) -> str:
    lines = [f"{'jobs':>6}{'workers':>9}{'seconds':>10}{'jobs/s':>9}  states"]
    for r in runs:
        lines.append(f"{r.jobs:>6}{r.workers:>9}{r.seconds:>10.1f}{r.jobs_per_s:>9.2f}  {r.states}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    runs = run(tuple(args.jobs), tuple(args.workers))
    print(report(runs))
    return 0 if all(r.all_completed for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
