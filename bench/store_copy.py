"""Benchmark: the store copying a 1 GiB output from fal's CDN into S3, against a plain boto3
upload of the same bytes — time, throughput and the process's peak memory.

    .venv/bin/python -m bench.store_copy [--size-mib 1024]

moto's server stands in for S3/DynamoDB/SQS and the fal emulator for fal (its CDN streams a
generated MP4 of exactly ``--size-mib``); each runs in a process of its own. Measured in the same
run, each copy in a fresh process of its own so its peak RSS (``VmHWM``, the high-water mark)
is the copy's alone:

- ours: the real store handler (functions/store/app.py) given the outputs queue message of a job
  whose completion names the video: it checks the URL, streams the download into a multipart
  upload with a bounded number of parts in flight, writes result.json, completes the job;
- baseline: ``boto3.client("s3").upload_fileobj(urlopen(url), …)``, boto3's own managed
  multipart transfer (8 MiB parts, 10 threads) reading the same download.

Exits non-zero if the store's peak memory reaches 256 MB or either copy is incomplete.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import boto3

from bench.fresh import peak_rss_mb, run_fresh
from bench.services import RemoteFal, fal_process, moto_process
from falflow.aws.clients import aws_client
from falflow.aws.outputs import S3Inbox, SqsOutputsQueue
from falflow.completion.delivery import delivery_body
from falflow.completion.handoff import CompletionHandoff
from falflow.fal.queue import FalQueueClient
from falflow.jobs import DynamoJobStore, Job, utcnow
from falflow.settings import FalSettings
from falflow_tools.emulator import EmulatorConfig
from falflow_tools.local.resources import ProvisionedStack
from falflow_tools.local.sqs_source import sqs_record

MEMORY_LIMIT_MB = 256
VIDEO_MODEL = "fal-ai/kling-video/v2/master/text-to-video"
MIB = 2**20


@dataclass(frozen=True)
class CopyRun:
    seconds: float
    peak_rss_mb: float
    rss_before_mb: float
    bytes: int

    @property
    def mib_per_s(self) -> float:
        return self.bytes / MIB / self.seconds


@dataclass(frozen=True)
class BenchResult:
    size: int
    ours: CopyRun
    baseline: CopyRun
    job_state: str

    @property
    def within_memory_limit(self) -> bool:
        return self.ours.peak_rss_mb < MEMORY_LIMIT_MB

    @property
    def throughput_ratio(self) -> float:
        return self.ours.mib_per_s / self.baseline.mib_per_s

    @property
    def complete(self) -> bool:
        return self.job_state == "COMPLETED" and self.ours.bytes == self.baseline.bytes == self.size

    def report(self) -> str:
        def row(name: str, run: CopyRun) -> str:
            return (
                f"{name:34}{run.seconds:>9.2f}{run.mib_per_s:>10.1f}{run.peak_rss_mb:>11.1f}"
                f"{run.rss_before_mb:>13.1f}"
            )

        verdict = "OK" if self.within_memory_limit else "OVER"
        return "\n".join(
            [
                f"store: copy one {self.size / MIB:.0f} MiB output, fal emulator CDN -> S3 (moto server); "
                "mean time, highest peak RSS",
                f"{'':34}{'seconds':>9}{'MiB/s':>10}{'peak MB':>11}{'idle MB':>13}",
                row("ours (functions/store, streamed)", self.ours),
                row("boto3 upload_fileobj (baseline)", self.baseline),
                f"throughput ours/baseline: {self.throughput_ratio:.2f}x; store peak memory "
                f"{self.ours.peak_rss_mb:.0f} MB < {MEMORY_LIMIT_MB} MB: {verdict}; job {self.job_state}",
            ]
        )


def _child(mode: str, spec: dict[str, Any]) -> None:
    """Runs in a fresh process: one copy, then its timings and peak RSS as JSON on stdout."""
    if mode == "ours":
        from falflow_tools.local.handlers import context_for, load_handler  # noqa: PLC0415

        handler = load_handler("StoreFunction")
        context = context_for("StoreFunction")
        before = peak_rss_mb()
        started = time.perf_counter()
        response = handler(spec["event"], context)
        seconds = time.perf_counter() - started
        if response != {"batchItemFailures": []}:
            raise SystemExit(f"the store reported failures: {response}")
    else:
        import urllib.request  # noqa: PLC0415

        s3 = boto3.client("s3")
        before = peak_rss_mb()
        started = time.perf_counter()
        with urllib.request.urlopen(spec["url"]) as download:
            s3.upload_fileobj(download, spec["bucket"], spec["key"], ExtraArgs={"ContentType": "video/mp4"})
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": before}))


def _run_child(mode: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return run_fresh(["bench.store_copy", "--child", mode], spec, env, what=f"{mode} copy")


def run(size_mib: int = 1024, *, part_mib: int = 8, concurrency: int = 8, rounds: int = 2) -> BenchResult:
    size = size_mib * MIB
    config = EmulatorConfig(video_bytes=size, queue_wait_s=0.0, run_time_s=0.05, webhook_max_retries=0)
    with ExitStack() as started:
        stack = started.enter_context(moto_process())
        fal = started.enter_context(fal_process(config))
        return _measure(stack, fal, size, part_mib, concurrency, rounds)


def _finished_video(fal: RemoteFal) -> tuple[str, dict[str, Any]]:
    client = FalQueueClient(FalSettings(queue_url=fal.urls.queue_url), lambda: fal.api_key)
    submission = client.submit(VIDEO_MODEL, {"prompt": "a long take of the sea"})
    deadline = time.monotonic() + 60
    while not client.status(submission.status_url).completed:
        if time.monotonic() > deadline:
            raise TimeoutError("the emulator did not finish the video")
        time.sleep(0.05)
    return submission.request_id, client.result(submission.response_url)


def _measure(
    stack: ProvisionedStack, fal: RemoteFal, size: int, part_mib: int, concurrency: int, rounds: int
) -> BenchResult:
    secret = str(stack.resolver.parameters["FalKeySecretName"])
    boto3.client("secretsmanager").create_secret(Name=secret, SecretString=fal.api_key)
    store_env = stack.function_environment(
        "StoreFunction",
        {
            **fal.urls.env(),
            "MEDIA_ALLOW_LOCAL": fal.base_url,
            "PART_SIZE_BYTES": str(part_mib * MIB),
            "COPY_CONCURRENCY": str(concurrency),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_METRICS_DISABLED": "true",
        },
    )
    baseline_url = _finished_video(fal)[1]["video"]["url"]  # the baseline only reads the file
    ours: list[CopyRun] = []
    baseline: list[CopyRun] = []
    states: set[str] = set()
    # ABBA order: whichever copy runs first also pays for moto's memory growing; each side runs
    # first equally often.
    for n in range(rounds):
        order = ("ours", "baseline") if n % 2 == 0 else ("baseline", "ours")
        for side in order:
            if side == "ours":
                # A request of its own each time: a request id binds to one job only.
                request_id, payload = _finished_video(fal)
                run, state = _ours_once(stack, request_id, payload, store_env)
                ours.append(run)
                states.add(state)
            else:
                baseline.append(_baseline_once(stack, baseline_url))
    return BenchResult(
        size=size, ours=_combined(ours), baseline=_combined(baseline), job_state="/".join(sorted(states))
    )


def _combined(runs: list[CopyRun]) -> CopyRun:
    """Mean time and bytes over the runs; the highest peak memory of any of them."""
    return CopyRun(
        seconds=statistics.fmean(r.seconds for r in runs),
        peak_rss_mb=max(r.peak_rss_mb for r in runs),
        rss_before_mb=max(r.rss_before_mb for r in runs),
        bytes=min(r.bytes for r in runs),
    )


def _ours_once(
    stack: ProvisionedStack, request_id: str, payload: dict[str, Any], store_env: dict[str, str]
) -> tuple[CopyRun, str]:
    """A job whose completion names the video, recorded as the webhook records it, and the real
    store handler given its outputs message in a fresh process."""
    bucket = stack.buckets["OutputBucket"]
    jobs = DynamoJobStore(aws_client("dynamodb"), stack.tables["JobsTable"], retention=timedelta(days=1))
    job_id = f"bench-{uuid.uuid4().hex[:8]}"
    jobs.create(Job.new(job_id, source="sqs:bench", source_kind="sqs", now=utcnow(), model=VIDEO_MODEL))
    jobs.bind_request(job_id, request_id)
    jobs.confirm_submission(job_id, request_id, now=utcnow())
    outputs_queue = stack.queue("OutputsQueue")
    intake = CompletionHandoff(
        jobs, S3Inbox(aws_client("s3"), bucket), SqsOutputsQueue(aws_client("sqs"), outputs_queue.url)
    )
    intake.record(
        job_id, request_id, delivery_body(request_id, payload=payload), source="webhook", now=utcnow()
    )
    received = aws_client("sqs").receive_message(
        QueueUrl=outputs_queue.url, MessageSystemAttributeNames=["All"]
    )
    (message,) = received["Messages"]
    event = {"Records": [sqs_record(message, queue_arn=outputs_queue.arn, region=stack.region)]}
    measured = _run_child("ours", {"event": event}, {**os.environ, **store_env})
    aws_client("sqs").delete_message(QueueUrl=outputs_queue.url, ReceiptHandle=message["ReceiptHandle"])
    job = jobs.get(job_id)
    assert job is not None
    (key,) = job.outputs or [""]
    size = _object_size(bucket, key)
    if key:
        aws_client("s3").delete_object(Bucket=bucket, Key=key)  # moto keeps objects in memory
    return CopyRun(
        measured["seconds"], measured["peak_rss_mb"], measured["rss_before_mb"], size
    ), job.state.value


def _baseline_once(stack: ProvisionedStack, url: str) -> CopyRun:
    bucket = stack.buckets["OutputBucket"]
    key = f"bench/{uuid.uuid4().hex[:8]}/baseline.mp4"
    measured = _run_child("baseline", {"url": url, "bucket": bucket, "key": key}, dict(os.environ))
    size = _object_size(bucket, key)
    aws_client("s3").delete_object(Bucket=bucket, Key=key)
    return CopyRun(measured["seconds"], measured["peak_rss_mb"], measured["rss_before_mb"], size)


def _object_size(bucket: str, key: str) -> int:
    if not key:
        return 0
    size: int = aws_client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"]
    return size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="copies of each side (ABBA order)")
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, json.loads(sys.stdin.read()))
        return 0
    result = run(args.size_mib, part_mib=args.part_mib, concurrency=args.concurrency, rounds=args.rounds)
    print(result.report())
    return 0 if result.within_memory_limit and result.complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
