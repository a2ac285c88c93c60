"""Logs, metrics and traces: the one place falflow sets up Powertools' Logger, Metrics and Tracer.

A handler module calls `function_observability()` at import, once per cold start: the function's
Logger, Metrics and Tracer, named by the environment the template sets (``POWERTOOLS_SERVICE_NAME``
per function, ``POWERTOOLS_METRICS_NAMESPACE`` in Globals). Nothing is built at falflow's import, so
a function's names are its own even where several are loaded into one process (as tests do).

Domain modules use Powertools' own conventions, nothing of ours: ``logger = Logger(child=True)`` (a
child of the function's Logger, so its records carry the function's service and keys) and
``metrics = Metrics()`` (every Metrics of a process shares one buffer, which the function's Metrics
flushes with its namespace and service dimension).
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from typing import Final, NamedTuple

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.base import SingleMetric


class FunctionObservability(NamedTuple):
    logger: Logger
    metrics: Metrics
    tracer: Tracer


def function_observability() -> FunctionObservability:
    """The function's Logger, Metrics and Tracer, named from the environment; one per cold start."""
    return FunctionObservability(logger=Logger(), metrics=Metrics(), tracer=Tracer())


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
