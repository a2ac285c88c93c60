"""Logs, metrics and traces: the one place falflow sets up Powertools' Logger, Metrics and Tracer.

A handler module calls `function_observability()` at import, once per cold start: the function's
Logger, Metrics and Tracer, named by the environment the template sets (``POWERTOOLS_SERVICE_NAME``
per function, ``POWERTOOLS_METRICS_NAMESPACE`` in Globals). Nothing is built at falflow's import, so
a function's names are its own even where several are loaded into one process (as tests do).

Domain modules use Powertools' own conventions, nothing of ours: ``logger = Logger(child=True)`` (a
child of the function's Logger, so its records carry the function's service and keys) and
``metrics = Metrics()`` (every Metrics of a process shares one buffer, which the function's Metrics
flushes with its namespace and service dimension).

Traces: Lambda's active tracing (``Tracing: Active``) records every invocation's segment (its
initialisation, invocation and overhead) and boto3 passes the trace on to SQS and EventBridge,
without any SDK in the function. Powertools' Tracer adds subsegments (one per AWS and fal call) at
the price of the X-Ray SDK's import at every cold start, so it is loaded only where
``TRACE_SUBSEGMENTS`` is true. Why: docs/adr/0024-x-ray-sdk-subsegments-only-on-request.md.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.base import SingleMetric

_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


class ActiveTracingOnly:
    """The Tracer's place where the X-Ray SDK is not loaded: the function's segment is Lambda's
    own, so the handler is left as it is (no subsegment, no ColdStart annotation)."""

    def capture_lambda_handler(
        self,
        lambda_handler: Callable[..., Any] | None = None,
        capture_response: bool | None = None,
        capture_error: bool | None = None,
    ) -> Callable[..., Any]:
        """Tracer's decorator, used the same two ways (bare or with options); changes nothing."""
        if lambda_handler is not None:
            return lambda_handler
        return _unchanged


def _unchanged(handler: Callable[..., Any]) -> Callable[..., Any]:
    return handler


class FunctionObservability(NamedTuple):
    logger: Logger
    metrics: Metrics
    tracer: Tracer | ActiveTracingOnly


def trace_subsegments() -> bool:
    """``TRACE_SUBSEGMENTS`` from the environment (the template's ``TraceSubsegments``)."""
    value = os.environ.get("TRACE_SUBSEGMENTS", "false").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"TRACE_SUBSEGMENTS must be true or false, not {value!r}")
    return value in _TRUE


def function_observability() -> FunctionObservability:
    """The function's Logger, Metrics and Tracer, named from the environment; one per cold start."""
    tracer = Tracer() if trace_subsegments() else ActiveTracingOnly()
    return FunctionObservability(logger=Logger(), metrics=Metrics(), tracer=tracer)


DEFAULT_NAMESPACE: Final = "falflow"
_write_lock = threading.Lock()


def emit_metric_record(name: str, unit: MetricUnit, value: float, **dimensions: str) -> None:
    """One metric as an EMF record of its own, in the function's namespace with its ``service``
    dimension plus ``dimensions``; written as one line under a lock, so any thread may call it (the
    function's shared metric set is left alone: submit and reconcile work on worker threads)."""
    shared = Metrics()  # only read: the function's namespace and service
    metric = SingleMetric(namespace=shared.namespace or DEFAULT_NAMESPACE)
    metric.add_metric(name=name, unit=unit, value=value)
    for dimension, dimension_value in {"service": str(shared.service or "falflow"), **dimensions}.items():
        metric.add_dimension(name=dimension, value=dimension_value)
    line = json.dumps(metric.serialize_metric_set(), separators=(",", ":")) + "\n"
    with _write_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


OTHER_MODEL: Final = "other"


@dataclass(frozen=True)
class JobMetrics:
    """Job duration and cost as EMF metrics (``JobDuration``, ``JobCost``), for all jobs and per model.

    Each value is written twice: with the ``service`` dimension alone (every job of the function)
    and with ``service`` and ``model``. The ``model`` dimension is the model id only for the models
    in ``models`` (env ``METRIC_MODELS``, template parameter ``MetricModels``) and ``other`` for
    any other, so the number of metrics is bounded by that list whatever callers submit.
    """

    models: frozenset[str] = frozenset()

    def model_dimension(self, model: str | None) -> str:
        return model if model in self.models else OTHER_MODEL

    def job_finished(self, model: str | None, seconds: float) -> None:
        """A job reached its final state ``seconds`` after it was created."""
        self._emit("JobDuration", MetricUnit.Seconds, max(seconds, 0.0), model)

    def cost_recorded(self, model: str | None, amount: float) -> None:
        """A job's cost changed by ``amount`` (the whole cost, or a billed cost minus its estimate),
        so a sum over any period counts every job once."""
        if amount:
            self._emit("JobCost", MetricUnit.NoUnit, amount, model)

    def _emit(self, name: str, unit: MetricUnit, value: float, model: str | None) -> None:
        emit_metric_record(name, unit, value)
        emit_metric_record(name, unit, value, model=self.model_dimension(model))
