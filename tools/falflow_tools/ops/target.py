"""Which falflow the operator commands act on: the local stack or a deployed CloudFormation stack.

Both are described the same way — the template's outputs (bucket, queue and table names), its
parameters (secret names, fal's URLs) and an AWS endpoint — so every command works on either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from falflow.batches.store import DynamoBatchStore
from falflow.jobs import DynamoJobStore
from falflow.secrets import MissingSecretError, key_from_secret
from falflow.settings import FalSettings
from falflow.spend.ledger import DynamoSpendLedger
from falflow.spend.settings import RoutedSpendSettings
from falflow_tools.local.state import LocalState, state_file_path

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

# Exit codes of the operator commands (click itself uses 2 for bad usage).
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3


class OpsError(Exception):
    """A clear, user-facing reason a command could not do its job, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Target:
    name: str
    region: str
    outputs: dict[str, str]
    parameters: dict[str, str]
    fal: FalSettings
    endpoint_url: str | None = None
    events_queue_url: str | None = None
    stack_name: str | None = None  # a deployed stack's CloudFormation name
    log_dir: Path | None = None  # where the local stack's functions write their logs
    session: boto3.session.Session = field(default_factory=boto3.session.Session)
    _clients: dict[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.endpoint_url is not None

    def output(self, name: str) -> str:
        try:
            return self.outputs[name]
        except KeyError:
            raise OpsError(f"{self.name} has no output {name!r} (is it a falflow stack?)") from None

    def _client(self, service: str) -> Any:
        if service not in self._clients:
            kwargs: dict[str, Any] = {"region_name": self.region}
            if self.endpoint_url:
                kwargs["endpoint_url"] = self.endpoint_url
            self._clients[service] = self.session.client(service, **kwargs)  # type: ignore[call-overload]
        return self._clients[service]

    def s3(self) -> S3Client:
        client: S3Client = self._client("s3")
        return client

    def sqs(self) -> SQSClient:
        client: SQSClient = self._client("sqs")
        return client

    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self._client("dynamodb")
        return client

    def events(self) -> EventBridgeClient:
        client: EventBridgeClient = self._client("events")
        return client

    def secretsmanager(self) -> SecretsManagerClient:
        client: SecretsManagerClient = self._client("secretsmanager")
        return client

    def logs(self) -> Any:  # CloudWatch Logs (no type stubs are locked for it)
        return self._client("logs")

    def cloudformation(self) -> Any:
        return self._client("cloudformation")

    def job_store(self) -> DynamoJobStore:
        days = int(self.parameters.get("JobRetentionDays") or 90)
        return DynamoJobStore(
            self.dynamodb(),
            self.output("JobsTableName"),
            retention=timedelta(days=days),
            batch_table=self.outputs.get("BatchTableName"),
        )

    def batch_store(self) -> DynamoBatchStore:
        return DynamoBatchStore(self.dynamodb(), self.output("BatchTableName"))

    def spend_settings(self) -> RoutedSpendSettings:
        """The spend settings the stack's functions get from its parameters (their defaults where
        one is missing), with the run-time configuration read fresh on every look."""
        names = {
            "DailyBudgetUsd": "daily_budget_usd",
            "MonthlyBudgetUsd": "monthly_budget_usd",
            "UnpricedJobs": "unpriced_jobs",
            "EventBusName": "event_bus_name",
        }
        try:
            return RoutedSpendSettings.model_validate(
                {
                    "spend_table": self.output("SpendTableName"),
                    "routes": json.loads(self.parameters.get("Routes") or "{}"),
                    "budget_cache_seconds": 0,
                    # Every field given: a settings class would read a missing one from this shell.
                    **{
                        field: self.parameters.get(p) or RoutedSpendSettings.model_fields[field].default
                        for p, field in names.items()
                    },
                }
            )
        except ValueError as error:  # not JSON, or pydantic's ValidationError
            raise OpsError(f"{self.name}'s budget parameters are not valid: {error}") from error

    def spend_ledger(self) -> DynamoSpendLedger:
        ledger = self.spend_settings().spend_ledger(self.dynamodb())
        assert ledger is not None  # spend_table is the stack's output
        return ledger

    def _fal_key(self, parameter: str, what: str) -> str:
        secret_id = self.parameters.get(parameter, "")
        if not secret_id:
            raise OpsError(f"{self.name} has no fal {what} key configured (parameter {parameter})")
        try:
            value = self.secretsmanager().get_secret_value(SecretId=secret_id)
        except (ClientError, BotoCoreError) as error:
            raise OpsError(f"cannot read the fal {what} key from secret {secret_id!r}: {error}") from error
        try:
            return key_from_secret(
                value.get("SecretString") or value.get("SecretBinary", b""), secret_id, what
            )
        except (MissingSecretError, ValueError) as error:
            raise OpsError(str(error)) from error

    def fal_api_key(self) -> str:
        return self._fal_key("FalKeySecretName", "API")

    def fal_admin_key(self) -> str:
        return self._fal_key("FalAdminKeySecretName", "ADMIN")


def local_target(state_file: Path | None = None) -> Target:
    """The local stack that `falflow local up` (or `falflow demo`) is running."""
    return target_for_local(local_state(state_file))


def local_state(state_file: Path | None = None) -> LocalState:
    """The state file of the running local stack; a clear error when there is none."""
    path = state_file_path(state_file)
    if not path.exists():
        raise OpsError(
            f"no local stack is running (no {path}); start one with `falflow local up`, "
            "or pass --stack NAME for a deployed stack",
            EXIT_UNREACHABLE,
        )
    state = LocalState.read(path)
    if not state.is_alive():
        raise OpsError(
            f"the local stack recorded in {path} is gone (process {state.pid}); start it again "
            "with `falflow local up`",
            EXIT_UNREACHABLE,
        )
    return state


def target_for_local(state: LocalState) -> Target:
    from falflow_tools.local.stack import LOCAL_CREDENTIALS  # noqa: PLC0415 - imports moto

    fal = (
        FalSettings.model_validate(state.fal.model_dump())
        if state.fal
        else _fal_from_parameters(state.parameters)
    )
    return Target(
        name="the local stack",
        region=state.region,
        outputs=state.outputs,
        parameters=state.parameters,
        fal=fal,
        endpoint_url=state.aws_endpoint_url,
        events_queue_url=state.events_queue_url,
        log_dir=Path(state.log_dir) if state.log_dir else None,
        session=boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=state.region,
        ),
    )


