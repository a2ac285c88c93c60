"""Failures made visible: the one place a failed record, job or delivery is logged and counted.

Every path calls `report_failure` where it gives up on something for now (a record SQS will retry,
a job the reconciler will try again next run, a webhook answered 5xx) or for good (a message
dead-lettered): one WARNING line with the path, the job id, the error type and the reason (never
the payload, so no input or output of a customer reaches the logs) and one metric,
``RecordsFailed`` or ``MessagesDeadLettered``, under the function's ``service`` dimension. Powertools'
batch processor logs record errors at DEBUG only, hence this.

The metric is its own EMF record (`falflow.observability.emit_metric_record`), so any thread may
report: submit handles its records on worker threads.
"""

from __future__ import annotations

from typing import Final

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit
from pydantic import ValidationError

from falflow.observability import emit_metric_record

logger = Logger(child=True)

RECORDS_FAILED: Final = "RecordsFailed"
MESSAGES_DEAD_LETTERED: Final = "MessagesDeadLettered"
MAX_REASON_CHARS: Final = 500


def report_failure(
    path: str,
    error: BaseException | tuple[str, str],
    *,
    job_id: str | None,
    dead_lettered: bool = False,
    **ids: str | None,
) -> None:
    """Log one WARNING for ``error`` (an exception, or ``(error type, reason)`` where a path decides
    without one) on ``path`` (submit, store, webhook, reconcile, collect) and count it; ``ids`` are
    further identifiers (message id, request id), never content."""
    error_type, reason = error if isinstance(error, tuple) else (type(error).__name__, failure_reason(error))
    logger.warning(
        "message dead-lettered" if dead_lettered else "record failed",
        extra={
            "path": path,
            "job_id": job_id or "-",
            "error_type": error_type,
            "reason": reason[:MAX_REASON_CHARS] or "-",
            "dead_lettered": dead_lettered,
            **{name: value for name, value in ids.items() if value is not None},
        },
    )
    emit_metric_record(MESSAGES_DEAD_LETTERED if dead_lettered else RECORDS_FAILED, MetricUnit.Count, 1)


def failure_reason(error: BaseException) -> str:
    """The error's message, without the input that caused it (pydantic quotes the input it refused)."""
    if isinstance(error, ValidationError):
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        reason = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '-'}: {e['msg']}" for e in problems)
    else:
        reason = str(error)
    return (reason or "-")[:MAX_REASON_CHARS]
