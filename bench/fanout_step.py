"""One side of bench/batch_fanout.py, in a fresh process of its own: its peak memory is the
fan-out's alone, so this module imports only what a side needs.

    python -m bench.fanout_step ours|floor < SPEC_JSON
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from typing import Any

import boto3

from bench.fresh import peak_rss_mb

SENDERS = 8  # as SqsIntakeQueue sends


def _child(mode: str, spec: dict[str, Any]) -> None:
    """Runs in a fresh process: one fan-out, then its figures as JSON on stdout. The seconds are
    the fan-out's work, after its process has started and imported what it needs."""
    before = peak_rss_mb()
    seconds, steps, longest = _ours(spec) if mode == "ours" else _floor(spec)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "steps": steps,
                "longest_step_s": longest,
                "peak_rss_mb": peak_rss_mb(),
                "rss_before_mb": before,
            }
        )
    )


def _ours(spec: dict[str, Any]) -> tuple[float, int, float]:
    # Imported here: the floor's process pays for none of them.
    from falflow.aws.clients import aws_client  # noqa: PLC0415
    from falflow.batches.model import BatchContinuation  # noqa: PLC0415
    from falflow.batches.store import DynamoBatchStore  # noqa: PLC0415
    from falflow_tools.local.handlers import context_for, load_handler  # noqa: PLC0415

    handler = load_handler("SubmitFunction")  # a cold start, as the first step's container has
    context = context_for("SubmitFunction")
    store = DynamoBatchStore(aws_client("dynamodb"), os.environ["BATCH_TABLE"])
    body = json.dumps({"batch": spec["uri"], "name": spec["name"]})
    seconds, steps, longest = 0.0, 0, 0.0
    while True:
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()):  # Powertools' EMF output is not ours
            response = handler(_sqs_event(body, spec["queue_arn"]), context)
        took = time.perf_counter() - started
        seconds, steps, longest = seconds + took, steps + 1, max(longest, took)
        if response != {"batchItemFailures": []}:
            raise SystemExit(f"the fan-out step failed: {response}")
        batch = store.get(spec["name"])
        if batch is None or batch.fan_out_done:
            return seconds, steps, longest
        body = BatchContinuation(batch.name, batch.cursor_line).body()


def _floor(spec: dict[str, Any]) -> tuple[float, int, float]:
    s3 = boto3.client("s3")
    sqs = boto3.client("sqs")
    queue_url, chunk_lines = spec["queue_url"], spec["chunk_lines"]

    def send(group: list[bytes]) -> None:
        entries = [{"Id": str(n), "MessageBody": body.decode()} for n, body in enumerate(group)]
        if sqs.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed"):  # type: ignore[arg-type]
            raise SystemExit("SQS did not take a message")

    chunk: list[bytes] = []
    steps, longest = 0, 0.0
    began = started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=SENDERS) as pool:

        def flush() -> None:
            nonlocal chunk, steps, longest, started
            list(pool.map(send, [chunk[n : n + 10] for n in range(0, len(chunk), 10)]))
            chunk = []
            steps += 1
            longest = max(longest, time.perf_counter() - started)
            started = time.perf_counter()

        body = s3.get_object(Bucket=spec["bucket"], Key=spec["key"])["Body"]
        for line in body.iter_lines(chunk_size=1 << 16):
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict) and "custom_id" in parsed:
                chunk.append(line)
            if len(chunk) == chunk_lines:
                flush()
        if chunk:
            flush()
    return time.perf_counter() - began, steps, longest


def _sqs_event(body: str, queue_arn: str) -> dict[str, Any]:
    now = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": uuid.uuid4().hex,
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now,
                    "ApproximateFirstReceiveTimestamp": now,
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            }
        ]
    }


if __name__ == "__main__":
    _child(sys.argv[1], json.loads(sys.stdin.read()))
