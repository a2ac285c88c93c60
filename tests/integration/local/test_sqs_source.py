"""The SQS event source: batches, partial failures, visibility timeout, redrive — against moto's server."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from falflow_tools.local.sqs_source import SqsEventSource, SqsSourceSettings
from falflow_tools.local.workers import FunctionRuntime, InvocationResult, LocalFunction

FAKE = Path(__file__).parent / "fake_function"


@pytest.fixture
def queues(moto_server_url: str) -> dict[str, str]:
    sqs = boto3.client("sqs", endpoint_url=moto_server_url, region_name="us-east-1")
    suffix = str(time.monotonic_ns())
    dlq = sqs.create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(
        QueueName=f"work-{suffix}",
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        },
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"url": url, "arn": arn, "dlq": dlq, "endpoint": moto_server_url}


class Recorder:
    """Answers like the fake function, in-process, and keeps every event it was given."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> InvocationResult:
        self.events.append(event)
        failures = [
            {"itemIdentifier": r["messageId"]} for r in event["Records"] if json.loads(r["body"]).get("fail")
        ]
        return InvocationResult("req", payload={"batchItemFailures": failures})


def source(queues: dict[str, str], invoke: Any, **settings: Any) -> SqsEventSource:
    sqs = boto3.client("sqs", endpoint_url=queues["endpoint"], region_name="us-east-1")
    return SqsEventSource(
        SqsSourceSettings(
            function="Fake",
            queue_url=queues["url"],
            queue_arn=queues["arn"],
            **{"batch_size": 10, "report_batch_item_failures": True, **settings},
        ),
        invoke,
        sqs,
    )


def send(queues: dict[str, str], *bodies: dict[str, Any]) -> list[str]:
    sqs = boto3.client("sqs", endpoint_url=queues["endpoint"], region_name="us-east-1")
    return [
        sqs.send_message(
            QueueUrl=queues["url"],
            MessageBody=json.dumps(body),
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "test"}},
        )["MessageId"]
        for body in bodies
    ]


def visible_and_in_flight(queues: dict[str, str], url_key: str = "url") -> tuple[int, int]:
    sqs = boto3.client("sqs", endpoint_url=queues["endpoint"], region_name="us-east-1")
    attrs = sqs.get_queue_attributes(QueueUrl=queues[url_key], AttributeNames=["All"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_records_look_like_lambdas_sqs_event(queues: dict[str, str]) -> None:
    recorder = Recorder()
    sent = send(queues, {"n": 1})

    assert source(queues, recorder).poll_once() == 1

    (record,) = recorder.events[0]["Records"]
    assert record["messageId"] == sent[0]
    assert json.loads(record["body"]) == {"n": 1}
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queues["arn"]
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "ApproximateFirstReceiveTimestamp", "SenderId"} <= set(record["attributes"])
    assert record["messageAttributes"]["kind"] == {
        "stringValue": "test",
        "stringListValues": [],
        "binaryListValues": [],
        "dataType": "String",
    }
    assert record["md5OfBody"]
    assert record["receiptHandle"]


def test_a_batch_fills_up_to_batch_size_within_the_window(queues: dict[str, str]) -> None:
    recorder = Recorder()
    send(queues, *({"n": n} for n in range(10)))

    filling = source(queues, recorder, batch_size=5, batching_window_s=5.0)

    assert [filling.poll_once(), filling.poll_once()] == [5, 5]
    assert visible_and_in_flight(queues) == (0, 0)


def test_a_partial_batch_goes_when_the_window_closes(queues: dict[str, str]) -> None:
    recorder = Recorder()
    send(queues, {"n": 1}, {"n": 2})
    waiting = source(queues, recorder, batch_size=5, batching_window_s=0.5)

    started = time.monotonic()
    assert waiting.poll_once() == 2
    assert time.monotonic() - started >= 0.5


def test_only_reported_failures_stay_and_come_back_after_the_visibility_timeout(
    queues: dict[str, str],
) -> None:
    recorder = Recorder()
    ok_id, failing_id = send(queues, {"n": 1}, {"fail": True})
    poller = source(queues, recorder)

    assert poller.poll_once() == 2
    assert visible_and_in_flight(queues) == (0, 1)  # the failed one, invisible for 1 s

    deadline = time.monotonic() + 5
    while poller.poll_once() == 0 and time.monotonic() < deadline:
        pass
    retried = recorder.events[-1]["Records"]
    assert [r["messageId"] for r in retried] == [failing_id]
    assert retried[0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert ok_id not in {r["messageId"] for r in retried}


def test_sqs_moves_a_message_to_the_dlq_after_max_receives(queues: dict[str, str]) -> None:
    poller = source(queues, Recorder())
    send(queues, {"fail": True})

    received = 0
    deadline = time.monotonic() + 8
    while visible_and_in_flight(queues, "dlq") == (0, 0) and time.monotonic() < deadline:
        received += poller.poll_once()

    assert received == 2  # maxReceiveCount
    assert visible_and_in_flight(queues, "dlq") == (1, 0)
    assert visible_and_in_flight(queues) == (0, 0)


@pytest.fixture
def fake_function() -> Iterator[LocalFunction]:
    function = LocalFunction(
        FunctionRuntime(
            name="Fake",
            code_dir=FAKE,
            handler="app.handler",
            environment={"PATH": os.environ["PATH"]},
            timeout_s=5,
        )
    )
    yield function
    function.stop()


def test_a_worker_crash_leaves_the_whole_batch_for_a_retry(
    queues: dict[str, str], fake_function: LocalFunction
) -> None:
    # Long enough that the batch is still in flight when checked, however slowly the worker
    # crashed (the fixture's 1 s made this fail on a loaded machine).
    boto3.client("sqs", endpoint_url=queues["endpoint"], region_name="us-east-1").set_queue_attributes(
        QueueUrl=queues["url"], Attributes={"VisibilityTimeout": "600"}
    )
    send(queues, {"n": 1}, {"crash": True})
    poller = source(queues, fake_function.invoke)

    assert poller.poll_once() == 2
    assert poller.stats.failed == 2
    assert visible_and_in_flight(queues) == (0, 2)


def test_the_running_source_drives_a_real_worker_until_stopped(
    queues: dict[str, str], fake_function: LocalFunction
) -> None:
    poller = source(queues, fake_function.invoke, batching_window_s=0.2)
    poller.start()
    try:
        send(queues, {"n": 1}, {"n": 2}, {"fail": True})
        deadline = time.monotonic() + 10
        while poller.stats.deleted < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        poller.stop()
    assert time.monotonic() - started < 3  # Ctrl-C is quick
    assert poller.stats.deleted == 2
