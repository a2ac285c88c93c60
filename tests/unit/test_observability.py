"""One function's names never leak into another's: handlers build their Logger, Metrics and Tracer
at import from their own environment, and domain modules log as children of the running function."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from falflow.observability import FunctionLogger, function_observability, module_logger, module_metrics
from falflow_tools.local.handlers import LambdaContext

domain_logger = module_logger("falflow.tests.domain")
domain_metrics = module_metrics()


def _function(monkeypatch: pytest.MonkeyPatch, service: str) -> tuple[Any, io.StringIO]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", f"{service}-namespace")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    logger, metrics, tracer = function_observability()
    stream = io.StringIO()
    logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics()
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        domain_logger.info("domain says", job_id=event["job_id"])
        domain_metrics.add_metric(name="DomainCount", unit="Count", value=1)
        return {}

    return handler, stream


def test_each_handler_logs_and_counts_under_its_own_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first, first_stream = _function(monkeypatch, "obs-first")
    second, second_stream = _function(monkeypatch, "obs-second")  # loaded last: the env is its own
    capsys.readouterr()

    first({"job_id": "a"}, LambdaContext(function_name="First"))
    second({"job_id": "b"}, LambdaContext(function_name="Second"))

    (first_line,) = [json.loads(line) for line in first_stream.getvalue().splitlines()]
    (second_line,) = [json.loads(line) for line in second_stream.getvalue().splitlines()]
    assert (first_line["service"], first_line["job_id"]) == ("obs-first", "a")
    assert (second_line["service"], second_line["job_id"]) == ("obs-second", "b")
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    names = [(m["_aws"]["CloudWatchMetrics"][0]["Namespace"], m["service"], m["DomainCount"]) for m in emf]
    assert names == [
        ("obs-first-namespace", "obs-first", [1.0]),
        ("obs-second-namespace", "obs-second", [1.0]),
    ]


def test_the_function_logger_is_the_handlers_and_keeps_powertools_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "obs-third")
    logger = function_observability().logger
    assert isinstance(logger, FunctionLogger)
    assert logger.service == "obs-third"
    stream = io.StringIO()
    logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]

    @logger.inject_lambda_context(correlation_id_path="id", clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> str:
        domain_logger.info("inside")
        return "done"

    assert handler.__name__ == "handler"
    assert handler({"id": "run-1"}, LambdaContext(function_name="Third")) == "done"
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["service"], line["correlation_id"], line["function_name"]) == ("obs-third", "run-1", "Third")


def test_pool_threads_log_as_the_handler_that_started_them(monkeypatch: pytest.MonkeyPatch) -> None:
    handlers = {}
    for service in ("obs-pool-a", "obs-pool-b"):
        monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", service)
        logger = function_observability().logger
        stream = io.StringIO()
        logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]

        @logger.inject_lambda_context
        def handler(event: dict[str, Any], context: Any) -> None:
            with ThreadPoolExecutor(max_workers=1) as pool:  # a fresh thread: an empty context
                pool.submit(domain_logger.info, "from the pool").result()

        handlers[service] = (handler, stream)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "obs-pool-b")  # the environment of the last one

    handler, stream = handlers["obs-pool-a"]
    handler({}, LambdaContext(function_name="A"))
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert line["service"] == "obs-pool-a"
