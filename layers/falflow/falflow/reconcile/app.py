"""The reconcile function's entry: `ReconcileApp`, built once per cold start from the environment, runs
the reconciler once per scheduled invocation (the event's content does not matter)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.aws.clients import aws_client
from falflow.aws.events import EventBridgePublisher
from falflow.completion.finalise import Finaliser
from falflow.fal.platform import FalPlatformClient
from falflow.fal.queue import FalQueueClient
from falflow.jobs import utcnow
from falflow.reconcile.reconciler import ACTOR, Reconciler
from falflow.reconcile.settings import ReconcileSettings
from falflow.secrets import FalKeys
from falflow.submit.duplicates import JobRequests

metrics = Metrics()


class SqsIntakeQueue:
    def __init__(self, queue_url: str) -> None:
        self._queue_url = queue_url

    def send(self, body: str) -> None:
        aws_client("sqs").send_message(QueueUrl=self._queue_url, MessageBody=body)


def build_reconciler(settings: ReconcileSettings) -> Reconciler:
    """Once per cold start: clients, the fal queue client, the shared completion hand-off."""
    jobs = settings.job_store()
    keys = FalKeys(settings)
    fal = FalQueueClient(settings.fal, keys.api_key)
    history = FalPlatformClient(settings.fal, keys.api_key)
    return Reconciler(
        jobs,
        fal=fal,
        handoff=settings.completion_handoff(jobs),
        finaliser=Finaliser(
            jobs, EventBridgePublisher(aws_client("events"), settings.event_bus_name), settings.output_bucket
        ),
        intake_queue=SqsIntakeQueue(settings.intake_queue_url),
        policy=settings.policy(),
        requests=JobRequests(jobs, fal, history, actor=ACTOR),
    )


class ReconcileApp:
    def __init__(self, reconciler: Reconciler, reserve_seconds: float) -> None:
        self._reconciler = reconciler
        self._reserve_ms = reserve_seconds * 1000

    @classmethod
    def from_environment(cls, settings: ReconcileSettings | None = None) -> ReconcileApp:
        """Once per cold start: settings validated, clients and the reconciler made."""
        settings = settings or ReconcileSettings()
        return cls(build_reconciler(settings), settings.reserve_seconds)

    def handle(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        report = self._reconciler.run(
            utcnow(), time_left=lambda: (context.get_remaining_time_in_millis() - self._reserve_ms) / 1000
        )
        for action, count in report.actions.items():
            name = "Reconcile" + action.value.title().replace("_", "")
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=count)
        return report.as_dict()
