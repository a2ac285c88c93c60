"""The committed store and reconcile events work as they are (what `sam local invoke -e` is given):
the webhook sample is delivered, then the store takes `events/store/outputs-message.json` verbatim,
and the reconciler `events/reconcile/schedule.json`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from falflow.jobs import Job, JobState, utcnow
from falflow_tools.local.handlers import context_for
from tests.fakes.webhook_events import EVENTS_DIR, TEST_JWKS_PATH, WebhookSigner, resign_event
from tests.fixtures.completion import CompletionStackFactory

EVENTS = Path(__file__).resolve().parents[3] / "events"


def _event(path: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / path).read_text())
    return event


def test_the_store_and_reconcile_sample_events_run_as_committed(
    completion_stack: CompletionStackFactory,
) -> None:
    stack = completion_stack()
    stack.jwks.jwks = json.loads(TEST_JWKS_PATH.read_text())
    outputs_message = _event("store/outputs-message.json")
    message = json.loads(outputs_message["Records"][0]["body"])
    stack.jobs.create(
        Job.new(
            message["job_id"],
            source="sqs:m",
            source_kind="sqs",
            now=utcnow(),
            model="fal-ai/clarity-upscaler",
        )
    )
    # fal's error delivery for that job (the sample the outputs message points at), signed now and
    # with the job's token on its URL, as submit would have given fal.
    delivery = json.loads((EVENTS_DIR / "error.json").read_text())
    signed = resign_event(delivery, WebhookSigner.committed(), token=stack.token_for(message["job_id"]))
    assert stack.deliver_event(signed)["statusCode"] == 200
    assert stack.job(message["job_id"]).state is JobState.STORING

    assert stack.store(outputs_message["Records"], delete=False) == []

    job = stack.job(message["job_id"])
    assert job.state is JobState.FAILED
    assert job.request_id == message["request_id"]
    assert job.error is not None
    assert job.error.type == "image_too_large"  # fal's own error type, from the delivery
    assert [e["detail-type"] for e in stack.completion_events()] == ["Job Failed"]

    # The next run reads that event's receipt (falflow.reconcile.receipts); the job was marked already.
    assert (stack.reconcile()["event_receipts_read"], stack.reconcile()["event_receipts_read"]) == (1, 0)
    # A scheduled tick: nothing in it is read; the run finds nothing left to do.
    report = stack.handlers["ReconcileFunction"](
        _event("reconcile/schedule.json"), context_for("ReconcileFunction")
    )
    assert report == stack.reconcile()
    assert stack.job(message["job_id"]).state is JobState.FAILED
