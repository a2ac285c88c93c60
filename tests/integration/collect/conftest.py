"""The collect function on moto (resources from template.yaml) against the fal emulator.

`make_collect_stack(fal, admin_key=…)` provisions the stack (with the ADMIN key secret parameter
set when a key is given), stores the keys in moto's Secrets Manager under the names the template's
parameters give, and puts the function's environment, exactly as the template sets it, in place
before the handler is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from moto import mock_aws

from falflow.aws.clients import aws_client
from falflow.fal.platform import BillingEvent, FalPlatformClient
from falflow.fal.queue import FalQueueClient
from falflow.jobs import DynamoJobStore, Job, JobState, utcnow
from falflow.settings import FalSettings
from falflow_tools.emulator import RunningEmulator
from falflow_tools.local.handlers import context_for, forget_cached_configuration, load_handler
from falflow_tools.local.resources import ProvisionedStack, provision
from falflow_tools.template import REPO_ROOT

REGION = "us-east-1"
ADMIN_SECRET_NAME = "falflow/fal-admin-key"
SCHEDULE_EVENT: dict[str, Any] = json.loads((REPO_ROOT / "events/collect/schedule.json").read_text())
# Retries stay on but fast; fault tests rely on the fal client's own backoff.
FAST_RETRIES = {"FAL_MAX_ATTEMPTS": "8", "FAL_BACKOFF_BASE_S": "0.01", "FAL_BACKOFF_CAP_S": "0.05"}


def _forget_configuration() -> None:
    """Settings and secrets are cached per container; each test is a new container."""
    forget_cached_configuration()


@dataclass
class CollectStack:
    stack: ProvisionedStack
    fal: RunningEmulator
    env: dict[str, str]
    job_ids: dict[str, str] = field(default_factory=dict)  # request id -> job id

    @property
    def usage_table(self) -> str:
        return self.stack.tables["UsageTable"]

    @property
    def jobs(self) -> DynamoJobStore:
        return DynamoJobStore(
            aws_client("dynamodb"), self.stack.tables["JobsTable"], retention=timedelta(days=1)
        )

    def invoke(self) -> dict[str, Any]:
        """One scheduled invocation, on a fresh container (a cold start)."""
        _forget_configuration()
        handler = load_handler("CollectFunction")
        result: dict[str, Any] = handler(SCHEDULE_EVENT, context_for("CollectFunction"))
        return result

    def _fal_settings(self) -> FalSettings:
        return FalSettings()  # the function's environment, which points at the emulator

    def submit(self, endpoint_id: str, model_input: dict[str, Any]) -> str:
        """Send a job to the emulator as the submit path would; returns fal's request id."""
        queue = FalQueueClient(self._fal_settings(), lambda: self.fal.api_key)
        return queue.submit(endpoint_id, model_input).request_id

    def record_completed(
        self, request_id: str, endpoint_id: str, model_input: dict[str, Any], files: list[str]
    ) -> Job:
        """The job record the completion path leaves: COMPLETED, with its outputs in S3."""
        job_id = f"job-{len(self.job_ids) + 1}"
        job = Job.new(
            job_id,
            source=f"sqs:{job_id}",
            source_kind="sqs",
            now=utcnow(),
            state=JobState.COMPLETED,
            model=endpoint_id,
            request_id=request_id,
            input=model_input,
            outputs=[f"outputs/{job_id}/{name}" for name in files],
        )
        self.jobs.create(job)
        self.job_ids[request_id] = job_id
        return job

    def run_jobs(self, *specs: tuple[str, dict[str, Any]]) -> list[Job]:
        """Run jobs to the end in the emulator and record them, with the files fal returned."""
        queue = FalQueueClient(self._fal_settings(), lambda: self.fal.api_key)
        submitted = [
            (queue.submit(endpoint, model_input), endpoint, model_input) for endpoint, model_input in specs
        ]
        self.fal.control.wait_idle()
        jobs = []
        for submission, endpoint, model_input in submitted:
            result = queue.result(submission.response_url)
            files = [PurePosixPath(url).name for url in _urls(result)]
            jobs.append(self.record_completed(submission.request_id, endpoint, model_input, files))
        return jobs

    def job(self, request_id: str) -> Job:
        job = self.jobs.get(self.job_ids[request_id])
        assert job is not None
        return job

    def billing_events(self) -> list[BillingEvent]:
        """The emulator's billing events (ground truth), read with its ADMIN key."""
        platform = FalPlatformClient(self._fal_settings(), lambda: self.fal.admin_key)
        now = utcnow()
        return list(platform.iter_billing_events(now - timedelta(days=1), now + timedelta(hours=1)))

    def items(self, pk: str) -> list[dict[str, Any]]:
        deserialize = TypeDeserializer().deserialize
        pages = (
            aws_client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=self.usage_table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": pk}},
            )
        )
        return [{k: deserialize(v) for k, v in item.items()} for page in pages for item in page["Items"]]

    def items_with_prefix(self, prefix: str) -> list[dict[str, Any]]:
        """Every item whose pk starts with `prefix` (a scan: fine in a test, never in the function)."""
        deserialize = TypeDeserializer().deserialize
        pages = aws_client("dynamodb").get_paginator("scan").paginate(TableName=self.usage_table)
        items = [{k: deserialize(v) for k, v in item.items()} for page in pages for item in page["Items"]]
        return [item for item in items if str(item["pk"]).startswith(prefix)]

    def snapshot_rows(self, kind: str) -> dict[str, list[dict[str, Any]]]:
        s3 = aws_client("s3")
        bucket = self.stack.buckets["OutputBucket"]
        keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"collect/{kind}/").get("Contents", [])
        ]
        return {
            key: [
                json.loads(line) for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
            ]
            for key in keys
        }


def _urls(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["url"]] if isinstance(value.get("url"), str) else []
        return found + [u for k, v in value.items() if k != "url" for u in _urls(v)]
    if isinstance(value, list):
        return [u for v in value for u in _urls(v)]
    return []


def decimal_sum(values: Any) -> Decimal:
    return sum((Decimal(str(v)) for v in values), Decimal(0))


MakeCollectStack = Callable[..., CollectStack]


@pytest.fixture
def make_collect_stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeCollectStack]:
    with mock_aws():
        aws_client.cache_clear()
        _forget_configuration()

        def make(fal: RunningEmulator, *, admin_key: str | None = "emulator", **env: str) -> CollectStack:
            admin = fal.admin_key if admin_key == "emulator" else admin_key
            stack = provision(
                region=REGION, parameters={"FalAdminKeySecretName": ADMIN_SECRET_NAME} if admin else {}
            )
            secrets = aws_client("secretsmanager")
            secrets.create_secret(
                Name=str(stack.resolver.parameters["FalKeySecretName"]), SecretString=fal.api_key
            )
            if admin:
                secrets.create_secret(Name=ADMIN_SECRET_NAME, SecretString=admin)
            environment = stack.function_environment("CollectFunction", {**fal.env(), **FAST_RETRIES, **env})
            for name, value in environment.items():
                monkeypatch.setenv(name, value)
            return CollectStack(stack=stack, fal=fal, env=environment)

        yield make
        _forget_configuration()
    aws_client.cache_clear()
