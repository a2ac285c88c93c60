"""Submit: S3 drops and SQS job messages from the intake queue become fal queue submissions."""

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.observability import function_observability
from falflow.submit.app import SubmitApp

logger, metrics, tracer = function_observability()  # this function's, named by its environment
app = SubmitApp.from_environment()  # once per cold start: settings validated, clients built


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: LambdaContext) -> Mapping[str, Any]:
    return app.handle(event, context)
