"""Scheduled reconcile: poll fal for jobs whose webhook never came and move them forward."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.reconcile.runtime import ScheduledReconcile

logger = Logger()
metrics = Metrics()
tracer = Tracer()
reconcile = ScheduledReconcile.from_env()  # once per cold start


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return reconcile(event, context)
