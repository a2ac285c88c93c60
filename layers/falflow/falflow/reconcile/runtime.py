"""What the reconcile handler calls: the reconciler, built once per container from the environment."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.aws import aws_client
from falflow.completion.adapters import EventBridgePublisher
from falflow.completion.finalise import Finaliser
from falflow.completion.runtime import completion_intake
from falflow.fal.queue import FalQueueClient
from falflow.jobs import DynamoJobStore, utcnow
from falflow.reconcile.reconciler import Reconciler
from falflow.reconcile.settings import ReconcileSettings
from falflow.secrets import fal_api_key
from falflow.settings import fal_settings

metrics = Metrics(namespace="falflow")


class SqsIntakeQueue:
    def __init__(self, queue_url: str) -> None:
        self._queue_url = queue_url

    def send(self, body: str) -> None:
        aws_client("sqs").send_message(QueueUrl=self._queue_url, MessageBody=body)


@cache
def reconcile_settings() -> ReconcileSettings:
    return ReconcileSettings()  # read from the environment


@cache
def reconciler() -> Reconciler:
    settings = reconcile_settings()
    jobs = DynamoJobStore(aws_client("dynamodb"), settings.jobs_table, retention=settings.job_retention)
    return Reconciler(
        jobs,
        fal=FalQueueClient(fal_settings(), fal_api_key),
        intake=completion_intake(settings, jobs),
        finaliser=Finaliser(
            jobs, EventBridgePublisher(aws_client("events"), settings.event_bus_name), settings.output_bucket
        ),
        intake_queue=SqsIntakeQueue(settings.intake_queue_url),
        policy=settings.policy(),
    )


def handle_schedule(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One scheduled run (the event's content does not matter); returns the run's counts."""
    reserve_ms = reconcile_settings().reserve_seconds * 1000
    report = reconciler().run(
        utcnow(), time_left=lambda: (context.get_remaining_time_in_millis() - reserve_ms) / 1000
    )
    for action, count in report.actions.items():
        metrics.add_metric(
            name=f"Reconcile{action.value.title().replace('_', '')}", unit=MetricUnit.Count, value=count
        )
    return report.as_dict()
