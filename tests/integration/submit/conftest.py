"""The real submit handler against moto's server and the fal emulator.

`submit` loads functions/submit/app.py the way Lambda does (after the environment the template
gives SubmitFunction is in place) and drives it like the SQS event source: a batch in, the
reported failures redelivered with ApproximateReceiveCount incremented, until every record is
consumed (submitted, rejected, failed or dead-lettered).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import boto3
import pytest

from falflow.aws.clients import aws_client
from falflow.jobs import DynamoJobStore, Job, JobState
from falflow_tools.emulator import JobView, RunningEmulator
from falflow_tools.local.handlers import Handler, context_for, forget_cached_configuration, load_handler
from falflow_tools.local.resources import ProvisionedStack
from tests.fixtures.fal_emulator import WebhookSink

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

EVENTS = Path(__file__).resolve().parents[3] / "events" / "submit"
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "submit"  # payloads, not events
GRACE_S = 0.3  # SUBMIT_AMBIGUOUS_GRACE_SECONDS in these tests


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return event


def sample_body(name: str) -> Any:
    """The JSON carried by the first record of an SQS sample event."""
    return json.loads(sample(name)["Records"][0]["body"])


@dataclass
class Delivery:
    """What driving a batch to the end produced."""

    responses: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)  # records still failing after max receives

    @property
    def rounds(self) -> int:
        return len(self.responses)


@dataclass
class SubmitHarness:
    stack: ProvisionedStack
    fal: RunningEmulator
    sink: WebhookSink
    handler: Handler
    environment: dict[str, str]

    @property
    def bucket(self) -> str:
        return self.stack.buckets["InputBucket"]

    @property
    def s3(self) -> S3Client:
        return aws_client("s3")

    @property
    def sqs(self) -> SQSClient:
        return aws_client("sqs")

    @property
    def store(self) -> DynamoJobStore:
        return DynamoJobStore(
            aws_client("dynamodb"),
            self.stack.tables["JobsTable"],
            retention=timedelta(days=1),
            batch_table=self.stack.tables["BatchTable"],
        )

    # --------------------------------------------------------------------------- records

    def record(self, body: str | Mapping[str, Any], *, message_id: str | None = None) -> dict[str, Any]:
        """An SQS record of the intake queue, shaped like the sam-generated sample."""
        record = copy.deepcopy(sample("sqs-job-message.json")["Records"][0])
        record["body"] = body if isinstance(body, str) else json.dumps(body)
        record["messageId"] = message_id or str(uuid.uuid4())
        record["receiptHandle"] = f"handle-{record['messageId']}"
        record["eventSourceARN"] = self.stack.queue("IntakeQueue").arn
        return record

    def s3_event_record(
        self,
        key: str,
        *,
        version_id: str | None,
        etag: str = "e",
        size: int = 1,
        sample_name: str = "sqs-s3-put.json",
    ) -> dict[str, Any]:
        """An S3 notification sample (sam `s3 put`), aimed at an object of the local input bucket."""
        notification = sample_body(sample_name)
        entity = notification["Records"][0]["s3"]
        entity["bucket"].update(name=self.bucket, arn=f"arn:aws:s3:::{self.bucket}")
        entity["object"].update(key=_encode_key(key), eTag=etag, size=size)
        if version_id:
            entity["object"]["versionId"] = version_id
        return self.record(json.dumps(notification))

    def put(
        self,
        key: str,
        body: bytes,
        content_type: str = "application/octet-stream",
        *,
        sample_name: str = "sqs-s3-put.json",
    ) -> dict[str, Any]:
        """Put an object and return the S3 event record announcing it (with its version id, as S3
        sends for a versioned bucket)."""
        put = self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        return self.s3_event_record(
            key,
            version_id=put.get("VersionId"),
            etag=put["ETag"].strip('"'),
            size=len(body),
            sample_name=sample_name,
        )

    def notifications(self) -> list[dict[str, Any]]:
        """What the input bucket's notifications put on the intake queue, as Lambda records."""
        queue = self.stack.queue("IntakeQueue")
        records = []
        while True:
            received = self.sqs.receive_message(
                QueueUrl=queue.url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=0
            )
            messages = received.get("Messages", [])
            if not messages:
                return records
            for message in messages:
                record = self.record(message["Body"], message_id=message["MessageId"])
                record["receiptHandle"] = message["ReceiptHandle"]
                records.append(record)

    # --------------------------------------------------------------------------- driving

    def invoke(self, records: Sequence[dict[str, Any]], handler: Handler | None = None) -> dict[str, Any]:
        run = handler or self.handler
        response: dict[str, Any] = run({"Records": list(records)}, context_for("SubmitFunction"))
        return response

    def another_container(self) -> Handler:
        """The handler loaded again: a second execution environment of the same function."""
        return load_handler("SubmitFunction")

    def deliver(
        self,
        records: Sequence[dict[str, Any]],
        *,
        max_receives: int = 5,
        redelivery_delay_s: float = GRACE_S + 0.2,
        handler: Handler | None = None,
    ) -> Delivery:
        """Invoke, then redeliver what the batch reported failed (receive count + 1), like SQS after
        the visibility timeout, until nothing fails or the last receive is behind us."""
        delivery = Delivery()
        pending = [copy.deepcopy(r) for r in records]
        for receive in range(1, max_receives + 1):
            for record in pending:
                record["attributes"]["ApproximateReceiveCount"] = str(receive)
            response = self.invoke(pending, handler)
            delivery.responses.append(response)
            failed = {item["itemIdentifier"] for item in response["batchItemFailures"]}
            pending = [r for r in pending if r["messageId"] in failed]
            if not pending:
                return delivery
            time.sleep(redelivery_delay_s)
        delivery.left = pending
        return delivery

    # --------------------------------------------------------------------------- looking

    def job(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        assert job is not None, f"no job record {job_id}"
        return job

    def jobs(self) -> list[Job]:
        return [job for state in JobState for job in self.store.list_by_state(state)]

    def fal_jobs_for(self, job_id: str) -> list[JobView]:
        """The emulator's requests whose webhook names ``job_id``."""
        return [job for job in self.fal.control.jobs() if _webhook_job_id(job.webhook_url) == job_id]

    def dead_letters(self) -> list[dict[str, Any]]:
        dlq = self.stack.queue("IntakeDLQ")
        messages: list[dict[str, Any]] = []
        while True:
            received = self.sqs.receive_message(
                QueueUrl=dlq.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
            )
            batch = received.get("Messages", [])
            if not batch:
                return messages
            messages.extend(dict(m) for m in batch)


def _encode_key(key: str) -> str:
    """Object keys as S3 writes them into notifications (form-encoded: a space is "+")."""
    return quote_plus(key, safe="/")


def _webhook_job_id(url: str | None) -> str | None:
    if not url:
        return None
    return parse_qs(urlsplit(url).query).get("job_id", [None])[0]


@pytest.fixture
def submit_env() -> dict[str, str]:
    """Overrides a test may add to before `submit` loads the handler."""
    return {}


@pytest.fixture
def submit_fal(fal_emulator: RunningEmulator) -> RunningEmulator:
    """The fal the handler talks to; a test module may override it (e.g. a slower one)."""
    return fal_emulator


@pytest.fixture
def submit(
    moto_server: ProvisionedStack,
    submit_fal: RunningEmulator,
    webhook_sink: WebhookSink,
    submit_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[SubmitHarness]:
    secret_name = str(moto_server.resolver.parameters["FalKeySecretName"])
    boto3.client("secretsmanager").create_secret(Name=secret_name, SecretString=submit_fal.api_key)
    environment = moto_server.function_environment(
        "SubmitFunction",
        {
            **submit_fal.env(),
            "WEBHOOK_URL": webhook_sink.url,
            "SUBMIT_AMBIGUOUS_GRACE_SECONDS": str(GRACE_S),
            # Fail fast in tests: fal's own retries are covered by the fal client's tests.
            "FAL_READ_TIMEOUT_S": "2",
            "FAL_CONNECT_TIMEOUT_S": "1",
            "FAL_BACKOFF_BASE_S": "0.01",
            "FAL_BACKOFF_CAP_S": "0.05",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            **submit_env,
        },
    )
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    forget_cached_configuration()
    handler = load_handler("SubmitFunction")  # a cold start, after the environment is in place
    yield SubmitHarness(moto_server, submit_fal, webhook_sink, handler, environment)
    forget_cached_configuration()
