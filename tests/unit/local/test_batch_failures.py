"""Which records of a batch stay on the queue after an invocation, by Lambda's rules."""

from __future__ import annotations

from typing import Any

import pytest

from falflow_tools.local.sqs_source import failed_message_ids
from falflow_tools.local.workers import InvocationResult


@pytest.mark.parametrize(
    ("payload", "error", "stays"),
    [
        ({"batchItemFailures": []}, None, set()),
        (None, None, set()),
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, None, {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]}, None, {"a", "b"}),
        ({"batchItemFailures": "b"}, None, {"a", "b"}),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, None, {"b"}),
        (None, {"errorType": "ValueError", "errorMessage": "x"}, {"a", "b"}),
    ],
)
def test_which_records_stay_follows_lambdas_rules(payload: Any, error: Any, stays: set[str]) -> None:
    batch = [{"messageId": "a"}, {"messageId": "b"}]
    result = InvocationResult("req", payload=payload, error=error)
    assert failed_message_ids(result, batch, partial=True) == stays


def test_without_report_batch_item_failures_a_returned_list_means_nothing() -> None:
    result = InvocationResult("req", payload={"batchItemFailures": [{"itemIdentifier": "a"}]})
    assert failed_message_ids(result, [{"messageId": "a"}], partial=False) == set()
