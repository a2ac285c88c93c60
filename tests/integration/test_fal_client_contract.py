"""The fal client against the fal emulator over real loopback HTTP: every call, every error class.

The unit tests pin the client's requests to docs/fal-contract.md; these check that the client and
the emulator (built independently from the same document) agree, including under injected faults.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from falflow.fal import (
    CancelOutcome,
    FalAccountLockedError,
    FalAuthError,
    FalNotFoundError,
    FalPlatformClient,
    FalPlatformError,
    FalQueueClient,
    FalRateLimitedError,
    FalRequestTimeoutError,
    FalServerError,
    FalStorageClient,
    FalTransportError,
    FalValidationError,
    JwksCache,
    OutputLifecycle,
    QueueStatus,
    verify_fal_signature,
)
from falflow.settings import FalSettings
from falflow_tools.emulator import RunningEmulator
from falflow_tools.net import free_port
from tests.fixtures.fal_emulator import EmulatorFactory, WebhookSink

FLUX = "fal-ai/flux/dev"
PROMPT = {"prompt": "a koala reading the fal contract", "num_images": 1}


def settings_for(fal: RunningEmulator, **overrides: Any) -> FalSettings:
    urls = fal.urls
    values: dict[str, Any] = {
        "queue_url": urls.queue_url,
        "run_url": urls.run_url,
        "queue_backup_url": urls.queue_backup_url,
        "run_backup_url": urls.run_backup_url,
        "rest_url": urls.rest_url,
        "api_url": urls.api_url,
        "cdn_url": urls.cdn_url,
        "jwks_urls": [urls.jwks_url],
        "connect_timeout_s": 2.0,
        "read_timeout_s": 5.0,
        "max_attempts": 4,
        # Real backoff shape, test-sized delays.
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
    }
    return FalSettings(**(values | overrides))


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture
def queue(fal_emulator: RunningEmulator) -> FalQueueClient:
    return FalQueueClient(settings_for(fal_emulator), lambda: fal_emulator.api_key)


@pytest.fixture
def platform(fal_emulator: RunningEmulator) -> FalPlatformClient:
    return FalPlatformClient(settings_for(fal_emulator), lambda: fal_emulator.api_key)


@pytest.fixture
def admin_platform(fal_emulator: RunningEmulator) -> FalPlatformClient:
    return FalPlatformClient(settings_for(fal_emulator), lambda: fal_emulator.admin_key)


def wait_completed(queue: FalQueueClient, status_url: str, timeout_s: float = 10.0) -> QueueStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = queue.status(status_url, logs=True)
        if status.completed:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {status.status} after {timeout_s} s")
        time.sleep(0.02)


def submit_requests(fal: RunningEmulator) -> list[Any]:
    return [r for r in fal.control.requests() if r.group == "submit"]


# ------------------------------------------------------------------------------------- queue


def test_submit_status_result_round_trip(fal_emulator: RunningEmulator, queue: FalQueueClient) -> None:
    submission = queue.submit(FLUX, PROMPT, priority="low", runner_hint="contract", store_io=False)

    assert submission.status_url.startswith(f"{fal_emulator.urls.queue_url}/fal-ai/flux/requests/")
    assert submission.response_url == submission.status_url.removesuffix("/status")
    assert submission.cancel_url == f"{submission.response_url}/cancel"
    assert submission.gateway_request_id is not None
    status = wait_completed(queue, submission.status_url)
    assert not status.failed
    assert status.logs  # logs=1 reached the emulator
    output = queue.result(submission.response_url)
    assert output["images"][0]["url"].startswith(fal_emulator.urls.cdn_url)

    recorded = submit_requests(fal_emulator)[0]
    assert recorded.headers["x-fal-queue-priority"] == "low"
    assert recorded.headers["x-fal-runner-hint"] == "contract"
    assert recorded.headers["x-fal-store-io"] == "0"
    assert recorded.headers["user-agent"].startswith("falflow/")
    assert recorded.body == PROMPT


def test_built_urls_reach_the_same_request(queue: FalQueueClient) -> None:
    submission = queue.submit(FLUX, PROMPT)
    built = queue.urls_for(FLUX, submission.request_id)

    assert built.status_url == submission.status_url
    assert wait_completed(queue, built.status_url).request_id == submission.request_id
    assert queue.result(built.response_url) == queue.result(submission.response_url)


def test_workflows_namespace_keeps_its_prefix(queue: FalQueueClient) -> None:
    submission = queue.submit("workflows/falflow/text-to-image", PROMPT)

    assert "/workflows/falflow/text-to-image/requests/" in submission.status_url
    assert not wait_completed(queue, submission.status_url).failed


def test_webhook_delivery_verifies_against_the_emulators_jwks(
    fal_emulator: RunningEmulator, queue: FalQueueClient, webhook_sink: WebhookSink, http: httpx.Client
) -> None:
    submission = queue.submit(FLUX, PROMPT, webhook_url=f"{webhook_sink.url}?job_id=j-1&x=a b")
    delivery = webhook_sink.wait_for(1)[0]

    verified = verify_fal_signature(delivery.headers, delivery.body, JwksCache([fal_emulator.jwks_url], http))

    assert verified.request_id == submission.request_id
    assert verified.user_id == fal_emulator.user_id
    assert delivery.json()["status"] == "OK"
    # Sent URL-encoded in the fal_webhook query parameter, it came back whole, query included.
    assert submit_requests(fal_emulator)[0].query.startswith("fal_webhook=http%3A%2F%2F127.0.0.1")
    assert delivery.path == "/webhooks/fal?job_id=j-1&x=a%20b"


def test_rotated_webhook_key_is_fetched_once(
    fal_emulator: RunningEmulator, queue: FalQueueClient, webhook_sink: WebhookSink, http: httpx.Client
) -> None:
    jwks = JwksCache([fal_emulator.jwks_url], http, min_refetch_interval_s=0.0)
    queue.submit(FLUX, PROMPT, webhook_url=webhook_sink.url)
    first = webhook_sink.wait_for(1)[0]
    verify_fal_signature(first.headers, first.body, jwks)

    fal_emulator.control.rotate_key(keep_previous=False)
    queue.submit(FLUX, PROMPT, webhook_url=webhook_sink.url)
    second = webhook_sink.wait_for(2)[1]

    verify_fal_signature(second.headers, second.body, jwks)
    jwks_fetches = [r for r in fal_emulator.control.requests() if r.path.endswith("/jwks.json")]
    assert len(jwks_fetches) == 2


def test_invalid_input_fails_the_request_and_its_result_raises_validation_error(
    queue: FalQueueClient,
) -> None:
    submission = queue.submit(FLUX, {"num_images": 1})  # no prompt

    status = wait_completed(queue, submission.status_url)
    assert status.failed

    with pytest.raises(FalValidationError) as raised:
        queue.result(submission.response_url)
    assert raised.value.status == 422
    assert isinstance(raised.value.detail, list)
    assert raised.value.detail[0]["loc"][-1] == "prompt"
    assert not raised.value.retryable


def test_unknown_endpoint_is_not_found(queue: FalQueueClient) -> None:
    with pytest.raises(FalNotFoundError):
        queue.submit("fal-ai/no-such-model", PROMPT)


def test_bad_key_is_an_auth_error(fal_emulator: RunningEmulator) -> None:
    queue = FalQueueClient(settings_for(fal_emulator), lambda: "wrong:key")

    with pytest.raises(FalAuthError) as raised:
        queue.submit(FLUX, PROMPT)
    assert raised.value.status == 401
    assert len(submit_requests(fal_emulator)) == 1  # not retried


def test_a_locked_account_refuses_the_submit_without_a_retry_and_its_request_still_finishes(
    fal_emulator: RunningEmulator, queue: FalQueueClient
) -> None:
    submission = queue.submit(FLUX, PROMPT)
    fal_emulator.control.set_balance(-1.0)  # exhausted: locked

    with pytest.raises(FalAccountLockedError) as raised:
        queue.submit(FLUX, PROMPT)

    assert (raised.value.status, raised.value.retryable) == (403, False)
    assert raised.value.lock_reason == "Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
    assert len(submit_requests(fal_emulator)) == 2  # the refused one was not resent
    assert not wait_completed(queue, submission.status_url).failed
    assert queue.result(submission.response_url)["images"]


def test_cancel_outcomes(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=5.0)
    queue = FalQueueClient(settings_for(fal), lambda: fal.api_key)
    waiting = queue.submit(FLUX, PROMPT)

    assert queue.cancel(waiting.cancel_url) is CancelOutcome.CANCELLATION_REQUESTED
    assert wait_completed(queue, waiting.status_url).completed
    assert queue.cancel(waiting.cancel_url) is CancelOutcome.ALREADY_COMPLETED
    assert queue.cancel(queue.urls_for(FLUX, "00000000-0000-0000-0000-000000000000").cancel_url) is (
        CancelOutcome.NOT_FOUND
    )


def test_start_timeout_expiry_is_the_callers_own_deadline(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=3.0)
    queue = FalQueueClient(settings_for(fal), lambda: fal.api_key)
    submission = queue.submit(FLUX, PROMPT, start_timeout=1.1)

    assert wait_completed(queue, submission.status_url).failed
    with pytest.raises(FalRequestTimeoutError) as raised:
        queue.result(submission.response_url)
    assert raised.value.status == 504
    assert not raised.value.retryable
    assert submit_requests(fal)[0].headers["x-fal-request-timeout"] == "1.1"


def test_max_queue_length_is_rate_limited_and_retried_with_backoff(
    fal_emulator_factory: EmulatorFactory,
) -> None:
    fal = fal_emulator_factory(queue_wait_s=5.0)
    queue = FalQueueClient(settings_for(fal), lambda: fal.api_key)
    queue.submit(FLUX, PROMPT)

    with pytest.raises(FalRateLimitedError) as raised:
        queue.submit(FLUX, PROMPT, max_queue_length=1)

    assert raised.value.retryable
    limited = submit_requests(fal)[1:]
    assert len(limited) == 4  # max_attempts: a 429 means nothing was queued, so resending is safe
    assert all("fal_max_queue_length=1" in r.query for r in limited)
    assert len(fal.control.jobs()) == 1


# -------------------------------------------------------------------- faults on the wire


def test_submit_is_retried_through_ingress_503s(fal_emulator: RunningEmulator, queue: FalQueueClient) -> None:
    fal_emulator.control.set_faults(submit={"rate_503": 1.0, "max_faults": 2})

    submission = queue.submit(FLUX, PROMPT)

    assert [r.fault for r in submit_requests(fal_emulator)] == ["503", "503", None]
    assert [job.request_id for job in fal_emulator.control.jobs()] == [submission.request_id]


def test_submit_answered_by_a_proxy_504_after_queueing_is_not_resent(
    fal_emulator: RunningEmulator, queue: FalQueueClient
) -> None:
    fal_emulator.control.set_faults(submit={"rate_proxy_504_after": 1.0, "max_faults": 1})

    with pytest.raises(FalServerError) as raised:
        queue.submit(FLUX, PROMPT)

    assert raised.value.status == 504
    assert not raised.value.not_received  # not fal's nginx page: no evidence it was not received
    assert len(submit_requests(fal_emulator)) == 1
    assert len(fal_emulator.control.jobs()) == 1  # fal had queued it


def test_submit_429_is_retried(fal_emulator: RunningEmulator, queue: FalQueueClient) -> None:
    fal_emulator.control.set_faults(submit={"rate_429": 1.0, "max_faults": 1})

    queue.submit(FLUX, PROMPT)

    assert [r.fault for r in submit_requests(fal_emulator)] == ["429", None]


def test_submit_500_is_raised_not_resent(fal_emulator: RunningEmulator, queue: FalQueueClient) -> None:
    fal_emulator.control.set_faults(submit={"rate_500": 1.0, "max_faults": 1})

    with pytest.raises(FalServerError) as raised:
        queue.submit(FLUX, PROMPT)

    assert raised.value.retryable  # the caller may decide to; the client does not on its own
    assert len(submit_requests(fal_emulator)) == 1


def test_submit_whose_reply_is_lost_is_not_resent(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory()
    fal.control.set_faults(submit={"rate_timeout": 1.0, "timeout_hold_s": 3.0, "max_faults": 1})
    queue = FalQueueClient(settings_for(fal, read_timeout_s=0.5), lambda: fal.api_key)

    with pytest.raises(FalTransportError) as raised:
        queue.submit(FLUX, PROMPT)

    assert raised.value.ambiguous
    assert len(submit_requests(fal)) == 1
    # fal did queue it: exactly why a blind resend would have run the job twice.
    assert len(fal.control.jobs()) == 1


def test_submit_reset_after_sending_is_ambiguous(
    fal_emulator: RunningEmulator, queue: FalQueueClient
) -> None:
    fal_emulator.control.set_faults(submit={"rate_reset": 1.0, "max_faults": 1})

    with pytest.raises(FalTransportError) as raised:
        queue.submit(FLUX, PROMPT)

    assert raised.value.ambiguous
    assert len(submit_requests(fal_emulator)) == 1


def test_submit_to_a_closed_port_is_retried_then_certainly_unsent() -> None:
    port = free_port()  # nothing listens there: every connect is refused
    settings = FalSettings(
        queue_url=f"http://127.0.0.1:{port}/queue", backoff_base_s=0.001, backoff_cap_s=0.002
    )

    with pytest.raises(FalTransportError) as raised:
        FalQueueClient(settings, lambda: "k").submit(FLUX, PROMPT)

    assert not raised.value.ambiguous


@pytest.mark.parametrize("fault", ["rate_429", "rate_500", "rate_503", "rate_reset"])
def test_status_and_result_ride_out_faults(
    fal_emulator: RunningEmulator, queue: FalQueueClient, fault: str
) -> None:
    submission = queue.submit(FLUX, PROMPT)
    wait_completed(queue, submission.status_url)
    fal_emulator.control.set_faults(
        status={fault: 1.0, "max_faults": 2}, result={fault: 1.0, "max_faults": 2}
    )

    assert queue.status(submission.status_url).completed
    assert "images" in queue.result(submission.response_url)

    groups = [r.group for r in fal_emulator.control.requests() if r.fault]
    assert groups.count("status") == 2
    assert groups.count("result") == 2


def test_status_read_timeout_is_retried(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory()
    queue = FalQueueClient(settings_for(fal, read_timeout_s=0.5), lambda: fal.api_key)
    submission = queue.submit(FLUX, PROMPT)
    fal.control.set_faults(status={"rate_timeout": 1.0, "timeout_hold_s": 2.0, "max_faults": 1})

    assert queue.status(submission.status_url).status in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")
    assert [r.fault for r in fal.control.requests() if r.group == "status"] == ["timeout", None]


# ---------------------------------------------------------------------------------- platform


def test_models_walk_every_page_with_filters(platform: FalPlatformClient) -> None:
    everything = list(platform.iter_models(page_size=2))
    text_to_image = list(platform.iter_models(category="text-to-image", status="active", page_size=1))
    searched = list(platform.iter_models("upscale"))
    with_schema = list(platform.iter_models(endpoint_ids=[FLUX], expand=["openapi-3.0"]))

    ids = [m.endpoint_id for m in everything]
    assert len(ids) == len(set(ids)) >= 5
    assert FLUX in ids
    assert {m.endpoint_id for m in text_to_image} == {
        m.endpoint_id
        for m in everything
        if m.metadata and m.metadata.category == "text-to-image" and m.metadata.status == "active"
    }
    assert [m.endpoint_id for m in searched] == ["fal-ai/clarity-upscaler"]
    assert with_schema[0].openapi is not None


def test_pricing_and_both_estimates(platform: FalPlatformClient) -> None:
    prices = platform.pricing([FLUX, "fal-ai/stable-audio"])
    by_call = platform.estimate_cost(call_quantities={FLUX: 10})
    by_unit = platform.estimate_cost(unit_quantities={FLUX: 10})

    assert {p.endpoint_id for p in prices} == {FLUX, "fal-ai/stable-audio"}
    flux = next(p for p in prices if p.endpoint_id == FLUX)
    assert (flux.unit, flux.currency) == ("image", "USD")
    assert by_unit.estimate_type == "unit_price"
    assert by_unit.total_cost == pytest.approx(10 * flux.unit_price)
    assert by_call.estimate_type == "historical_api_price"


def test_pricing_of_an_unknown_model_is_a_platform_not_found(platform: FalPlatformClient) -> None:
    with pytest.raises(FalPlatformError) as raised:
        platform.pricing(["fal-ai/no-such-model"])

    assert (raised.value.status, raised.value.error_type, raised.value.retryable) == (404, "not_found", False)


def test_usage_billing_and_analytics_see_a_finished_request(
    queue: FalQueueClient, platform: FalPlatformClient, admin_platform: FalPlatformClient
) -> None:
    submission = queue.submit(FLUX, PROMPT)
    wait_completed(queue, submission.status_url)
    start = datetime.now(UTC) - timedelta(hours=1)
    end = datetime.now(UTC) + timedelta(minutes=5)

    usage = admin_platform.usage(start, end, endpoint_ids=[FLUX], expand=("time_series", "summary"))
    events = list(admin_platform.iter_billing_events(start, end, request_ids=[submission.request_id]))
    analytics = platform.analytics([FLUX], start, end, expand=("summary",))

    assert sum(item.quantity or 0 for item in usage.summary if item.endpoint_id == FLUX) >= 1
    assert any(item.endpoint_id == FLUX for bucket in usage.time_series for item in bucket.results)
    assert [e.request_id for e in events] == [submission.request_id]
    assert events[0].cost_total is not None
    assert analytics.summary[0].endpoint_id == FLUX
    assert (analytics.summary[0].request_count or 0) >= 1


def test_request_history_finds_a_request_with_its_input_over_every_page(
    queue: FalQueueClient, platform: FalPlatformClient
) -> None:
    submissions = [queue.submit(FLUX, {"prompt": f"history {n}"}) for n in range(3)]
    for submission in submissions:
        wait_completed(queue, submission.status_url)
    start = datetime.now(UTC) - timedelta(minutes=5)

    items = list(platform.iter_requests([FLUX], start=start, payloads=True, page_size=1))
    plain = list(platform.iter_requests([FLUX], start=start))

    assert sorted(item.request_id for item in items) == sorted(s.request_id for s in submissions)
    inputs = {item.request_id: item.json_input for item in items}
    assert inputs[submissions[1].request_id] == {"prompt": "history 1"}
    assert all(item.status_code == 200 and item.json_output for item in items)
    assert all(item.json_input is None for item in plain)  # payloads only when asked for
    (one,) = platform.iter_requests([FLUX], request_id=submissions[0].request_id)
    assert one.request_id == submissions[0].request_id


def test_admin_endpoints_refuse_an_api_key(platform: FalPlatformClient) -> None:
    start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC)

    for call in (
        lambda: platform.usage(start, end),
        lambda: list(platform.iter_billing_events(start, end)),
        lambda: list(platform.iter_compute_instances()),
        platform.account_billing,
    ):
        with pytest.raises(FalPlatformError) as raised:
            call()
        assert (raised.value.status, raised.value.error_type) == (403, "authorization_error")


def test_account_billing_reads_the_balance(
    fal_emulator: RunningEmulator, admin_platform: FalPlatformClient
) -> None:
    fal_emulator.control.set_balance(24.5)

    billing = admin_platform.account_billing()

    assert billing.username == fal_emulator.config.user_id
    assert billing.credits is not None
    assert (billing.credits.current_balance, billing.credits.currency) == (24.5, "USD")


def test_compute_instances_and_meta(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(
        compute_instances=[{"id": f"i-{n}", "region": "eu-west"} for n in range(3)],
        webhook_ip_ranges=["10.0.0.0/8"],
    )
    admin = FalPlatformClient(settings_for(fal), lambda: fal.admin_key)

    assert [i.id for i in admin.iter_compute_instances()] == ["i-0", "i-1", "i-2"]
    assert admin.meta().webhook_ip_ranges == ["10.0.0.0/8"]


def test_platform_rate_limits_and_server_errors_are_retried(
    fal_emulator: RunningEmulator, platform: FalPlatformClient
) -> None:
    fal_emulator.control.set_faults(platform={"rate_429": 0.5, "rate_500": 0.5, "max_faults": 3})

    assert platform.pricing([FLUX])[0].endpoint_id == FLUX

    assert [r.fault is not None for r in fal_emulator.control.requests() if r.group == "platform"] == [
        True,
        True,
        True,
        False,
    ]


def test_platform_with_a_bad_key(fal_emulator: RunningEmulator) -> None:
    platform = FalPlatformClient(settings_for(fal_emulator), lambda: "wrong:key")

    with pytest.raises(FalPlatformError) as raised:
        platform.pricing([FLUX])

    assert (raised.value.status, raised.value.error_type, raised.value.retryable) == (
        401,
        "authorization_error",
        False,
    )


# ----------------------------------------------------------------------------------- storage


def storage_for(fal: RunningEmulator, **kwargs: int) -> FalStorageClient:
    return FalStorageClient(settings_for(fal), lambda: fal.api_key, **kwargs)


def test_upload_then_download(fal_emulator: RunningEmulator, http: httpx.Client) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40

    url = storage_for(fal_emulator).upload(data, content_type="image/png", file_name="koala.png")

    assert url.startswith(fal_emulator.urls.cdn_url)
    downloaded = http.get(url)
    assert downloaded.content == data
    assert downloaded.headers["content-type"].startswith("image/png")


def test_multipart_upload_then_download(fal_emulator: RunningEmulator, http: httpx.Client) -> None:
    data = bytes((n * 7) % 256 for n in range(200_003))
    storage = storage_for(fal_emulator, multipart_threshold=64 * 1024, part_size=64 * 1024)

    url = storage.upload(data, content_type="application/octet-stream", file_name="blob.bin", size=len(data))

    assert http.get(url).content == data
    parts = [r for r in fal_emulator.control.requests() if r.method == "PUT" and "/multipart/" in r.path]
    assert len(parts) == 4


def test_the_upload_token_is_reused(fal_emulator: RunningEmulator) -> None:
    storage = storage_for(fal_emulator)

    for n in range(3):
        storage.upload(f"file {n}".encode(), content_type="text/plain")

    assert len([r for r in fal_emulator.control.requests() if r.path.endswith("/storage/auth/token")]) == 1


def test_uploads_ride_out_faults(fal_emulator: RunningEmulator, http: httpx.Client) -> None:
    fal_emulator.control.set_faults(upload={"rate_503": 1.0, "max_faults": 2})

    url = storage_for(fal_emulator).upload(b"still arrives", content_type="text/plain")

    assert http.get(url).content == b"still arrives"


def test_upload_of_a_locked_account_is_refused(fal_emulator: RunningEmulator) -> None:
    fal_emulator.control.lock_account()

    with pytest.raises(FalAccountLockedError) as raised:
        storage_for(fal_emulator).upload(b"x", content_type="text/plain")

    assert raised.value.lock_reason == "Admin lock. Please contact support@fal.ai"


def test_upload_with_a_bad_key(fal_emulator: RunningEmulator) -> None:
    storage = FalStorageClient(settings_for(fal_emulator), lambda: "wrong:key")

    with pytest.raises(FalAuthError) as raised:
        storage.upload(b"x", content_type="text/plain")

    assert raised.value.status == 401
    assert [r.path for r in fal_emulator.control.requests()] == ["/rest/storage/auth/token"]


# ------------------------------------------------------------------ fal's backup origins, privacy


def test_with_the_primary_origin_refusing_connections_every_queue_call_uses_the_backup(
    fal_emulator_factory: EmulatorFactory,
) -> None:
    # fal's primary hosts are down: the URLs fal hands out (public_base_url) point at an origin
    # that refuses connections; the emulator's second origin stands in for the backup hosts.
    dead = f"http://127.0.0.1:{free_port()}"
    fal_emulator = fal_emulator_factory(public_base_url=dead)
    queue = FalQueueClient(settings_for(fal_emulator), lambda: fal_emulator.api_key)
    assert fal_emulator.urls.queue_url.startswith(dead)

    submission = queue.submit(FLUX, PROMPT)
    deadline = time.monotonic() + 10
    while not queue.status(submission.status_url).completed:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    result = queue.result(submission.response_url)
    output, served_from = queue.run(FLUX, PROMPT)

    assert result["images"]
    assert (output["images"], served_from) != ([], None)
    (job, _sync) = sorted(fal_emulator.control.jobs(), key=lambda j: j.sync)
    assert job.request_id == submission.request_id  # one submission, though two origins were tried


def test_private_outputs_are_signed_and_payloads_deleted_through_the_client(
    fal_emulator: RunningEmulator,
) -> None:
    settings = settings_for(fal_emulator)
    queue = FalQueueClient(settings, lambda: fal_emulator.api_key)
    files = FalPlatformClient(settings, lambda: fal_emulator.api_key)
    admin = FalPlatformClient(settings, lambda: fal_emulator.admin_key)

    submission = queue.submit(FLUX, PROMPT, lifecycle=OutputLifecycle(initial_acl="forbid"), store_io=False)
    while not queue.status(submission.status_url).completed:
        time.sleep(0.02)
    url = queue.result(submission.response_url)["images"][0]["url"]

    assert httpx.get(url).status_code == 403
    assert httpx.get(files.sign_file_url(url, expiration_seconds=60)).status_code == 200
    with pytest.raises(FalPlatformError) as missing:
        files.sign_file_url(url.replace("image-0", "nothing"), expiration_seconds=60)
    assert (missing.value.status, missing.value.error_type) == (404, "not_found")
    deletion = admin.delete_request_payloads(submission.request_id, idempotency_key="job-1")
    assert [r["link"] for r in deletion.cdn_delete_results] == [url]
    assert not deletion.failures
    with pytest.raises(FalNotFoundError):
        queue.result(submission.response_url)
    (job,) = fal_emulator.control.jobs()
    assert (job.store_io, job.payloads_deleted) == (False, True)


def test_compute_instances_through_the_client(fal_emulator: RunningEmulator) -> None:
    admin = FalPlatformClient(settings_for(fal_emulator), lambda: fal_emulator.admin_key)

    created = admin.create_compute_instance("gpu_1x_h100_sxm5", "ssh-ed25519 AAAA me", idempotency_key="k")

    assert admin.compute_instance(created.id) == created
    admin.delete_compute_instance(created.id)
    with pytest.raises(FalPlatformError) as raised:
        admin.compute_instance(created.id)
    assert raised.value.status == 404
