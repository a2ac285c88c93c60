"""Benchmark: a 100,000-line JSONL manifest fanned out by the submit handler — lines/s, the
longest step and the fan-out process's peak memory, against a floor that only reads and sends.

    .venv/bin/python -m bench.batch_fanout [--lines 100000] [--chunk-lines 500]

moto's server stands in for S3 and DynamoDB (every resource of template.yaml), the fal emulator
for fal, and bench/sqs_sink.py for SQS (moto's SQS slows down as its queue grows, see there),
each in a process of its own. The manifest (mixed models, three bad lines) is written to the input
bucket; each side runs in a fresh process of its own, so its peak RSS (``VmHWM``) is its own:

- ours: the real submit handler (functions/submit/app.py, the template's environment) given the
  batch message ``{"batch": "s3://…"}``, then each continuation it sent, one invocation a step,
  until the fan-out is done: it validates the whole manifest as a stream, records the batch, then
  sends its job messages ``--chunk-lines`` a step, the cursor kept in DynamoDB. The continuation
  is handed to the next invocation directly (the queue's delivery is not what is measured);
  each run has an intake queue of its own, counted at the end;
- floor: the same object streamed once with boto3, each line parsed as JSON and sent as it is,
  ten to a SendMessageBatch call on the same eight threads, a chunk at a time — no validation,
  no second read, no cursor: what any fan-out must at least do.

Ours also runs at a tenth of the lines: a fan-out that streams keeps its peak memory nearly flat
as the manifest grows. Exits non-zero when a step would not fit the submit function's timeout,
the peak memory reaches 256 MB, or a queue took other than one message per good line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from bench.fresh import run_fresh
from bench.services import RemoteFal, fal_process, moto_process
from bench.sqs_sink import sqs_sink, stats
from falflow.aws.clients import aws_client
from falflow_tools.emulator import EmulatorConfig
from falflow_tools.local.resources import ProvisionedStack
from falflow_tools.template import function_specs

MEMORY_LIMIT_MB = 256
MODELS = ("fal-ai/flux/dev", "fal-ai/flux/schnell", "fal-ai/kling-video/v2/master/text-to-video")
BAD_LINES = (b'{"custom_id": "bad-json", "model": ', b'{"model": "fal-ai/flux/dev", "input": {}}', b"[1, 2]")
NO_WEBHOOK_RECEIVER = "http://127.0.0.1:9/webhooks/fal"


@dataclass(frozen=True)
class FanOutRun:
    lines: int
    seconds: float
    steps: int
    longest_step_s: float
    peak_rss_mb: float
    rss_before_mb: float
    messages: int  # job messages the queue took
    distinct: int  # the distinct jobs they name
    expected: int  # good lines

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds

    @property
    def sent_once(self) -> bool:
        return self.messages == self.distinct == self.expected


@dataclass(frozen=True)
class BenchResult:
    ours: FanOutRun
    ours_small: FanOutRun  # a tenth of the lines
    floor: FanOutRun
    timeout_s: float  # the submit function's

    @property
    def ratio(self) -> float:
        return self.ours.lines_per_s / self.floor.lines_per_s

    @property
    def memory_growth(self) -> float:
        return self.ours.peak_rss_mb / self.ours_small.peak_rss_mb

    @property
    def within_limits(self) -> bool:
        return (
            self.ours.longest_step_s < self.timeout_s
            and self.ours.peak_rss_mb < MEMORY_LIMIT_MB
            and all(run.sent_once for run in (self.ours, self.ours_small, self.floor))
        )

    def report(self) -> str:
        def row(name: str, run: FanOutRun) -> str:
            return (
                f"{name:30}{run.lines:>9}{run.seconds:>9.1f}{run.lines_per_s:>9.0f}{run.steps:>7}"
                f"{run.longest_step_s:>10.2f}{run.peak_rss_mb:>9.0f}{run.messages:>9}"
            )

        return "\n".join(
            [
                "batch fan-out: a JSONL manifest in S3 (moto) -> a job message per good line on SQS (sink)",
                f"{'':30}{'lines':>9}{'seconds':>9}{'lines/s':>9}{'steps':>7}{'longest s':>10}"
                f"{'peak MB':>9}{'sent':>9}",
                row("ours (functions/submit)", self.ours),
                row("ours, a tenth of the lines", self.ours_small),
                row("floor (boto3: read, send)", self.floor),
                f"lines/s ours/floor: {self.ratio:.2f}x; peak memory {self.ours.peak_rss_mb:.0f} MB "
                f"(x{self.memory_growth:.2f} for 10x the lines) < {MEMORY_LIMIT_MB} MB; longest step "
                f"{self.ours.longest_step_s:.1f} s < the function's {self.timeout_s:.0f} s timeout: "
                + ("OK" if self.within_limits else "NOT MET"),
            ]
        )


def _run_child(mode: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return run_fresh(["bench.fanout_step", mode], spec, env, what=f"{mode} fan-out")


# ------------------------------------------------------------------------------ the measuring


def write_manifest(path: Path, lines: int) -> int:
    """``lines`` lines, the bad ones among them spread through the file; returns the good ones."""
    bad_at = {lines // 4: BAD_LINES[0], lines // 2: BAD_LINES[1], (3 * lines) // 4: BAD_LINES[2]}
    with path.open("wb") as out:
        for n in range(lines):
            if n in bad_at:
                out.write(bad_at[n] + b"\n")
                continue
            line = {
                "custom_id": f"line-{n:06d}",
                "model": MODELS[n % len(MODELS)],
                "input": {"prompt": f"frame {n} of a long animation, in watercolour"},
                "metadata": {"scene": n // 100},
            }
            out.write(json.dumps(line).encode() + b"\n")
    return lines - len(bad_at)


def run(
    lines: int = 100_000,
    *,
    chunk_lines: int = 500,
    stack: ProvisionedStack | None = None,
    fal: RemoteFal | None = None,
) -> BenchResult:
    """Measure both sides; ``stack`` and ``fal`` (already running) are started here when absent."""
    with ExitStack() as started:
        stack = stack or started.enter_context(moto_process())
        fal = fal or started.enter_context(fal_process(EmulatorConfig(webhook_max_retries=0)))
        sink = started.enter_context(sqs_sink())
        return _measure(stack, fal, sink, lines, chunk_lines)


def _measure(stack: ProvisionedStack, fal: RemoteFal, sink: str, lines: int, chunk_lines: int) -> BenchResult:
    secret = str(stack.resolver.parameters["FalKeySecretName"])
    boto3.client("secretsmanager").create_secret(Name=secret, SecretString=fal.api_key)
    env = stack.function_environment(
        "SubmitFunction",
        {
            **fal.urls.env(),
            "WEBHOOK_URL": NO_WEBHOOK_RECEIVER,
            "BATCH_CHUNK_LINES": str(chunk_lines),
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "POWERTOOLS_METRICS_DISABLED": "true",
        },
    )
    small = max(lines // 10, 10)
    return BenchResult(
        ours=_once("ours", stack, env, sink, lines, chunk_lines),
        ours_small=_once("ours", stack, env, sink, small, chunk_lines),
        floor=_once("floor", stack, env, sink, lines, chunk_lines),
        timeout_s=float(function_specs()["SubmitFunction"].timeout),
    )


def _once(
    mode: str, stack: ProvisionedStack, env: dict[str, str], sink: str, lines: int, chunk_lines: int
) -> FanOutRun:
    s3 = aws_client("s3")
    run_id = uuid.uuid4().hex[:8]
    bucket, key = stack.buckets["InputBucket"], f"bench/{run_id}.jsonl"
    with tempfile.TemporaryDirectory() as scratch:
        manifest = Path(scratch) / "manifest.jsonl"
        good = write_manifest(manifest, lines)
        s3.upload_file(str(manifest), bucket, key)
    queue = f"bench-fanout-{run_id}"
    queue_url = f"{sink}/123456789012/{queue}"
    spec: dict[str, Any] = {
        "uri": f"s3://{bucket}/{key}",
        "name": f"bench-{run_id}",
        "bucket": bucket,
        "key": key,
        "queue_url": queue_url,
        "queue_arn": stack.queue("IntakeQueue").arn,
        "chunk_lines": chunk_lines,
    }
    child_env = {**os.environ, **env, "INTAKE_QUEUE_URL": queue_url, "AWS_ENDPOINT_URL_SQS": sink}
    try:
        measured = _run_child(mode, spec, child_env)
    finally:
        s3.delete_object(Bucket=bucket, Key=key)  # moto keeps objects in memory
    taken = stats(sink, queue)
    return FanOutRun(
        lines=lines,
        seconds=float(measured["seconds"]),
        steps=int(measured["steps"]),
        longest_step_s=float(measured["longest_step_s"]),
        peak_rss_mb=float(measured["peak_rss_mb"]),
        rss_before_mb=float(measured["rss_before_mb"]),
        messages=taken["messages"] - taken["continuations"],
        distinct=taken["jobs"],
        expected=good,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--chunk-lines", type=int, default=500, help="lines a step sends (BATCH_CHUNK_LINES)")
    args = parser.parse_args(argv)
    result = run(args.lines, chunk_lines=args.chunk_lines)
    print(result.report())
    return 0 if result.within_limits else 1


if __name__ == "__main__":
    raise SystemExit(main())
