"""submit_job against in-memory fakes: the three request forms, duplicates, failure classes and the
ambiguity rule."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from falflow.fal import (
    FalNotFoundError,
    FalRateLimitedError,
    FalServerError,
    FalTransportError,
    FalValidationError,
)
from falflow.jobs import JobState, isoformat
from falflow.jobs.requests import HISTORY_LOOKBACK
from falflow.submit.service import SubmitOutcome, SubmitRetryLaterError
from falflow.submit.sources import message_job_id, object_job_id
from falflow_tools.template import function_specs
from tests.fakes.webhook_events import fixed_tokens
from tests.unit.submit.conftest import BUCKET, GRACE_S, PRESIGN_S, WEBHOOK, WORKER_LEASE_S, Harness, message
from tests.unit.submit.fakes import Lost, SentSubmission

UPSCALE_MESSAGE: dict[str, Any] = {
    "model": "fal-ai/clarity-upscaler",
    "input": {"prompt": "sharp", "upscale_factor": 2},
    "files": {"image_url": f"s3://{BUCKET}/uploads/cat.png"},
    "metadata": {"order": 42},
    "priority": "low",
    "start_timeout": 120,
    "output_prefix": "orders/42",
}


def webhook_job_id(sent: SentSubmission) -> str:
    assert sent.webhook_url is not None
    parts = urlsplit(sent.webhook_url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == WEBHOOK
    query = parse_qs(parts.query)
    assert query["token"] == [fixed_tokens().token_for(query["job_id"][0])]  # bound to this job
    return query["job_id"][0]


# ------------------------------------------------------------------------- the three forms


def test_media_drop_is_sent_with_a_presigned_url_and_a_webhook_naming_the_job(harness: Harness) -> None:
    drop = harness.drop("upscale/holiday photo.png")

    result = harness.service.submit_job(drop)

    assert result.outcome is SubmitOutcome.SUBMITTED
    assert result.created
    (sent,) = harness.fal.submitted
    assert sent.endpoint_id == "fal-ai/clarity-upscaler"
    assert sent.input == {
        "image_url": f"https://{BUCKET}.s3.amazonaws.com/upscale/holiday photo.png?X-Amz-Expires={PRESIGN_S}"
        "&versionId=v1",
        "upscale_factor": 2,
    }
    assert webhook_job_id(sent) == result.job_id == object_job_id(drop)
    job = harness.job(result.job_id)
    assert job.state is JobState.SUBMITTED
    assert job.request_id == sent.request_id == result.request_id
    assert job.status_url
    assert job.response_url
    assert job.cancel_url
    assert job.gateway_request_id
    assert job.source == f"s3://{BUCKET}/upscale/holiday photo.png?versionId=v1"
    assert job.source_kind == "s3_media"
    # The record shows the file by its S3 URI: a presigned URL is a bearer credential.
    assert job.input == {"image_url": job.source, "upscale_factor": 2}
    assert job.submit_lease_until is None
    assert set(job.state_times) == {"ACCEPTED", "SUBMITTED"}
    assert harness.correlated == [result.job_id]


def test_job_message_is_sent_with_its_files_as_urls_and_its_options(harness: Harness) -> None:
    harness.objects.put(BUCKET, "uploads/cat.png", b"png")

    result = harness.service.submit_job(message(UPSCALE_MESSAGE, "msg-a"))

    assert result.outcome is SubmitOutcome.SUBMITTED
    (sent,) = harness.fal.submitted
    assert sent.input == {
        "prompt": "sharp",
        "upscale_factor": 2,
        "image_url": f"https://{BUCKET}.s3.amazonaws.com/uploads/cat.png?X-Amz-Expires={PRESIGN_S}",
    }
    assert (sent.priority, sent.start_timeout) == ("low", 120)
    job = harness.job(result.job_id)
    assert job.job_id == message_job_id("", UPSCALE_MESSAGE)
    assert (job.source, job.source_kind) == ("sqs:msg-a", "sqs")
    assert job.metadata == {"order": 42}
    assert job.files == {"image_url": f"s3://{BUCKET}/uploads/cat.png"}
    assert job.output_prefix == "orders/42"
    # The record keeps the request as sent (what a redrive rebuilds it from): files apart.
    assert job.input == {"prompt": "sharp", "upscale_factor": 2}


def test_job_document_is_sent_under_the_callers_job_id(harness: Harness) -> None:
    document = {"model": "fal-ai/flux/dev", "input": {"prompt": "a lighthouse"}, "job_id": "order-7"}

    result = harness.service.submit_job(harness.document("jobs/order-7.json", document))

    assert result.outcome is SubmitOutcome.SUBMITTED
    assert result.job_id == "order-7"
    (sent,) = harness.fal.submitted
    assert (sent.endpoint_id, sent.input) == ("fal-ai/flux/dev", {"prompt": "a lighthouse"})
    assert webhook_job_id(sent) == "order-7"
    assert harness.job("order-7").source_kind == "s3_document"


def test_a_document_without_job_id_takes_its_objects_job_id(harness: Harness) -> None:
    created = harness.document("jobs/a.json", {"model": "fal-ai/flux/dev", "input": {"prompt": "x"}})
    assert harness.service.submit_job(created).job_id == object_job_id(created)


def test_a_text_route_sends_the_files_text_and_the_routes_options(harness: Harness) -> None:
    result = harness.service.submit_job(harness.drop("animate/wave.txt", b"a wave {big}"))

    (sent,) = harness.fal.submitted
    assert sent.input == {"prompt": "a wave {big}", "duration": "5"}
    assert sent.priority == "low"
    job = harness.job(result.job_id)
    assert job.metadata == {"team": "motion"}
    assert job.input == sent.input


def test_a_cdn_route_uploads_the_file_to_fal_and_sends_the_cdn_url(harness: Harness) -> None:
    result = harness.service.submit_job(harness.drop("upscale/cdn/big.png", b"pixels" * 500))

    ((data, content_type, name),) = harness.storage.uploads
    assert (data, content_type, name) == (b"pixels" * 500, "image/png", "big.png")
    (sent,) = harness.fal.submitted
    assert sent.input == {"image_url": "https://v3.fal.media/files/upload-1/big.png"}
    assert not harness.objects.presigned
    assert harness.job(result.job_id).output_prefix == "cdn"


def test_a_folder_marker_is_no_job(harness: Harness) -> None:
    result = harness.service.submit_job(harness.drop("upscale/", b""))
    assert result.outcome is SubmitOutcome.IGNORED
    assert not harness.fal.submitted
    assert list(harness.store.list_by_state(JobState.REJECTED)) == []


# -------------------------------------------------------------------------------- duplicates


def test_the_same_drop_twice_is_sent_once(harness: Harness) -> None:
    drop = harness.drop("upscale/a.png")
    first = harness.service.submit_job(drop)
    second = harness.service.submit_job(drop)

    assert (first.outcome, second.outcome) == (SubmitOutcome.SUBMITTED, SubmitOutcome.DUPLICATE)
    assert second.job_id == first.job_id
    assert second.request_id == first.request_id
    assert len(harness.fal.submitted) == 1
    assert harness.fal.attempts == 1


def test_the_same_message_three_times_is_sent_once_whatever_its_formatting(harness: Harness) -> None:
    body = {"model": "fal-ai/flux/dev", "input": {"prompt": "x", "seed": 1}}
    deliveries = [
        message(body, "m1"),
        message('{"input": {"seed": 1, "prompt": "x"}, "model": "fal-ai/flux/dev"}', "m2"),
        message(body, "m3"),
    ]
    outcomes = [harness.service.submit_job(delivery).outcome for delivery in deliveries]

    assert outcomes == [SubmitOutcome.SUBMITTED, SubmitOutcome.DUPLICATE, SubmitOutcome.DUPLICATE]
    assert len(harness.fal.submitted) == 1


def test_an_overwritten_object_is_a_new_job_and_a_version_pins_the_old_one(harness: Harness) -> None:
    first = harness.drop("upscale/a.png", b"one", version="v1")
    second = harness.drop("upscale/a.png", b"two", version="v2")

    assert object_job_id(first) != object_job_id(second)
    harness.service.submit_job(first)
    harness.service.submit_job(second)
    assert [
        s.input["image_url"].endswith(v) for s, v in zip(harness.fal.submitted, ("v1", "v2"), strict=True)
    ] == [
        True,
        True,
    ]


def test_two_workers_racing_on_one_job_send_it_once(harness: Harness) -> None:
    harness.fal.delay_s = 0.2  # both are past the record's creation before either has an answer
    drop = harness.drop("upscale/race.png")
    results: list[Any] = []

    def deliver() -> None:
        try:
            results.append(harness.service.submit_job(drop).outcome)
        except SubmitRetryLaterError as retry:
            results.append(retry)

    workers = [threading.Thread(target=deliver) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert harness.fal.attempts == 1
    assert len(harness.fal.submitted) == 1
    assert SubmitOutcome.SUBMITTED in results
    loser = next(r for r in results if r is not SubmitOutcome.SUBMITTED)
    # The loser either saw the lease (and retries later, then finds the job sent) or the result.
    assert loser is SubmitOutcome.DUPLICATE or (
        isinstance(loser, SubmitRetryLaterError) and not loser.ambiguous
    )
    assert harness.service.submit_job(drop).outcome is SubmitOutcome.DUPLICATE


def test_a_redriven_request_rebuilt_from_the_record_is_the_same_job_and_work(harness: Harness) -> None:
    """What the reconciler sends back to the intake queue for a job left ACCEPTED (falflow.reconcile)."""
    from falflow.jobs.intake import original_request  # noqa: PLC0415

    harness.objects.put(BUCKET, "uploads/cat.png", b"png")
    harness.fal.replies = [FalRateLimitedError("busy", status=429, retryable=True)]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(message(UPSCALE_MESSAGE, "first"))
    (job,) = harness.store.list_by_state(JobState.ACCEPTED)
    body = original_request(job)
    assert body is not None

    result = harness.service.submit_job(message(body, "redriven"))

    assert (result.outcome, result.job_id) == (SubmitOutcome.SUBMITTED, job.job_id)
    (sent,) = harness.fal.submitted
    assert sent.input["image_url"].startswith(f"https://{BUCKET}.s3.amazonaws.com/uploads/cat.png?")


def test_a_job_id_reused_for_other_work_is_refused_visibly_and_sends_nothing(harness: Harness) -> None:
    harness.fal.replies = [FalRateLimitedError("busy", status=429, retryable=True)]
    original = message({"model": "fal-ai/flux/dev", "input": {"prompt": "a"}, "job_id": "k1"})
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(original)

    other = harness.service.submit_job(
        message({"model": "fal-ai/flux/dev", "input": {"prompt": "b"}, "job_id": "k1"}, "m-2")
    )

    assert other.outcome is SubmitOutcome.CONFLICT
    assert other.error is not None
    assert other.error.type == "job_id_conflict"
    assert "sqs:m-2" in other.error.message
    assert "input" in other.error.message
    assert harness.fal.submitted == []
    job = harness.job("k1")
    assert job.input == {"prompt": "a"}
    assert [(entry.action, entry.reason) for entry in job.trail] == [("job_id_conflict", other.error.message)]


@pytest.mark.parametrize(
    "reuse",
    [
        {"model": "fal-ai/flux/schnell", "input": {"prompt": "a"}},
        {"model": "fal-ai/flux/dev", "input": {"prompt": "a"}, "metadata": {"order": 2}},
        {"model": "fal-ai/flux/dev", "input": {"prompt": "a"}, "priority": "low"},
        {"model": 42, "input": {"prompt": "a"}},  # a rejected request under the same id
    ],
    ids=["other model", "other metadata", "other priority", "invalid request"],
)
def test_a_job_id_reused_after_the_job_was_sent_is_refused_too(harness: Harness, reuse: dict) -> None:
    first = harness.service.submit_job(
        message({"model": "fal-ai/flux/dev", "input": {"prompt": "a"}, "job_id": "k2"})
    )
    assert first.outcome is SubmitOutcome.SUBMITTED
    redelivered = harness.service.submit_job(
        message({"model": "fal-ai/flux/dev", "input": {"prompt": "a"}, "job_id": "k2"})
    )

    reused = harness.service.submit_job(message({**reuse, "job_id": "k2"}, "m-9"))

    assert redelivered.outcome is SubmitOutcome.DUPLICATE  # the same message again is no conflict
    assert reused.outcome is SubmitOutcome.CONFLICT
    assert len(harness.fal.submitted) == 1
    job = harness.job("k2")
    assert job.state is JobState.SUBMITTED
    assert [entry.action for entry in job.trail] == ["job_id_conflict"]


# ------------------------------------------------------------------------ the webhook first


def test_a_webhook_that_beats_the_submit_write_is_never_moved_back(harness: Harness) -> None:
    drop = harness.drop("upscale/fast.png")
    job_id = object_job_id(drop)

    def webhook_arrives(sent: SentSubmission) -> None:
        # What the completion hand-off does on fal's webhook: bind, then move on to STORING.
        harness.store.bind_request(job_id, sent.request_id)
        harness.store.record_completion(
            job_id, sent.request_id, completion_key="inbox/x", source="webhook", now=harness.clock()
        )

    original_submit = harness.fal.submit

    def submit_then_webhook(*args: Any, **kwargs: Any) -> Any:
        submission = original_submit(*args, **kwargs)
        webhook_arrives(harness.fal.submitted[-1])
        return submission

    harness.fal.submit = submit_then_webhook  # type: ignore[method-assign]

    result = harness.service.submit_job(drop)

    assert result.outcome is SubmitOutcome.SUBMITTED
    job = harness.job(job_id)
    assert job.state is JobState.STORING
    assert job.request_id == result.request_id
    assert job.status_url
    assert job.cancel_url
    assert "SUBMITTED" not in job.state_times


# ---------------------------------------------------------------------------------- failures


def test_fal_422_fails_the_job_with_fals_detail_whole_and_consumes_the_message(harness: Harness) -> None:
    detail = [
        {
            "loc": ["body", "upscale_factor"],
            "msg": "must be <= 4",
            "type": "less_than_equal",
            "ctx": {"le": 4},
        }
    ]
    harness.fal.replies = [
        FalValidationError(
            "fal rejected the input (422): upscale_factor: must be <= 4", status=422, detail=detail
        )
    ]

    result = harness.service.submit_job(harness.drop("upscale/x.png"))

    assert result.outcome is SubmitOutcome.FAILED
    job = harness.job(result.job_id)
    assert job.state is JobState.FAILED
    assert job.request_id is None
    assert job.error is not None
    assert job.error.type == "fal_validation_error"
    assert job.error.detail == detail
    assert "upscale_factor" in job.error.message
    assert job.expires_at is not None  # a final state: TTL set


def test_an_unknown_model_fal_does_not_have_fails_with_its_404(harness: Harness) -> None:
    harness.fal.replies = [
        FalNotFoundError("not found at fal (404): Application 'fal-ai/nope' not found", status=404)
    ]
    result = harness.service.submit_job(message({"model": "fal-ai/nope", "input": {}}))
    assert result.outcome is SubmitOutcome.FAILED
    assert harness.job(result.job_id).error.type == "unknown_model"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "error",
    [
        FalRateLimitedError("rate limited by fal (429)", status=429, retryable=True),
        FalServerError("fal server error (503)", status=503, retryable=True, not_received=True),
        FalTransportError("ConnectError talking to fal", ambiguous=False),
    ],
    ids=["429", "ingress-503", "connect-error"],
)
def test_fal_certainly_not_taking_the_job_releases_it_for_the_next_delivery(
    harness: Harness, error: Exception
) -> None:
    harness.fal.replies = [error]
    drop = harness.drop("upscale/t.png")

    with pytest.raises(SubmitRetryLaterError) as raised:
        harness.service.submit_job(drop)

    assert not raised.value.ambiguous
    job = harness.job(object_job_id(drop))
    assert job.state is JobState.ACCEPTED
    assert job.submit_lease_until is None
    assert job.submit_ambiguous_at is None
    # The redelivery (no time has passed) sends it at once.
    assert harness.service.submit_job(drop).outcome is SubmitOutcome.SUBMITTED
    assert len(harness.fal.submitted) == 1


@pytest.mark.parametrize(
    "error",
    [
        FalTransportError("ReadTimeout talking to fal", ambiguous=True),
        FalServerError("fal server error (500)", status=500, retryable=True),
        FalServerError("fal server error (503)", status=503, retryable=True, request_id="req-x"),
    ],
    ids=["read-timeout", "500", "503-with-request-id"],
)
def test_an_ambiguous_submit_is_held_for_the_grace_period(harness: Harness, error: Exception) -> None:
    drop = harness.drop("upscale/amb.png")
    harness.fal.replies = [Lost(error)]

    with pytest.raises(SubmitRetryLaterError) as raised:
        harness.service.submit_job(drop)

    assert raised.value.ambiguous
    job = harness.job(object_job_id(drop))
    assert job.state is JobState.ACCEPTED
    assert job.submit_ambiguous_at == isoformat(harness.clock())
    assert [entry.action for entry in job.trail] == ["submit_ambiguous"]

    harness.clock.advance(GRACE_S - 1)
    with pytest.raises(SubmitRetryLaterError, match="may have reached fal"):
        harness.service.submit_job(drop)
    assert harness.fal.attempts == 1  # nothing resent within the grace


def test_a_webhook_within_the_grace_means_the_job_is_never_resent(harness: Harness) -> None:
    drop = harness.drop("upscale/amb.png")
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)
    (queued,) = harness.fal.submitted
    # fal had it after all: its webhook binds the request through the completion hand-off.
    assert harness.store.bind_request(webhook_job_id(queued), queued.request_id).bound
    harness.store.record_completion(
        webhook_job_id(queued),
        queued.request_id,
        completion_key="inbox/x",
        source="webhook",
        now=harness.clock(),
    )

    harness.clock.advance(GRACE_S + 1)
    assert harness.service.submit_job(drop).outcome is SubmitOutcome.DUPLICATE
    assert harness.fal.attempts == 1


def test_after_the_grace_a_request_found_in_fals_history_is_bound_and_nothing_resent(
    harness: Harness,
) -> None:
    drop = harness.drop("upscale/amb.png")
    job_id = object_job_id(drop)
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)

    harness.clock.advance(GRACE_S + 1)
    result = harness.service.submit_job(drop)

    assert result.outcome is SubmitOutcome.FOUND
    (queued,) = harness.fal.submitted
    assert harness.fal.attempts == 1  # one fal submission
    job = harness.job(job_id)
    assert (job.state, job.request_id) == (JobState.SUBMITTED, queued.request_id)
    assert job.submit_lease_until is None
    assert (
        job.cancel_url == f"https://queue.fal.run/fal-ai/clarity-upscaler/requests/{queued.request_id}/cancel"
    )
    assert [entry.action for entry in job.trail] == ["submit_ambiguous", "found_in_request_history"]
    (lookup,) = harness.history.lookups
    assert lookup["endpoint_ids"] == ["fal-ai/clarity-upscaler"]
    assert lookup["payloads"] is True
    assert lookup["start"] == harness.clock() - timedelta(seconds=GRACE_S + 1) - HISTORY_LOOKBACK
    assert harness.store.request_holder(queued.request_id) == job_id


def test_after_the_grace_the_job_is_resent_and_only_one_request_is_ever_bound(harness: Harness) -> None:
    drop = harness.drop("upscale/amb.png")
    job_id = object_job_id(drop)
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)
    # Still waiting in fal's queue: the history does not list it yet.
    harness.history.waiting.add(harness.fal.submitted[0].request_id)

    harness.clock.advance(GRACE_S + 1)
    result = harness.service.submit_job(drop)

    assert result.outcome is SubmitOutcome.SUBMITTED
    first, second = harness.fal.submitted
    job = harness.job(job_id)
    assert job.request_id == second.request_id
    assert job.state is JobState.SUBMITTED
    assert [entry.action for entry in job.trail] == ["submit_ambiguous", "resubmit"]
    assert "history shows no request with this job's input" in job.trail[-1].reason
    # The first request's late webhook cannot bind: no second stored result is possible.
    late = harness.store.bind_request(job_id, first.request_id)
    assert not late.bound
    assert late.conflicting_request_id == second.request_id


def test_a_resent_request_that_loses_to_an_earlier_one_is_cancelled(harness: Harness) -> None:
    drop = harness.drop("upscale/amb.png")
    job_id = object_job_id(drop)
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)
    harness.history.waiting.add(harness.fal.submitted[0].request_id)
    harness.clock.advance(GRACE_S + 1)
    original_submit = harness.fal.submit

    def slow_first_webhook(*args: Any, **kwargs: Any) -> Any:
        submission = original_submit(*args, **kwargs)
        harness.store.bind_request(job_id, harness.fal.submitted[0].request_id)  # the first one's webhook
        return submission

    harness.fal.submit = slow_first_webhook  # type: ignore[method-assign]

    result = harness.service.submit_job(drop)

    assert result.outcome is SubmitOutcome.SUPERSEDED
    first, second = harness.fal.submitted
    assert harness.job(job_id).request_id == first.request_id
    assert harness.fal.cancelled == [
        f"https://queue.fal.run/fal-ai/clarity-upscaler/requests/{second.request_id}/cancel"
    ]
    assert harness.job(job_id).trail[-1].action == "duplicate_request_cancelled"
    assert harness.job(job_id).duplicate_requests == [second.request_id]


def test_a_duplicate_found_later_in_fals_history_is_cancelled_and_recorded(harness: Harness) -> None:
    drop = harness.drop("upscale/twice.png")
    job_id = object_job_id(drop)
    lost = Lost(FalTransportError("ReadTimeout", ambiguous=True))
    harness.fal.replies = [lost, lost]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)
    harness.history.waiting.add(harness.fal.submitted[0].request_id)  # fal's queue is long
    harness.clock.advance(GRACE_S + 1)
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)  # not in the history yet: sent again, and that reply lost too
    first, second = harness.fal.submitted
    harness.history.waiting.clear()  # both have started by the next look

    harness.clock.advance(GRACE_S + 1)
    result = harness.service.submit_job(drop)

    assert (result.outcome, result.request_id) == (SubmitOutcome.FOUND, first.request_id)
    assert harness.fal.attempts == 2
    job = harness.job(job_id)
    assert job.request_id == first.request_id
    assert job.duplicate_requests == [second.request_id]
    assert harness.fal.cancelled == [
        f"https://queue.fal.run/fal-ai/clarity-upscaler/requests/{second.request_id}/cancel"
    ]
    actions = [entry.action for entry in job.trail]
    # The second lost reply repeats the first's note, which the trail keeps once.
    assert actions == [
        "submit_ambiguous",
        "resubmit",
        "duplicate_request_cancelled",
        "found_in_request_history",
    ]
    assert "cancel: CANCELLATION_REQUESTED" in job.trail[2].reason


def test_a_request_another_job_of_the_same_input_holds_is_never_bound_twice(harness: Harness) -> None:
    body = {"model": "fal-ai/flux/dev", "input": {"prompt": "the same"}}
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(message({**body, "job_id": "a"}))
    harness.history.waiting.add(harness.fal.submitted[0].request_id)
    other = harness.service.submit_job(message({**body, "job_id": "b"}))
    assert other.outcome is SubmitOutcome.SUBMITTED  # b's request is listed, with a's very input

    harness.clock.advance(GRACE_S + 1)
    result = harness.service.submit_job(message({**body, "job_id": "a"}))

    assert result.outcome is SubmitOutcome.SUBMITTED  # b's request is b's: a is sent again
    assert harness.job("b").request_id == other.request_id
    assert harness.job("a").request_id not in (None, other.request_id)
    assert harness.store.request_holder(other.request_id) == "b"
    assert harness.fal.cancelled == []


def test_a_request_sent_just_now_with_the_same_input_is_another_jobs_and_left_alone(
    harness: Harness,
) -> None:
    body = {"model": "fal-ai/flux/dev", "input": {"prompt": "the same"}, "job_id": "a"}
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(message(body))
    harness.history.waiting.add(harness.fal.submitted[0].request_id)
    harness.clock.advance(GRACE_S + 1)
    # Another job of the same input is being sent right now; its reply is not recorded yet.
    in_flight = harness.fal.submit("fal-ai/flux/dev", {"prompt": "the same"})

    result = harness.service.submit_job(message(body))

    assert result.outcome is SubmitOutcome.SUBMITTED  # a's own request is not listed: sent again
    assert result.request_id != in_flight.request_id
    assert harness.store.request_holder(in_flight.request_id) is None  # free for its own job
    assert harness.fal.cancelled == []


def test_a_new_request_another_job_bound_first_makes_this_job_wait_like_a_lost_reply(
    harness: Harness,
) -> None:
    harness.service.submit_job(message({"model": "fal-ai/flux/dev", "input": {"prompt": "x"}, "job_id": "a"}))
    original_submit = harness.fal.submit

    def taken_on_the_way(*args: Any, **kwargs: Any) -> Any:
        submission = original_submit(*args, **kwargs)
        # Job a (same input) found this request in fal's history and claimed it before b recorded it.
        assert harness.store.record_duplicate_request("a", submission.request_id) is not None
        return submission

    harness.fal.submit = taken_on_the_way  # type: ignore[method-assign]

    with pytest.raises(SubmitRetryLaterError) as raised:
        harness.service.submit_job(
            message({"model": "fal-ai/flux/dev", "input": {"prompt": "x"}, "job_id": "b"})
        )

    assert raised.value.ambiguous
    job = harness.job("b")
    assert (job.state, job.request_id) == (JobState.ACCEPTED, None)
    assert job.submit_ambiguous_at is not None  # held for the grace, then looked up again
    assert job.submit_lease_until is not None
    assert raised.value.not_before == datetime.fromisoformat(job.submit_lease_until)
    assert job.trail[-1].action == "request_taken"
    assert "job a" in job.trail[-1].reason
    assert harness.fal.cancelled == []  # a's now, not b's to cancel


def test_without_fals_payloads_the_grace_rule_alone_decides(harness: Harness) -> None:
    drop = harness.drop("upscale/private.png")
    job_id = object_job_id(drop)
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)
    claim = harness.store.claim_submit_lease

    def without_store_io(*args: Any, **kwargs: Any) -> Any:
        claimed = claim(*args, **kwargs)
        return claimed.model_copy(update={"store_io": False}) if claimed else None

    harness.store.claim_submit_lease = without_store_io  # type: ignore[method-assign]
    harness.clock.advance(GRACE_S + 1)

    assert harness.service.submit_job(drop).outcome is SubmitOutcome.SUBMITTED
    assert harness.history.lookups == []  # fal kept no input to compare with
    _, second = harness.fal.submitted
    assert not second.store_io  # sent with X-Fal-Store-IO: 0 again
    job = harness.job(job_id)
    assert job.request_id == second.request_id
    assert job.trail[-1].action == "resubmit"
    assert "X-Fal-Store-IO: 0" in job.trail[-1].reason


def test_an_unreadable_request_history_sends_nothing_and_says_why(harness: Harness) -> None:
    drop = harness.drop("upscale/history-down.png")
    job_id = object_job_id(drop)
    harness.fal.replies = [Lost(FalTransportError("ReadTimeout", ambiguous=True))]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)
    harness.history.failure = FalServerError("fal platform error 500 server_error", status=500)
    harness.clock.advance(GRACE_S + 1)

    with pytest.raises(SubmitRetryLaterError) as raised:
        harness.service.submit_job(drop)

    assert raised.value.ambiguous
    assert harness.fal.attempts == 1
    job = harness.job(job_id)
    assert (job.state, job.request_id) == (JobState.ACCEPTED, None)
    assert job.submit_lease_until is not None  # still held: nobody sends it meanwhile
    assert job.trail[-1].action == "request_history_unavailable"


def test_a_slow_submit_keeps_its_lease_even_past_a_short_grace(harness: Harness) -> None:
    harness.grace_s = 1
    drop = harness.drop("upscale/slow.png")
    service = harness.service
    original_submit = harness.fal.submit
    racing: list[BaseException] = []

    def slow_submit(*args: Any, **kwargs: Any) -> Any:
        harness.clock.advance(harness.worker_lease_s - 1)  # fal takes long to answer
        try:
            service.submit_job(drop)  # meanwhile the same event, delivered again
        except SubmitRetryLaterError as retry:
            racing.append(retry)
        return original_submit(*args, **kwargs)

    harness.fal.submit = slow_submit  # type: ignore[method-assign]

    assert service.submit_job(drop).outcome is SubmitOutcome.SUBMITTED
    assert len(racing) == 1
    assert "another worker" in str(racing[0])
    assert len(harness.fal.submitted) == 1


def test_the_worker_lease_outlasts_the_submit_function() -> None:
    submit = function_specs()["SubmitFunction"]
    lease = float(submit.environment.get("SUBMIT_LEASE_SECONDS", WORKER_LEASE_S))
    assert submit.timeout * 2 <= lease


def test_a_failed_write_after_fal_queued_the_job_holds_it_for_the_webhook(harness: Harness) -> None:
    drop = harness.drop("upscale/write-fails.png")
    job_id = object_job_id(drop)
    record_submission = harness.store.record_submission

    def throttled_once(*args: Any, **kwargs: Any) -> Any:
        harness.store.record_submission = record_submission  # type: ignore[method-assign]
        raise RuntimeError("ProvisionedThroughputExceededException")

    harness.store.record_submission = throttled_once  # type: ignore[method-assign]

    with pytest.raises(SubmitRetryLaterError) as raised:
        harness.service.submit_job(drop)

    assert raised.value.ambiguous
    (queued,) = harness.fal.submitted
    assert queued.request_id in raised.value.reason
    assert harness.job(job_id).submit_lease_until is not None  # not released: fal has the job
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)  # a redelivery does not send it again
    # fal's webhook binds it; the next redelivery finds the job sent.
    harness.store.bind_request(job_id, queued.request_id)
    assert harness.service.submit_job(drop).outcome is SubmitOutcome.DUPLICATE
    assert harness.fal.attempts == 1


def test_a_worker_that_died_mid_submit_holds_the_job_like_an_ambiguous_submit(harness: Harness) -> None:
    drop = harness.drop("upscale/crash.png")
    job_id = object_job_id(drop)

    class Crash(BaseException):  # not an Exception: nothing on the way may handle it
        pass

    harness.fal.replies = [Crash()]
    with pytest.raises(Crash):
        harness.service.submit_job(drop)
    assert harness.job(job_id).submit_lease_until is not None

    with pytest.raises(SubmitRetryLaterError, match="another worker") as held:
        harness.service.submit_job(drop)
    # The message comes back when the dead worker's lease ends, not after the queue's visibility.
    lease_until = harness.job(job_id).submit_lease_until
    assert lease_until is not None
    assert held.value.not_before == datetime.fromisoformat(lease_until)
    harness.clock.advance(GRACE_S + 1)
    assert harness.service.submit_job(drop).outcome is SubmitOutcome.SUBMITTED
    assert harness.job(job_id).trail[-1].action == "resubmit"


def test_an_accepted_job_whose_file_vanished_is_rejected_on_redelivery(harness: Harness) -> None:
    drop = harness.drop("upscale/gone.png")
    harness.fal.replies = [FalRateLimitedError("busy", status=429, retryable=True)]
    with pytest.raises(SubmitRetryLaterError):
        harness.service.submit_job(drop)
    harness.objects.delete(BUCKET, "upscale/gone.png")

    result = harness.service.submit_job(drop)

    assert result.outcome is SubmitOutcome.REJECTED
    job = harness.job(result.job_id)
    assert job.state is JobState.REJECTED
    assert job.error.type == "input_file_missing"
    assert harness.fal.submitted == []


# ----------------------------------------------------------------------------- large inputs


def test_an_input_too_large_for_the_record_is_kept_in_s3(harness: Harness) -> None:
    harness.max_inline_input_bytes = 2048
    body = {"model": "fal-ai/flux/dev", "input": {"prompt": "p" * 4000}}

    result = harness.service.submit_job(message(body))

    job = harness.job(result.job_id)
    assert job.input is None
    assert job.input_ref == f"s3://falflow-outputbucket/inputs/{job.job_id}/input.json"
    assert harness.archive.kept[job.job_id] == body["input"]
    assert harness.fal.submitted[0].input == body["input"]


def test_a_large_document_input_points_at_the_document_itself(harness: Harness) -> None:
    harness.max_inline_input_bytes = 2048
    created = harness.document("jobs/big.json", {"model": "fal-ai/flux/dev", "input": {"prompt": "p" * 4000}})

    job = harness.job(harness.service.submit_job(created).job_id)

    assert job.input is None
    assert job.input_ref == f"s3://{BUCKET}/jobs/big.json?versionId=v1"
    assert harness.archive.kept == {}
