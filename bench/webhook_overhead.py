"""Benchmark: the webhook handler's time per delivery against the floor of its own AWS calls.

    .venv/bin/python -m bench.webhook_overhead [--deliveries 300]

moto's server (in a process of its own, resources from template.yaml) stands in for AWS. Measured
in the same run, interleaved delivery by delivery so drift hits both alike:

- the handler: the real functions/webhook/app.py, warm, given a signed API Gateway HTTP API event
  (the committed sample events/webhook/ok.json re-signed per job with the committed TEST key) for
  a SUBMITTED job: it verifies the ED25519 signature, binds the request id, keeps the raw body in
  the inbox, records the completion, hands it to the outputs queue and marks the hand-off;
- the floor: the same five AWS calls (UpdateItem, PutObject, UpdateItem, SendMessage, UpdateItem)
  with the same payloads, made directly with the same boto3 clients on the same moto server.

The ratio is handler / floor: what verification, parsing, the domain code and Powertools add.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from bench.fresh import REPO
from bench.services import moto_process
from falflow.aws.clients import aws_client
from falflow.completion.keys import inbox_key
from falflow.jobs import DynamoJobStore, Job, JobState, isoformat, utcnow
from falflow.webhook.token import JOB_ID_PARAMETER, TOKEN_PARAMETER, job_token
from falflow_tools.emulator.signing import webhook_message
from falflow_tools.local.handlers import context_for, load_handler
from falflow_tools.local.resources import ProvisionedStack

SAMPLES = REPO / "events" / "webhook"
TEST_KEYS = REPO / "samples" / "webhook"  # the samples' TEST key and its JWKS
USER_ID = "falflow-test-user"


@contextmanager
def jwks_server() -> Iterator[str]:
    """Serves the committed TEST JWKS (fetched once, at the handler's cold start)."""
    document = (TEST_KEYS / "jwks.json").read_bytes()

    class Serve(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


class Deliveries:
    """Signed copies of the committed OK sample, one per job."""

    def __init__(self, token_key: bytes) -> None:
        self._token_key = token_key  # the stack's webhook token secret: each URL carries its job's token
        self._template = json.loads((SAMPLES / "ok.json").read_text())
        key = load_pem_private_key((TEST_KEYS / "test-signing-key.pem").read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        self._key = key

    def body(self, request_id: str) -> bytes:
        payload = json.loads(self._template["body"])
        payload.update(request_id=request_id, gateway_request_id=request_id)
        return json.dumps(payload, separators=(",", ":")).encode()

    def event(self, job_id: str, request_id: str) -> dict[str, Any]:
        body = self.body(request_id)
        timestamp = str(int(time.time()))
        signature = self._key.sign(webhook_message(request_id, USER_ID, timestamp, body)).hex()
        event: dict[str, Any] = json.loads(json.dumps(self._template))
        event["headers"].update(
            {
                "x-fal-webhook-request-id": request_id,
                "x-fal-webhook-user-id": USER_ID,
                "x-fal-webhook-timestamp": timestamp,
                "x-fal-webhook-signature": signature,
            }
        )
        event["body"] = body.decode()
        query = {JOB_ID_PARAMETER: job_id, TOKEN_PARAMETER: job_token(self._token_key, job_id)}
        event["queryStringParameters"] = query
        event["rawQueryString"] = urlencode(query)
        return event


def floor_calls(stack: ProvisionedStack, deliveries: Deliveries) -> Callable[[str, str], None]:
    """The handler's five AWS calls for a first delivery, made directly."""
    dynamodb, s3, sqs = aws_client("dynamodb"), aws_client("s3"), aws_client("sqs")
    table, bucket, queue = (
        stack.tables["JobsTable"],
        stack.buckets["OutputBucket"],
        stack.queue("OutputsQueue").url,
    )

    def calls(job_id: str, request_id: str) -> None:
        key, now = inbox_key(job_id, request_id, "webhook"), isoformat(utcnow())
        item_key = {"job_id": {"S": job_id}}
        dynamodb.update_item(
            TableName=table,
            Key=item_key,
            UpdateExpression="SET #r = :r",
            ConditionExpression="attribute_exists(job_id) AND (attribute_not_exists(#r) OR #r = :r)",
            ExpressionAttributeNames={"#r": "request_id"},
            ExpressionAttributeValues={":r": {"S": request_id}},
            ReturnValues="ALL_NEW",
        )
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=deliveries.body(request_id),
            ContentType="application/json",
            Metadata={"fal-request-id": request_id, "source": "webhook"},
        )
        dynamodb.update_item(
            TableName=table,
            Key=item_key,
            UpdateExpression="SET #s = :s, #k = :rank, #t = :now, #st.#S = :now, #ck = :key, #cs = :src",
            ConditionExpression=(
                "attribute_exists(job_id) AND #k < :rank AND #r = :r AND attribute_not_exists(#ck)"
            ),
            ExpressionAttributeNames={
                "#s": "state",
                "#k": "state_rank",
                "#t": "state_changed_at",
                "#st": "state_times",
                "#S": "STORING",
                "#ck": "completion_key",
                "#cs": "completion_source",
                "#r": "request_id",
            },
            ExpressionAttributeValues={
                ":s": {"S": "STORING"},
                ":rank": {"N": "3"},
                ":now": {"S": now},
                ":key": {"S": key},
                ":src": {"S": "webhook"},
                ":r": {"S": request_id},
            },
            ReturnValues="ALL_NEW",
        )
        sqs.send_message(
            QueueUrl=queue,
            MessageBody=json.dumps({"job_id": job_id, "request_id": request_id, "completion_key": key}),
        )
        dynamodb.update_item(
            TableName=table,
            Key=item_key,
            UpdateExpression="SET #e = :now",
            ConditionExpression="attribute_exists(job_id) AND #ck = :key",
            ExpressionAttributeNames={"#e": "completion_enqueued_at", "#ck": "completion_key"},
            ExpressionAttributeValues={":now": {"S": now}, ":key": {"S": key}},
            ReturnValues="ALL_NEW",
        )

    return calls


@dataclass(frozen=True)
class Timings:
    samples_s: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_s) * 1000

    @property
    def p90_ms(self) -> float:
        return statistics.quantiles(self.samples_s, n=10)[-1] * 1000

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.samples_s) * 1000


