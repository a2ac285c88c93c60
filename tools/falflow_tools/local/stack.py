"""`LocalStack`: the whole pipeline on one machine, with no AWS account, no Docker and no fal key.

- moto's server on loopback, in a process of its own (`AwsServer`), plays S3, SQS, DynamoDB,
  EventBridge and Secrets Manager, with every resource created from template.yaml (`provision`);
- the fal emulator plays fal (or real fal, given a real `FAL_KEY`);
- each function of the template runs in its own worker process with the environment the template
  gives it, resolved to the local names, and is driven the way Lambda drives it: an SQS event
  source per `SQS` event, the front door for `HttpApi` events, a timer per `ScheduleV2` event.

Only local endpoints are overridden in a function's environment: `AWS_ENDPOINT_URL`, fal's base
URLs, the API Gateway origin in URLs (the front door) and what the caller adds explicitly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import boto3

from falflow_tools.local.aws_server import AwsServer
from falflow_tools.local.front_door import FrontDoor, HttpReply, json_reply, routes_from_template
from falflow_tools.local.resources import (
    ProvisionedStack,
    QueueInfo,
    create_event_tap,
    create_fal_secrets,
    provision,
    set_visibility_timeout,
    template_outputs,
)
from falflow_tools.local.schedules import ScheduleRunner, ScheduleSpec, rate_seconds
from falflow_tools.local.sqs_source import SqsEventSource, SqsSourceSettings
from falflow_tools.local.state import FalEndpoints, LocalState
from falflow_tools.local.timings import (
    LocalTiming,
    receipt_window_s,
    scaled_timings,
    template_consumers,
)
from falflow_tools.local.workers import FunctionRuntime, InvocationResult, LocalFunction
from falflow_tools.template import FunctionSpec, function_specs, load_template

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

    from falflow_tools.emulator import EmulatorConfig, RunningEmulator

log = logging.getLogger("falflow.local")

# moto accepts any credentials; these make sure nothing local ever signs with real ones.
LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "falflow-local",
    "AWS_SECRET_ACCESS_KEY": "falflow-local",  # nosec B105
    "AWS_SESSION_TOKEN": "falflow-local",  # nosec B105
}
# Locally the admin key gets a secret too (the template's default leaves it empty, which turns
# usage collection off); a deployed stack names its own.
LOCAL_ADMIN_SECRET_NAME = "falflow/fal-admin-key"  # noqa: S105 - a name, not a secret  # nosec B105


@dataclass
class LocalStackConfig:
    """How to run the local stack. The defaults follow the template; the demo and tests shorten."""

    host: str = "127.0.0.1"
    aws_port: int = 0
    front_door_port: int = 0
    emulator_port: int = 0
    region: str = "us-east-1"
    prefix: str = "falflow"
    # Template parameter values (e.g. ReconcileAfterMinutes), as `sam deploy --parameter-overrides`.
    parameters: dict[str, str] = field(default_factory=dict)
    # Visibility timeout of the queue with the template's shortest (the intake queue), so failed
    # messages come back in seconds; the other queues, and the submit's and store's timeouts and
    # leases, are scaled with it in the template's ratios (falflow_tools.local.timings). None: the
    # template's.
    visibility_timeout_s: int | None = None
    # Seconds between runs of a function's schedule; 0 turns it off; absent: the template's rate.
    schedule_intervals_s: dict[str, float] = field(default_factory=dict)
    # Workers (concurrent invocations) per function.
    concurrency: dict[str, int] = field(default_factory=dict)
    # Extra environment per function, on top of the template's (e.g. a test's knobs).
    environment: dict[str, dict[str, str]] = field(default_factory=dict)
    # None: the emulator with its defaults. Ignored when `fal_key` is set.
    emulator: EmulatorConfig | None = None
    fal_key: str | None = None
    fal_admin_key: str | None = None
    # Where each function's output (Powertools logs, metrics) goes; None: this process's stdout.
    log_dir: Path | None = None
    state_file: Path | None = None
    poll_wait_s: int = 1
    # Start every worker before accepting events (cold starts up front).
    warm: bool = True
    # How long a worker's cold start may take before it counts as failed (a loaded machine is slow).
    init_timeout_s: float = 30.0
    # How many times S3 delivers each event notification (it promises at least once).
    s3_notification_copies: int = 1
    on_report: Callable[[str], None] | None = None

    @classmethod
    def from_environment(cls, **overrides: Any) -> LocalStackConfig:
        """Real fal when `FAL_KEY` is set (and `FAL_ADMIN_KEY` for usage), else the emulator."""
        config = cls(**overrides)
        if config.fal_key is None and os.environ.get("FAL_KEY"):
            config.fal_key = os.environ["FAL_KEY"]
            config.fal_admin_key = config.fal_admin_key or os.environ.get("FAL_ADMIN_KEY") or None
        return config


def lambda_environment(spec: FunctionSpec, region: str) -> dict[str, str]:
    """What the Lambda runtime itself puts in every function's environment."""
    return {
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_LAMBDA_FUNCTION_NAME": spec.logical_id,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.logical_id}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "local",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "_HANDLER": spec.handler,
        # LAMBDA_TASK_ROOT is left out on purpose: it would switch Powertools' Tracer on, and
        # there is no X-Ray daemon here.
        # Never the developer's AWS profile: the functions only ever talk to moto.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        **LOCAL_CREDENTIALS,
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


class LocalStack:
    """Start with `with LocalStack(config) as stack:`; everything stops when the block ends."""

    def __init__(self, config: LocalStackConfig | None = None) -> None:
        self.config = config or LocalStackConfig.from_environment()
        self.template = load_template()
        self.specs = function_specs(self.template)
        self.aws_endpoint_url = ""
        self._resources: ProvisionedStack | None = None
        self.functions: dict[str, LocalFunction] = {}
        self.sources: dict[str, SqsEventSource] = {}
        # Queue-driven functions' local visibility, timeout and lease (when visibility_timeout_s is set).
        self.timings: dict[str, LocalTiming] = {}
        self.schedules: dict[str, ScheduleRunner] = {}
        self.events_queue: QueueInfo | None = None
        self.emulator: RunningEmulator | None = None
        self._front_door: FrontDoor | None = None
        self.reports: list[str] = []
        self.aws_server: AwsServer | None = None
        self._session = boto3.session.Session(
            aws_access_key_id=LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=LOCAL_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=LOCAL_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.config.region,
        )
        self._started = False

    @property
    def resources(self) -> ProvisionedStack:
        if self._resources is None:
            raise RuntimeError("the local stack is not running")
        return self._resources

    @property
    def front_door(self) -> FrontDoor:
        if self._front_door is None:
            raise RuntimeError("the local stack is not running")
        return self._front_door

    # ---------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._started:
            raise RuntimeError("this local stack is already running")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        config = self.config
        started = time.monotonic()
        self.aws_server = AwsServer(
            config.host, config.aws_port, s3_notification_copies=config.s3_notification_copies
        )
        self.aws_server.start(timeout_s=config.init_timeout_s)
        self.aws_endpoint_url = self.aws_server.url

        parameters: dict[str, Any] = dict(config.parameters)
        if not config.fal_key or config.fal_admin_key:
            parameters.setdefault("FalAdminKeySecretName", LOCAL_ADMIN_SECRET_NAME)
        self._resources = provision(
            session=self._session,
            endpoint_url=self.aws_endpoint_url,
            region=config.region,
            prefix=config.prefix,
            parameters=parameters,
            template=self.template,
        )
        sqs = self.client("sqs")
        if config.visibility_timeout_s is not None:
            self.timings = scaled_timings(template_consumers(self.template), config.visibility_timeout_s)
            for settings in self._sqs_sources():
                logical = self._queue_logical_id(settings.queue_arn)
                set_visibility_timeout(
                    self.resources, sqs, logical, self.timings[settings.function].visibility_s
                )
        self.events_queue = create_event_tap(self.resources, self.client("events"), sqs, prefix=config.prefix)

        fal_env = self._start_fal()
        self._front_door = FrontDoor(
            routes_from_template({logical: spec.events for logical, spec in self.specs.items()}),
            self.invoke,
            host=config.host,
            port=config.front_door_port,
            control=self._control,
        )
        for logical, spec in self.specs.items():
            env = self.resources.function_environment(logical, self._local_overrides(logical, fal_env))
            runtime = FunctionRuntime(
                name=logical,
                code_dir=spec.code_dir,
                handler=spec.handler,
                environment={**lambda_environment(spec, config.region), **env},
                timeout_s=self.timings[logical].timeout_s if logical in self.timings else float(spec.timeout),
                memory_mb=spec.memory,
                log_path=config.log_dir / f"{logical}.log" if config.log_dir else None,
                init_timeout_s=config.init_timeout_s,
            )
            self.functions[logical] = LocalFunction(
                runtime, concurrency=config.concurrency.get(logical, 1), on_crash=self._report
            )
        if config.warm:
            self._warm_all()

        self.front_door.start()
        for settings in self._sqs_sources():
            source = SqsEventSource(
                settings,
                self.functions[settings.function].invoke,
                sqs,
                poll_wait_s=config.poll_wait_s,
            )
            source.start(config.concurrency.get(settings.function, 1))
            self.sources[settings.function] = source
        for schedule in self._schedule_specs():
            default = rate_seconds(schedule.expression)
            interval = config.schedule_intervals_s.get(schedule.function, default)
            runner = ScheduleRunner(schedule, self.functions[schedule.function].invoke, interval_s=interval)
            runner.start()
            self.schedules[schedule.function] = runner
        if config.state_file is not None:
            self.state().write(config.state_file)
        log.info("local stack up in %.1f s", time.monotonic() - started)

    def stop(self) -> None:
        """Stop everything, in the reverse order of starting; safe to call more than once."""
        for runner in self.schedules.values():
            runner.stop()
        for source in self.sources.values():
            source.request_stop()
        for source in self.sources.values():
            source.stop()
        if self._front_door is not None:
            self._front_door.stop()
            self._front_door = None
        # Every worker is asked first, so they wind down together rather than one by one.
        for function in self.functions.values():
            for worker in function.workers:
                worker.request_stop()
        for function in self.functions.values():
            function.stop()
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None
        if self.aws_server is not None:
            self.aws_server.stop()
            self.aws_server = None
        if self.config.state_file is not None and self._started:
            with contextlib.suppress(FileNotFoundError):
                current = LocalState.read(self.config.state_file)
                if current.pid == os.getpid():  # never remove another stack's file
                    self.config.state_file.unlink()
        self.sources.clear()
        self.schedules.clear()
        self.functions.clear()

    def _warm_all(self) -> None:
        errors: list[BaseException] = []

        def warm(function: LocalFunction) -> None:
            try:
                function.warm()
            except Exception as error:  # noqa: BLE001 - collected and re-raised below
                errors.append(error)

        threads = [threading.Thread(target=warm, args=(f,), daemon=True) for f in self.functions.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------------------ fal

    def _start_fal(self) -> dict[str, str]:
        """Start the emulator (or use real fal) and store the keys; return the FAL_* overrides."""
        secrets = self.client("secretsmanager")
        if self.config.fal_key:
            create_fal_secrets(
                self.resources, secrets, api_key=self.config.fal_key, admin_key=self.config.fal_admin_key
            )
            return {}
        from falflow_tools.emulator import run_emulator  # noqa: PLC0415 - only without real fal

        self.emulator = run_emulator(
            self.config.emulator, host=self.config.host, port=self.config.emulator_port
        )
        create_fal_secrets(
            self.resources, secrets, api_key=self.emulator.api_key, admin_key=self.emulator.admin_key
        )
        return self.emulator.env()

    def _local_overrides(self, logical_id: str, fal_env: Mapping[str, str]) -> dict[str, str]:
        template_env = self.resources.function_environment(logical_id)
        overrides: dict[str, str] = {"AWS_ENDPOINT_URL": self.aws_endpoint_url, **fal_env}
        # URLs that point at the deployed HTTP API point at the front door instead.
        api_origin = self._api_origin()
        for name, value in template_env.items():
            if api_origin in value:
                overrides[name] = value.replace(api_origin, self.front_door.url)
        # The store may fetch outputs only from fal's media hosts over https; locally the emulator's
        # CDN on loopback http is trusted by exact origin.
        if "MEDIA_HOSTS" in template_env and self.emulator is not None:
            overrides["MEDIA_ALLOW_LOCAL"] = self.emulator.base_url
        if logical_id in self.timings:
            overrides.update(self.timings[logical_id].environment)
        if "EVENT_BUS_NAME" in template_env:
            overrides.update(self._receipt_window())
        overrides.update(self.config.environment.get(logical_id, {}))
        return overrides

    def _receipt_window(self) -> dict[str, str]:
        """A publisher of completion events waits for an event's receipt until a reconcile run
        must have read it: receipts are read as each run starts, and runs follow each other, so the
        gap between two reads is at most the interval plus one run (its timeout). The template's
        900 s covers its 5-minute rate and 300 s timeout; here the interval is shorter."""
        reconcile = next((s for s in self._schedule_specs() if s.function == "ReconcileFunction"), None)
        if reconcile is None:
            return {}
        template_s = rate_seconds(reconcile.expression)
        local_s = self.config.schedule_intervals_s.get("ReconcileFunction", template_s)
        if not template_s or not local_s or local_s == template_s:
            return {}
        window = receipt_window_s(local_s, float(self.specs["ReconcileFunction"].timeout))
        return {"EVENT_RECEIPT_WINDOW_SECONDS": f"{window:.3f}"}

    def _api_origin(self) -> str:
        api = self.resources.resolver.refs.get("HttpApi", "")
        return f"https://{api}.execute-api.{self.config.region}.amazonaws.com"

    # ------------------------------------------------------------------------ event sources

    def _queue_logical_id(self, arn: str) -> str:
        return next(q for q, info in self.resources.queues.items() if info.arn == arn)

    def _sqs_sources(self) -> Iterator[SqsSourceSettings]:
        for logical, spec in self.specs.items():
            for event in spec.events.values():
                if event.get("Type") != "SQS":
                    continue
                props = self.resources.resolver.resolve(event["Properties"])
                arn = props["Queue"]
                info = self.resources.queues[self._queue_logical_id(arn)]
                yield SqsSourceSettings.from_event(
                    logical, props, queue_url=info.url, queue_arn=info.arn, region=self.config.region
                )

    def _schedule_specs(self) -> Iterator[ScheduleSpec]:
        for logical, spec in self.specs.items():
            for name, event in spec.events.items():
                if event.get("Type") in ("ScheduleV2", "Schedule"):
                    props = self.resources.resolver.resolve(event.get("Properties", {}))
                    if "Schedule" in props and "ScheduleExpression" not in props:
                        props["ScheduleExpression"] = props["Schedule"]
                    yield ScheduleSpec.from_event(
                        logical, name, props, region=self.config.region, stack=self.config.prefix
                    )

    # ------------------------------------------------------------------------------ use

    def invoke(self, logical_id: str, event: Any) -> InvocationResult:
        """Invoke a function directly (RequestResponse), as `sam local invoke` would."""
        return self.functions[logical_id].invoke(event)

    def run_schedule(self, logical_id: str) -> InvocationResult:
        """Run a function's schedule now (the reconcile or collect tick) and wait for it."""
        return self.schedules[logical_id].run_now()

    def _control(self, method: str, path: str) -> HttpReply:
        """`POST schedules/<FunctionLogicalId>/run`: run that schedule now (`falflow local run`)."""
        parts = path.split("/")
        if method != "POST" or len(parts) != 3 or parts[0] != "schedules" or parts[2] != "run":
            return json_reply(404, {"message": "Not Found"})
        runner = self.schedules.get(parts[1])
        if runner is None:
            return json_reply(404, {"message": f"no schedule of {parts[1]}", "known": sorted(self.schedules)})
        result = runner.run_now()
        return json_reply(
            200,
            {
                "function": parts[1],
                "request_id": result.request_id,
                "payload": result.payload,
                "error": result.error,
                "duration_s": result.duration_s,
            },
        )

    def client(self, service: str) -> Any:
        """A boto3 client on the local AWS endpoint."""
        return self._session.client(service, endpoint_url=self.aws_endpoint_url)  # type: ignore[call-overload]

    def s3(self) -> S3Client:
        client: S3Client = self.client("s3")
        return client

    def sqs(self) -> SQSClient:
        client: SQSClient = self.client("sqs")
        return client

    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = self.client("dynamodb")
        return client

    def secretsmanager(self) -> SecretsManagerClient:
        client: SecretsManagerClient = self.client("secretsmanager")
        return client

    def outputs(self) -> dict[str, str]:
        """The template's outputs, resolved locally (the webhook URL is the front door's)."""
        origin = self._api_origin()
        return {
            k: v.replace(origin, self.front_door.url) for k, v in template_outputs(self.resources).items()
        }

    def state(self) -> LocalState:
        fal = None
        if self.emulator is not None:
            urls = self.emulator.urls
            fal = FalEndpoints(
                queue_url=urls.queue_url,
                run_url=urls.run_url,
                rest_url=urls.rest_url,
                api_url=urls.api_url,
                cdn_url=urls.cdn_url,
                queue_backup_url=urls.queue_backup_url,
                run_backup_url=urls.run_backup_url,
            )
        return LocalState(
            pid=os.getpid(),
            started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            region=self.config.region,
            aws_endpoint_url=self.aws_endpoint_url,
            front_door_url=self.front_door.url,
            outputs=self.outputs(),
            parameters={k: str(v) for k, v in self.resources.resolver.parameters.items()},
            events_queue_url=self.events_queue.url if self.events_queue else None,
            fal=fal,
            emulator_url=self.emulator.base_url if self.emulator is not None else None,
            log_dir=str(self.config.log_dir) if self.config.log_dir else None,
        )

    def _report(self, message: str) -> None:
        self.reports.append(message)
        if self.config.on_report is not None:
            self.config.on_report(message)
