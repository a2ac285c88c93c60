"""Every failed record, job or delivery leaves one WARNING (job id, error type, reason; never the
payload) and one metric; dead letters included (`falflow.failures`, `falflow.aws.dead_letter`)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from falflow.aws.dead_letter import DeadLetterPolicy, with_dead_letter_reason
from falflow.completion.messages import OutputsMessage
from falflow.observability import JobMetrics
from falflow.webhook.app import WebhookApp
from falflow_tools.local.handlers import LambdaContext
from tests.fakes.webhook_events import http_api_event

SECRET_PROMPT = "a very private prompt"


class RecordingSqs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self.sent.append(kwargs)
        return {}


def _record(body: str, receive_count: int) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": "m-1",
            "body": body,
            "attributes": {"ApproximateReceiveCount": str(receive_count)},
            "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:outputs",
        }
    )


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "falflow-store")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "falflow")
    caplog.set_level(logging.INFO)
    return caplog


def _lines(logs: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """What each record logged: level, message and its keys."""
    fields = ("path", "job_id", "error_type", "reason", "dead_lettered", "message_id")
    return [
        {
            "level": r.levelname,
            "message": r.getMessage(),
            **{f: getattr(r, f) for f in fields if hasattr(r, f)},
        }
        for r in logs.records
        if r.name.endswith("falflow.failures")
    ]


def _store_like_handler(record: SQSRecord) -> str:
    return OutputsMessage.model_validate_json(record.body).job_id  # raises on a malformed message


def _emf(out: str) -> list[tuple[str, str]]:
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]
    return [(r["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"], r["service"]) for r in records]


def test_a_failing_record_logs_one_warning_and_counts_then_goes_back_for_a_retry(
    logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = RecordingSqs()
    handle = with_dead_letter_reason(
        _store_like_handler,
        DeadLetterPolicy("dlq", 5),
        lambda: sqs,
        path="store",  # type: ignore[arg-type,return-value]
    )
    body = json.dumps({"job_id": "job-7", "input": {"prompt": SECRET_PROMPT}})
    capsys.readouterr()

    with pytest.raises(ValidationError):  # the batch reports the record
        handle(_record(body, receive_count=2))

    (line,) = _lines(logs)
    assert (line["level"], line["message"], line["path"], line["job_id"]) == (
        "WARNING",
        "record failed",
        "store",
        "job-7",
    )
    assert line["error_type"] == "ValidationError"
    assert line["dead_lettered"] is False
    assert line["message_id"] == "m-1"
    assert "request_id" in line["reason"]  # what was wrong ...
    assert SECRET_PROMPT not in logs.text + json.dumps(line)  # ... never what was sent
    assert _emf(capsys.readouterr().out) == [("RecordsFailed", "falflow-store")]
    assert sqs.sent == []


def test_a_dead_letter_logs_one_warning_and_counts(
    logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    sqs = RecordingSqs()
    handle = with_dead_letter_reason(
        _store_like_handler,
        DeadLetterPolicy("dlq", 5),
        lambda: sqs,
        path="store",  # type: ignore[arg-type,return-value]
    )
    capsys.readouterr()

    assert handle(_record("not json at all", receive_count=5)) is None

    (line,) = _lines(logs)
    assert (line["level"], line["message"], line["job_id"], line["dead_lettered"]) == (
        "WARNING",
        "message dead-lettered",
        "-",
        True,
    )
    assert "not json at all" not in line["reason"]
    assert _emf(capsys.readouterr().out) == [("MessagesDeadLettered", "falflow-store")]
    (sent,) = sqs.sent
    assert sent["MessageAttributes"]["falflow-error-type"]["StringValue"] == "ValidationError"


def test_job_metrics_bound_the_model_dimension(
    logs: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = JobMetrics(frozenset({"fal-ai/flux/dev"}))
    capsys.readouterr()

    metrics.job_finished("fal-ai/flux/dev", 3.5)
    metrics.job_finished("someone/anything-at-all", 2.0)
    metrics.cost_recorded("fal-ai/flux/dev", 0.0)  # no change, nothing to count
    metrics.cost_recorded(None, 0.25)

    records = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')
    ]
    seen = [
        (name, record.get("model"), record[name][0])
        for record in records
        for name in [record["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"]]
    ]
    assert seen == [
        ("JobDuration", None, 3.5),
        ("JobDuration", "fal-ai/flux/dev", 3.5),
        ("JobDuration", None, 2.0),
        ("JobDuration", "other", 2.0),
        ("JobCost", None, 0.25),
        ("JobCost", "other", 0.25),
    ]
    assert {record["service"] for record in records} == {"falflow-store"}


class BrokenReceiver:
    def receive(self, request: object) -> object:
        raise ConnectionError("the jobs table did not answer")


def test_a_webhook_that_cannot_record_a_delivery_reports_it_and_answers_5xx(
    logs: pytest.LogCaptureFixture,
) -> None:
    app = WebhookApp(BrokenReceiver())  # type: ignore[arg-type]
    event = http_api_event(json.dumps({"prompt": SECRET_PROMPT}).encode(), {}, job_id="job-9")

    with pytest.raises(ConnectionError):  # Lambda's error: API Gateway answers 5xx, fal retries
        app.handle(event, LambdaContext(function_name="WebhookFunction"))

    (line,) = _lines(logs)
    assert (line["level"], line["path"], line["error_type"]) == ("WARNING", "webhook", "ConnectionError")
    assert line["reason"] == "the jobs table did not answer"
    assert SECRET_PROMPT not in logs.text