@dataclass(frozen=True)
class BenchResult:
    deliveries: int
    handler: Timings
    floor: Timings
    statuses: dict[int, int]
    recorded: int  # jobs the handler left STORING with the hand-off marked

    @property
    def ratio(self) -> float:
        return self.handler.median_ms / self.floor.median_ms

    def report(self) -> str:
        rows = [
            f"webhook: {self.deliveries} deliveries, the warm handler vs the same AWS calls made directly "
            "(moto server)",
            f"{'':28}{'median ms':>11}{'p90 ms':>10}{'mean ms':>10}",
            f"{'handler (functions/webhook)':28}{self.handler.median_ms:>11.2f}{self.handler.p90_ms:>10.2f}"
            f"{self.handler.mean_ms:>10.2f}",
            f"{'floor (5 direct AWS calls)':28}{self.floor.median_ms:>11.2f}{self.floor.p90_ms:>10.2f}"
            f"{self.floor.mean_ms:>10.2f}",
            f"overhead ratio (median): {self.ratio:.2f}x  "
            f"(+{self.handler.median_ms - self.floor.median_ms:.2f} ms per delivery)",
            f"responses: {self.statuses}; recorded and handed over: {self.recorded}/{self.deliveries}",
        ]
        return "\n".join(rows)


def run(deliveries: int = 300, warmup: int = 20, *, stack: ProvisionedStack | None = None) -> BenchResult:
    with ExitStack() as started:
        stack = stack or started.enter_context(moto_process())
        jwks_url = started.enter_context(jwks_server())
        # The handler writes its metrics (EMF) to stdout as in Lambda: part of its cost, not of the report.
        started.enter_context(contextlib.redirect_stdout(started.enter_context(open(os.devnull, "w"))))
        return _measure(stack, jwks_url, deliveries, warmup)


def _measure(stack: ProvisionedStack, jwks_url: str, count: int, warmup: int) -> BenchResult:
    overrides = {
        "FAL_JWKS_URLS": json.dumps([jwks_url]),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    os.environ.update(stack.function_environment("WebhookFunction", overrides))
    handler = load_handler("WebhookFunction")  # after the environment: a cold start
    context = context_for("WebhookFunction")
    jobs = DynamoJobStore(aws_client("dynamodb"), stack.tables["JobsTable"], retention=timedelta(days=1))
    run_id = uuid.uuid4().hex[:6]

    def submitted_job(name: str) -> tuple[str, str]:
        job_id, request_id = f"bench-{run_id}-{name}", str(uuid.uuid4())
        jobs.create(
            Job.new(job_id, source="sqs:bench", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
        )
        jobs.bind_request(job_id, request_id)
        jobs.confirm_submission(job_id, request_id, now=utcnow())
        return job_id, request_id

    secret = aws_client("secretsmanager").get_secret_value(SecretId=stack.secrets["WebhookTokenSecret"])
    deliveries = Deliveries(secret["SecretString"].encode())
    floor = floor_calls(stack, deliveries)
    for n in range(warmup):  # imports, JWKS, connections: a busy function is warm
        handler(deliveries.event(*submitted_job(f"warm-{n}")), context)
        floor(*submitted_job(f"warm-floor-{n}"))

    handler_times: list[float] = []
    floor_times: list[float] = []
    statuses: dict[int, int] = {}
    measured: list[str] = []
    for n in range(count):
        job_id, request_id = submitted_job(f"h-{n}")
        event = deliveries.event(job_id, request_id)  # fal's signing is not our time
        started = time.perf_counter()
        response = handler(event, context)
        handler_times.append(time.perf_counter() - started)
        statuses[response["statusCode"]] = statuses.get(response["statusCode"], 0) + 1
        measured.append(job_id)

        floor_job = submitted_job(f"f-{n}")
        started = time.perf_counter()
        floor(*floor_job)
        floor_times.append(time.perf_counter() - started)

    recorded = sum(
        1
        for job_id in measured
        if (job := jobs.get(job_id)) and job.state is JobState.STORING and job.completion_enqueued_at
    )
    return BenchResult(count, Timings(handler_times), Timings(floor_times), statuses, recorded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args(argv)
    result = run(args.deliveries, args.warmup)
    print(result.report())
    return 0 if result.statuses == {200: args.deliveries} and result.recorded == args.deliveries else 1


if __name__ == "__main__":
    raise SystemExit(main())
