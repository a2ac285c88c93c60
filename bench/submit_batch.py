"""Benchmark: one SQS batch of 10 job messages through the submit handler vs 10 sequential submits.

    python -m bench.submit_batch [--jobs 10] [--latency 0.3] [--min-ratio 4]

Everything runs on this machine: moto's server stands in for AWS (resources from template.yaml)
and the fal emulator answers every queue submit after a fixed added latency, as a distant fal
would. Each runs in a process of its own, as AWS and fal are elsewhere: their work does not compete
with the function's for this interpreter. Measured in the same run, side by side:

- the batch: the real handler (functions/submit/app.py), warm, given one SQS event of ``--jobs``
  job messages — it records each job in DynamoDB and submits them to fal concurrently;
- the naive loop: the same number of submits made one after another with the fal client alone
  (no AWS work at all, so a lower bound for any sequential implementation).

Exits non-zero when the batch is not at least ``--min-ratio`` times faster, or not every job of
the batch was submitted exactly once.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
import uuid
from contextlib import ExitStack, redirect_stdout
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

from bench.services import RemoteFal, fal_process, moto_process
from falflow.aws.clients import aws_client
from falflow.fal import FalQueueClient
from falflow.jobs import DynamoJobStore, JobState
from falflow.settings import FalSettings
from falflow_tools.emulator import EmulatorConfig
from falflow_tools.local.handlers import context_for, load_handler
from falflow_tools.local.resources import ProvisionedStack

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
MODEL = "fal-ai/flux/dev"
SAMPLE_EVENT = REPO / "events" / "submit" / "sqs-job-message.json"
NO_WEBHOOK_RECEIVER = "http://127.0.0.1:9/webhooks/fal"  # deliveries are not what is measured


def job_messages(count: int, run: str) -> list[dict[str, Any]]:
    return [
        {"model": MODEL, "input": {"prompt": f"bench {run} #{n}"}, "job_id": f"bench-{run}-{n}"}
        for n in range(count)
    ]


def sqs_event(bodies: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """An intake SQS event shaped like the events/ sample, one record per body."""
    template = json.loads(SAMPLE_EVENT.read_text())["Records"][0]
    records = []
    for body in bodies:
        record = json.loads(json.dumps(template))
        record.update(messageId=str(uuid.uuid4()), body=json.dumps(body), eventSourceARN=queue_arn)
        records.append(record)
    return {"Records": records}


@dataclass(frozen=True)
class BenchResult:
    jobs: int
    latency_s: float
    batch_s: float
    sequential_s: float
    repeat: int  # rounds of each; the times are medians
    submitted: int  # jobs of all batches that ended SUBMITTED
    batch_fal_submits: int  # queue submits fal received for the jobs of all batches

    @property
    def all_submitted_once(self) -> bool:
        return self.submitted == self.batch_fal_submits == self.jobs * self.repeat

    @property
    def ratio(self) -> float:
        return self.sequential_s / self.batch_s


def run(
    jobs: int = 10,
    latency_s: float = 0.5,
    repeat: int = 3,
    *,
    stack: ProvisionedStack | None = None,
    fal: RemoteFal | None = None,
) -> BenchResult:
    """Measure both sides; ``stack`` and ``fal`` (already running) are started here when absent."""
    with ExitStack() as started:
        stack = stack or started.enter_context(moto_process())
        fal = fal or started.enter_context(
            fal_process(EmulatorConfig(webhook_max_retries=0), latency_s=latency_s)
        )
        return _measure(jobs, latency_s, repeat, stack, fal)


def _measure(
    jobs: int, latency_s: float, repeat: int, stack: ProvisionedStack, fal: RemoteFal
) -> BenchResult:
    secret = str(stack.resolver.parameters["FalKeySecretName"])
    boto3.client("secretsmanager").create_secret(Name=secret, SecretString=fal.api_key)
    overrides = {
        **fal.urls.env(),
        "WEBHOOK_URL": NO_WEBHOOK_RECEIVER,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }
    os.environ.update(stack.function_environment("SubmitFunction", overrides))
    handler = load_handler("SubmitFunction")  # after the environment: a cold start
    queue_arn = stack.queue("IntakeQueue").arn
    context = context_for("SubmitFunction")

    # Warm up with a full batch (imports, secret, a connection per worker), as a busy function is.
    with redirect_stdout(io.StringIO()):  # Powertools' cold-start metric (EMF) is not ours
        handler(sqs_event(job_messages(jobs, "warmup"), queue_arn), context)

    batch_times: list[float] = []
    batches: list[dict[str, Any]] = []
    for round_ in range(repeat):
        batch = job_messages(jobs, f"batch{round_}")
        event = sqs_event(batch, queue_arn)
        started = time.perf_counter()
        response = handler(event, context)
        batch_times.append(time.perf_counter() - started)
        batches.extend(batch)
        if response != {"batchItemFailures": []}:
            raise RuntimeError(f"the batch reported failures: {response}")

    client = FalQueueClient(FalSettings(), lambda: fal.api_key)
    client.submit(MODEL, {"prompt": "warm-up"})  # a warm connection, as the handler had
    loop_times: list[float] = []
    for round_ in range(repeat):
        started = time.perf_counter()
        for body in job_messages(jobs, f"loop{round_}"):
            client.submit(MODEL, body["input"], webhook_url=f"{NO_WEBHOOK_RECEIVER}?job_id={body['job_id']}")
        loop_times.append(time.perf_counter() - started)

    store = DynamoJobStore(aws_client("dynamodb"), stack.tables["JobsTable"], retention=timedelta(days=1))
    submitted = sum(
        1 for body in batches if (job := store.get(body["job_id"])) and job.state is JobState.SUBMITTED
    )
    batch_ids = {body["job_id"] for body in batches}
    batch_fal_submits = sum(
        1
        for job in fal.control.jobs()
        if job.webhook_url and parse_qs(urlsplit(job.webhook_url).query).get("job_id", [""])[0] in batch_ids
    )
    return BenchResult(
        jobs=jobs,
        latency_s=latency_s,
        batch_s=statistics.median(batch_times),
        sequential_s=statistics.median(loop_times),
        repeat=repeat,
        submitted=submitted,
        batch_fal_submits=batch_fal_submits,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds added to every fal submit")
    parser.add_argument("--min-ratio", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of each; the medians are compared")
    args = parser.parse_args(argv)

    result = run(args.jobs, args.latency, args.repeat)
    batch = (
        f"{result.batch_s:7.3f} s   ({result.submitted}/{result.jobs * result.repeat} jobs SUBMITTED once)"
    )
    latency_ms = result.latency_s * 1000
    print(
        f"submit_batch: {result.jobs} job messages, fal emulator +{latency_ms:.0f} ms per submit, "
        f"median of {result.repeat} rounds"
    )
    print(f"  {'batch through the handler':<32} {batch}")
    print(f"  {'sequential submits (naive loop)':<32} {result.sequential_s:7.3f} s")
    print(f"  {'ratio':<32} {result.ratio:7.1f} x   (required >= {args.min_ratio:g} x)")
    if not result.all_submitted_once:
        print(f"FAIL: {result.submitted} SUBMITTED, {result.batch_fal_submits} fal submits", file=sys.stderr)
        return 1
    if result.ratio < args.min_ratio:
        print(f"FAIL: the batch is only {result.ratio:.1f} x faster", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
