"""Logs, metrics and traces: the one place falflow sets up Powertools' Logger, Metrics and Tracer.

- A handler module calls `function_observability()` at import, once per cold start: the function's
  Logger, Metrics and Tracer, named by the environment the template sets (``POWERTOOLS_SERVICE_NAME``
  per function, ``POWERTOOLS_METRICS_NAMESPACE`` in Globals). Nothing is built at falflow's import,
  so one function's names never reach another loaded later in the same process (as tests do).
- A domain module takes ``logger = module_logger(__name__)`` and ``metrics = module_metrics()``.
  Its logger is a Powertools child of the function whose handler is running (found per call, not
  at import), so its records carry that function's service and keys (the correlation id).
  Its metrics add to the one buffer Powertools shares between every Metrics of a process, which
  the function's Metrics flushes (``log_metrics``) with its namespace and service dimension.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple, cast, overload

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.shared import constants

if TYPE_CHECKING:
    from aws_lambda_powertools.shared.types import AnyCallableT

_UNDEFINED_SERVICE = "service_undefined"  # what Powertools names a Logger without a service

# The service of the function whose handler runs in this context (copied into worker threads
# that run in a copy of the context, as submit's records do) ...
_running_service: ContextVar[str | None] = ContextVar("falflow_running_service", default=None)
# ... and of the handler entered last, for pool threads that start with an empty context.
_last_entered: list[str] = []


class FunctionObservability(NamedTuple):
    logger: FunctionLogger
    metrics: Metrics
    tracer: Tracer


def function_observability() -> FunctionObservability:
    """The function's Logger, Metrics and Tracer, named from the environment; one per cold start."""
    return FunctionObservability(logger=FunctionLogger(), metrics=Metrics(), tracer=Tracer())


class FunctionLogger(Logger):
    """The function's Logger: while the handler it decorates runs, module loggers are its children."""

    @overload
    def inject_lambda_context(
        self,
        lambda_handler: AnyCallableT,
        log_event: bool | None = None,
        correlation_id_path: str | None = None,
        clear_state: bool | None = False,
        flush_buffer_on_uncaught_error: bool = False,
    ) -> AnyCallableT: ...

    @overload
    def inject_lambda_context(
        self,
        lambda_handler: None = None,
        log_event: bool | None = None,
        correlation_id_path: str | None = None,
        clear_state: bool | None = False,
        flush_buffer_on_uncaught_error: bool = False,
    ) -> Callable[[AnyCallableT], AnyCallableT]: ...

    def inject_lambda_context(
        self,
        lambda_handler: AnyCallableT | None = None,
        log_event: bool | None = None,
        correlation_id_path: str | None = None,
        clear_state: bool | None = False,
        flush_buffer_on_uncaught_error: bool = False,
    ) -> Any:
        options: dict[str, Any] = {
            "log_event": log_event,
            "correlation_id_path": correlation_id_path,
            "clear_state": clear_state,
            "flush_buffer_on_uncaught_error": flush_buffer_on_uncaught_error,
        }
        if lambda_handler is None:
            return functools.partial(self.inject_lambda_context, **options)
        return _running_as(self.service, super().inject_lambda_context(lambda_handler, **options))


def _running_as(service: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _running_service.set(service)
        _last_entered[:] = [service]
        try:
            return handler(*args, **kwargs)
        finally:
            _running_service.reset(token)

    return run


def module_logger(module: str) -> Logger:
    """A domain module's logger: a child of the running function's Logger (see the module doc)."""
    return cast(Logger, ModuleLogger(module))


def module_metrics() -> Metrics:
    """A domain module's metrics: they join the function's, which flush them with its names."""
    return Metrics()


class ModuleLogger:
    """Delegates to the Powertools child logger of `module` under the running function's service."""

    def __init__(self, module: str) -> None:
        self._module = module
        self._children: dict[str, Logger] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._child(), name)

    def _child(self) -> Logger:
        service = _current_service()
        child = self._children.get(service)
        if child is None:
            child = self._children.setdefault(service, _ChildLogger(service, self._module))
        return child


def _current_service() -> str:
    """This context's handler's service, else the last entered handler's, else the environment's."""
    last_entered = _last_entered[-1] if _last_entered else None
    environment = os.getenv(constants.SERVICE_NAME_ENV) or _UNDEFINED_SERVICE
    return _running_service.get() or last_entered or environment


class _ChildLogger(Logger):
    """``Logger(service, child=True)`` named after `module` (Powertools names it after its caller)."""

    def __init__(self, service: str, module: str) -> None:
        self._module_name = module
        super().__init__(service=service, child=True)

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"{self.service}.{self._module_name}")
