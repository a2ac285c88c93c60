"""Each function's Logger, Metrics and Tracer are its own, named by its environment; domain modules
log and count through Powertools' children of them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics

from falflow.observability import function_observability
from falflow_tools.local.handlers import LambdaContext

domain_metrics = Metrics()  # as a domain module makes it, at import, before any function's env


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
        logger.info("handler says", job_id=event["job_id"])
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


def test_a_domain_modules_child_logger_logs_through_the_function_with_its_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "obs-third")
    logger = function_observability().logger
    assert logger.service == "obs-third"
    stream = io.StringIO()
    logger.registered_handler.setStream(stream)  # type: ignore[attr-defined]
    domain_logger = Logger(child=True)  # as a module of the function's package makes it at import

    @logger.inject_lambda_context(correlation_id_path="id", clear_state=True)
    def handler(event: dict[str, Any], context: Any) -> str:
        domain_logger.info("inside", job_id="j-1")
        return "done"

    assert handler.__name__ == "handler"
    assert handler({"id": "run-1"}, LambdaContext(function_name="Third")) == "done"
    (line,) = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert (line["service"], line["correlation_id"], line["function_name"], line["job_id"]) == (
        "obs-third",
        "run-1",
        "Third",
        "j-1",
    )
