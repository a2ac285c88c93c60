"""A store run killed between publishing a job's event and marking it (real handlers, moto's server,
the template's receipts rule and queue): its retry publishes nothing while the event's receipt may
come; the reconciler reads the receipt and marks the job; the job has exactly one event."""

from __future__ import annotations

import pytest

from falflow.jobs import DynamoJobStore, JobState
from tests.fakes.webhook_events import delivery
from tests.fixtures.completion import CompletionStackFactory
from tests.integration.completion.helpers import accept


def test_a_publisher_killed_before_its_mark_is_settled_by_the_events_receipt(
    completion_stack: CompletionStackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = completion_stack()
    job_id, request_id = "killed-mid-publish", "req-killed-mid-publish"
    accept(stack, job_id, "fal-ai/flux/dev")
    body = delivery(request_id, payload={"seed": 1})
    assert stack.deliver(body, stack.signer.headers(body, request_id), job_id) == 200
    (record,) = stack.outputs_messages()

    with monkeypatch.context() as killed:
        # The process dies right after PutEvents: the mark is never written, the message comes back.
        killed.setattr(DynamoJobStore, "mark_event_published", lambda self, job_id, *, now: None)
        assert stack.store([record], delete=False) == []
    job = stack.job("killed-mid-publish")
    assert (job.state, job.event_published_at) == (JobState.COMPLETED, None)
    assert job.event_claimed_until is not None

    # The redelivery finds the claim live: it publishes nothing and is sent back for later.
    assert stack.store([record], delete=False) == [record["messageId"]]
    assert stack.reconcile()["event_receipts_marked"] == 1
    assert stack.job("killed-mid-publish").event_published_at is not None
    # Its next delivery finds the event marked: done, nothing published.
    assert stack.store([record]) == []

    events = [e for e in stack.completion_events() if e["detail"]["job_id"] == "killed-mid-publish"]
    assert [e["detail-type"] for e in events] == ["Job Completed"]
    assert stack.queue_depth("EventReceiptsQueue") == 0
    assert stack.reconcile()["event_receipts_read"] == 0
