from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from falflow.fal.endpoints import EndpointId
from falflow.fal.errors import FalAuthError, FalNotFoundError, FalValidationError
from falflow.fal.http import RetryPolicy
from falflow.fal.queue import (
    DISABLE_FALLBACK_HEADERS,
    CancelOutcome,
    FalQueueClient,
    OutputLifecycle,
    QueueStatus,
)
from falflow.settings import FalSettings
from tests.unit.fal.fal_fakes import API_KEY, ScriptedFal

APP = "https://queue.fal.test/fal-ai/flux/requests/764cabcf-b745-4b3e-ae38-1200304cf45b"
SUBMITTED = {
    "request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b",
    "gateway_request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b",
    "response_url": APP,
    "status_url": f"{APP}/status",
    "cancel_url": f"{APP}/cancel",
    "queue_position": 0,
    "status": "IN_QUEUE",
    "something_new": {"fal": "added it"},
}
WEBHOOK = "https://abc.execute-api.eu-west-1.amazonaws.com/webhooks/fal?tenant=a b&x=1#frag"


@pytest.fixture
def queue_for(
    settings: FalSettings, retry: RetryPolicy, api_key: Callable[[], str]
) -> Callable[[ScriptedFal], FalQueueClient]:
    return lambda fal: FalQueueClient(settings, api_key, fal.client(), retry=retry)