def _fal_from_parameters(parameters: dict[str, str]) -> FalSettings:
    """fal's URLs as the stack's parameters set them for its functions (defaults where absent)."""
    names = {
        "FalQueueUrl": "queue_url",
        "FalRestUrl": "rest_url",
        "FalApiUrl": "api_url",
        "FalCdnUrl": "cdn_url",
    }
    return FalSettings.model_validate(
        {field: parameters[p] for p, field in names.items() if parameters.get(p)}
    )


def deployed_target(stack_name: str, *, region: str | None = None) -> Target:
    """A deployed stack, read from CloudFormation with the caller's AWS credentials."""
    session = boto3.session.Session(region_name=region) if region else boto3.session.Session()
    if not session.region_name:
        raise OpsError("no AWS region: set AWS_REGION or pass --region", EXIT_UNREACHABLE)
    cloudformation: Any = session.client("cloudformation")
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        raise OpsError(f"cannot read stack {stack_name!r}: {error}", EXIT_UNREACHABLE) from error
    except BotoCoreError as error:  # no credentials, no network
        raise OpsError(f"cannot reach AWS: {error}", EXIT_UNREACHABLE) from error
    stack = stacks[0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}
    return Target(
        name=f"stack {stack_name}",
        region=session.region_name,
        outputs=outputs,
        parameters=parameters,
        fal=_fal_from_parameters(parameters),
        stack_name=stack_name,
        session=session,
    )


def resolve_target(stack: str | None, *, region: str | None = None, state_file: Path | None = None) -> Target:
    return deployed_target(stack, region=region) if stack else local_target(state_file)
