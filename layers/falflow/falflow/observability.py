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

from typing import NamedTuple

from aws_lambda_powertools import Logger, Metrics, Tracer


class FunctionObservability(NamedTuple):
    logger: Logger
    metrics: Metrics
    tracer: Tracer


def function_observability() -> FunctionObservability:
    """The function's Logger, Metrics and Tracer, named from the environment; one per cold start."""
    return FunctionObservability(logger=Logger(), metrics=Metrics(), tracer=Tracer())