def test_submit_posts_the_input_to_the_full_endpoint_path(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    submission = queue_for(fal).submit("fal-ai/flux/dev", {"prompt": "a cat", "seed": 7})

    request = fal.requests[0]
    assert request.method == "POST"
    assert request.url.copy_with(query=None) == "https://queue.fal.test/fal-ai/flux/dev"
    assert request.url.query == b""
    assert json.loads(request.content) == {"prompt": "a cat", "seed": 7}
    assert request.headers["Authorization"] == f"Key {API_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    for header in ("X-Fal-Queue-Priority", "X-Fal-Request-Timeout", "X-Fal-Runner-Hint", "X-Fal-Store-IO"):
        assert header not in request.headers
    assert submission.request_id == SUBMITTED["request_id"]
    assert submission.status_url == f"{APP}/status"
    assert submission.cancel_url == f"{APP}/cancel"
    assert submission.response_url == APP
    assert (submission.queue_position, submission.status) == (0, "IN_QUEUE")
    assert submission.gateway_request_id == SUBMITTED["request_id"]
    assert submission.model_extra == {"something_new": {"fal": "added it"}}


def test_webhook_is_a_url_encoded_query_parameter_never_in_the_body(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    queue_for(fal).submit(EndpointId.parse("fal-ai/flux/dev"), {"prompt": "x"}, webhook_url=WEBHOOK)

    request = fal.requests[0]
    assert request.url.params["fal_webhook"] == WEBHOOK
    raw_query = request.url.query.decode()
    # Every character that would split or end the outer query is escaped.
    assert "fal_webhook=https%3A%2F%2F" in raw_query
    for char in ("?", "&x", "#", " "):
        assert char not in raw_query
    assert json.loads(request.content) == {"prompt": "x"}
    assert b"webhook" not in request.content


def test_submit_options_become_fals_headers_and_query(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    queue_for(fal).submit(
        "fal-ai/flux/dev",
        {"prompt": "x"},
        webhook_url="https://hooks.example/fal",
        priority="low",
        start_timeout=30.5,
        runner_hint="tenant-42",
        store_io=False,
        max_queue_length=10,
    )

    request = fal.requests[0]
    assert request.headers["X-Fal-Queue-Priority"] == "low"
    assert request.headers["X-Fal-Request-Timeout"] == "30.5"
    assert request.headers["X-Fal-Runner-Hint"] == "tenant-42"
    assert request.headers["X-Fal-Store-IO"] == "0"
    assert dict(request.url.params) == {
        "fal_webhook": "https://hooks.example/fal",
        "fal_max_queue_length": "10",
    }


def test_store_io_true_sends_no_header(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    queue_for(fal).submit("fal-ai/flux/dev", {}, store_io=True, priority="normal")

    assert "X-Fal-Store-IO" not in fal.requests[0].headers
    assert fal.requests[0].headers["X-Fal-Queue-Priority"] == "normal"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start_timeout": 1.0}, "start_timeout"),
        ({"start_timeout": 0.5}, "start_timeout"),
        ({"max_queue_length": -1}, "max_queue_length"),
    ],
)
def test_invalid_submit_options_are_refused_before_anything_is_sent(
    queue_for: Callable[[ScriptedFal], FalQueueClient], kwargs: dict[str, float], match: str
) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    with pytest.raises(ValueError, match=match):
        queue_for(fal).submit("fal-ai/flux/dev", {}, **kwargs)  # type: ignore[arg-type]

    assert fal.requests == []


def test_submit_refuses_an_invalid_endpoint_id(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    with pytest.raises(ValueError, match="invalid fal endpoint id"):
        queue_for(fal).submit("fal-ai//dev", {})

    assert fal.requests == []


def test_submit_validation_error_is_raised_typed(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    body = {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]}
    fal = ScriptedFal([httpx.Response(422, json=body)])

    with pytest.raises(FalValidationError, match="prompt: field required"):
        queue_for(fal).submit("fal-ai/flux/dev", {})


def test_status_follows_the_stored_url(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    fal = ScriptedFal(
        [httpx.Response(202, json={"status": "IN_QUEUE", "queue_position": 3, "response_url": APP})]
    )

    status = queue_for(fal).status(f"{APP}/status")

    assert fal.requests[0].method == "GET"
    assert fal.requests[0].url == f"{APP}/status"
    assert (status.status, status.queue_position, status.completed, status.failed) == (
        "IN_QUEUE",
        3,
        False,
        False,
    )


def test_status_with_logs_adds_logs_1_and_keeps_the_stored_query(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    body = {
        "status": "IN_PROGRESS",
        "logs": [
            {
                "message": "loading weights",
                "level": "INFO",
                "source": "USER",
                "timestamp": "2026-08-01T10:00:00Z",
            }
        ],
    }
    fal = ScriptedFal([httpx.Response(202, json=body)])

    status = queue_for(fal).status(f"{APP}/status?region=eu", logs=True)

    assert dict(fal.requests[0].url.params) == {"region": "eu", "logs": "1"}
    assert status.logs is not None
    assert status.logs[0].message == "loading weights"
    assert (status.logs[0].level, status.logs[0].source) == ("INFO", "USER")


def test_a_failed_request_is_completed_with_an_error(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    body = {
        "status": "COMPLETED",
        "request_id": "r",
        "response_url": APP,
        "error": "Invalid status code: 422",
        "error_type": "validation_error",
        "metrics": {"inference_time": 1.25},
    }
    fal = ScriptedFal([httpx.Response(200, json=body)])

    status = queue_for(fal).status(f"{APP}/status")

    assert isinstance(status, QueueStatus)
    assert status.completed
    assert status.failed
    assert status.metrics == {"inference_time": 1.25}


def test_result_returns_the_models_output(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    output = {"images": [{"url": "https://v3.fal.media/files/a.png", "content_type": "image/png"}], "seed": 7}
    fal = ScriptedFal([httpx.Response(200, json=output)])

    assert queue_for(fal).result(APP) == output
    assert fal.requests[0].url == APP


def test_result_of_a_failed_request_raises_the_models_error(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    body = {
        "detail": [{"loc": ["body", "image_url"], "msg": "could not download", "type": "file_download_error"}]
    }
    fal = ScriptedFal([httpx.Response(422, json=body, headers={"x-fal-request-id": "r"})])

    with pytest.raises(FalValidationError) as raised:
        queue_for(fal).result(APP)

    assert raised.value.request_id == "r"
    assert raised.value.detail == body["detail"]


def test_result_that_expired_is_not_found(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    fal = ScriptedFal([httpx.Response(404, json={"detail": "Request not found"})])

    with pytest.raises(FalNotFoundError):
        queue_for(fal).result(APP)


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (202, {"status": "CANCELLATION_REQUESTED"}, CancelOutcome.CANCELLATION_REQUESTED),
        (400, {"status": "ALREADY_COMPLETED"}, CancelOutcome.ALREADY_COMPLETED),
        (404, {"status": "NOT_FOUND"}, CancelOutcome.NOT_FOUND),
    ],
)
def test_cancel_puts_and_maps_the_three_answers(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
    status: int,
    body: dict[str, str],
    outcome: CancelOutcome,
) -> None:
    fal = ScriptedFal([httpx.Response(status, json=body)])

    assert queue_for(fal).cancel(f"{APP}/cancel") is outcome
    assert fal.requests[0].method == "PUT"
    assert fal.requests[0].url == f"{APP}/cancel"
    assert len(fal.requests) == 1


def test_cancel_with_a_bad_key_raises(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    fal = ScriptedFal([httpx.Response(401, json={"detail": "Invalid key"})])

    with pytest.raises(FalAuthError):
        queue_for(fal).cancel(f"{APP}/cancel")


@pytest.mark.parametrize(
    ("endpoint_id", "app_path"),
    [
        ("fal-ai/flux/dev", "fal-ai/flux"),
        ("fal-ai/flux", "fal-ai/flux"),
        ("workflows/me/flow/step", "workflows/me/flow"),
    ],
)
def test_urls_for_use_the_app_path_without_subpath(
    queue_for: Callable[[ScriptedFal], FalQueueClient], endpoint_id: str, app_path: str
) -> None:
    urls = queue_for(ScriptedFal([])).urls_for(endpoint_id, "r-1")

    base = f"https://queue.fal.test/{app_path}/requests/r-1"
    assert (urls.status_url, urls.response_url, urls.cancel_url) == (f"{base}/status", base, f"{base}/cancel")


def test_urls_for_escape_the_request_id(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    urls = queue_for(ScriptedFal([])).urls_for("fal-ai/flux", "../../x?y")

    assert urls.response_url == "https://queue.fal.test/fal-ai/flux/requests/..%2F..%2Fx%3Fy"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/fal-ai/flux/requests/r/status",
        "http://queue.fal.test/fal-ai/flux/requests/r/status",
        "https://queue.fal.test.evil.example/fal-ai/flux/requests/r/status",
        "https://queue.fal.test:8443/fal-ai/flux/requests/r/status",
    ],
)
def test_stored_urls_off_the_queue_host_never_get_the_key(
    queue_for: Callable[[ScriptedFal], FalQueueClient], url: str
) -> None:
    fal = ScriptedFal([httpx.Response(200, json={"status": "COMPLETED"})])
    queue = queue_for(fal)

    for call in (queue.status, queue.result, queue.cancel):
        with pytest.raises(ValueError, match="not fal's queue host"):
            call(url)

    assert fal.requests == []


def test_private_outputs_and_their_expiry_go_in_fals_lifecycle_header(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    queue_for(fal).submit(
        "fal-ai/flux/dev",
        {},
        lifecycle=OutputLifecycle(initial_acl="forbid", expiration_duration_seconds=3600),
    )

    # The shape fal's Python client builds (_normalize_upload_lifecycle).
    assert json.loads(fal.requests[0].headers["X-Fal-Object-Lifecycle-Preference"]) == {
        "expiration_duration_seconds": 3600,
        "initial_acl": {"default": "forbid", "rules": []},
    }


def test_an_empty_lifecycle_sends_no_header(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    queue_for(fal).submit("fal-ai/flux/dev", {}, lifecycle=OutputLifecycle())

    assert "X-Fal-Object-Lifecycle-Preference" not in fal.requests[0].headers


@pytest.mark.parametrize(("allow", "sent"), [(False, True), (True, False), (None, False)])
def test_fallbacks_are_turned_off_with_both_of_fals_documented_headers(
    queue_for: Callable[[ScriptedFal], FalQueueClient], allow: bool | None, sent: bool
) -> None:
    fal = ScriptedFal([httpx.Response(200, json=SUBMITTED)])

    queue_for(fal).submit("fal-ai/flux/dev", {}, allow_fallbacks=allow)

    headers = fal.requests[0].headers
    assert [headers.get(name) for name in DISABLE_FALLBACK_HEADERS] == (
        ["true", "true"] if sent else [None, None]
    )


def test_served_from_reads_the_result_header(queue_for: Callable[[ScriptedFal], FalQueueClient]) -> None:
    fal = ScriptedFal([httpx.Response(200, json={}, headers={"X-Fal-Served-From": "fal-ai/flux/schnell"})])

    assert queue_for(fal).served_from(APP) == "fal-ai/flux/schnell"
    assert fal.requests[0].url == APP


def test_run_posts_to_the_sync_host_and_reports_who_served_it(
    queue_for: Callable[[ScriptedFal], FalQueueClient],
) -> None:
    fal = ScriptedFal([httpx.Response(200, json={"images": []}, headers={"X-Fal-Served-From": "fal-ai/x"})])

    output, served_from = queue_for(fal).run("fal-ai/flux/dev", {"prompt": "a"}, allow_fallbacks=False)

    request = fal.requests[0]
    assert request.url == "https://fal.test/fal-ai/flux/dev"
    assert json.loads(request.content) == {"prompt": "a"}
    assert request.headers["X-Fal-Disable-Fallbacks"] == "true"
    assert (output, served_from) == ({"images": []}, "fal-ai/x")
