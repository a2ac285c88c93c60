"""Scheduled collect: fal usage, pricing, per-job cost, analytics, the model catalogue and compute
instances into the usage table and S3. Raises when a part failed (not for a missing ADMIN key),
so the function's Errors alarm fires."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.collect import run_collect

logger = Logger()
metrics = Metrics()
tracer = Tracer()


@logger.inject_lambda_context(correlation_id_path="id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_collect(metrics=metrics, log=logger, time_left_ms=context.get_remaining_time_in_millis)
