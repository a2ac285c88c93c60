"""Outputs queue consumer: copy a finished job's files into S3, write result.json, finalise, announce."""

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.completion.runtime import OutputsBatchHandler

logger = Logger()
metrics = Metrics()
tracer = Tracer()
store_outputs = OutputsBatchHandler.from_env()  # once per cold start


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return store_outputs(event, context)
