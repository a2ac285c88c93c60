"""Scheduled collect: fal usage, pricing, per-job cost, analytics, the model catalogue and
compute instances into the usage table and S3. Raises when a part failed (not for a missing ADMIN key),
so the function's Errors alarm fires."""

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.collect.app import CollectApp
from falflow.observability import function_observability

logger, metrics, tracer = function_observability()  # this function's, named by its environment
app = CollectApp.from_environment()  # once per cold start: settings validated, clients built


@logger.inject_lambda_context(correlation_id_path="id", clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    return app.handle(event, context)
