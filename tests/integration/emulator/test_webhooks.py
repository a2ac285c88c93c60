"""Webhooks: fal's payload shapes, ED25519 signatures over the raw body, retries and faults."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from falflow_tools.emulator import RunningEmulator
from tests.fixtures.fal_emulator import EmulatorFactory, ReceivedWebhook, WebhookSink
from tests.integration.emulator.helpers import http_client, key_client, submit, wait_completed

FLUX = "fal-ai/flux/dev"


def public_keys(jwks_url: str) -> dict[str, Ed25519PublicKey]:
    with http_client() as anonymous:
        keys = anonymous.get(jwks_url).json()["keys"]
    for key in keys:
        assert (key["kty"], key["crv"]) == ("OKP", "Ed25519")
        assert "=" not in key["x"]  # base64url without padding, as fal publishes it
    return {
        key["kid"]: Ed25519PublicKey.from_public_bytes(
            base64.urlsafe_b64decode(key["x"] + "=" * (-len(key["x"]) % 4))
        )
        for key in keys
    }


def signing_kid(webhook: ReceivedWebhook, keys: dict[str, Ed25519PublicKey]) -> str:
    """The kid whose key verifies the delivery, checked the way fal documents it."""
    headers = webhook.headers
    message = "\n".join(
        [
            headers["x-fal-webhook-request-id"],
            headers["x-fal-webhook-user-id"],
            headers["x-fal-webhook-timestamp"],
            hashlib.sha256(webhook.body).hexdigest(),
        ]
    ).encode()
    signature = bytes.fromhex(headers["x-fal-webhook-signature"])
    for kid, key in keys.items():
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return kid
    raise AssertionError("no JWKS key verifies the webhook")


def submit_with_webhook(
    client: httpx.Client, fal: RunningEmulator, sink: WebhookSink, **payload: Any
) -> dict[str, Any]:
    return submit(client, fal, FLUX, payload or {"prompt": "a cat"}, fal_webhook=sink.url)


def test_webhook_is_delivered_signed_with_the_result(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    queued = submit_with_webhook(client, fal, webhook_sink)
    (webhook,) = webhook_sink.wait_for(1)

    assert webhook.path == "/webhooks/fal"
    assert webhook.headers["x-fal-webhook-request-id"] == queued["request_id"]
    assert webhook.headers["x-fal-webhook-user-id"] == fal.user_id
    assert abs(int(webhook.headers["x-fal-webhook-timestamp"]) - time.time()) < 300
    keys = public_keys(fal.jwks_url)
    assert signing_kid(webhook, keys) in keys
    result = client.get(queued["response_url"]).json()
    assert webhook.json() == {
        "request_id": queued["request_id"],
        "gateway_request_id": queued["gateway_request_id"],
        "status": "OK",
        "payload": result,
    }
    # Tampering with one byte of the raw body breaks the signature.
    tampered = ReceivedWebhook(webhook.path, webhook.headers, webhook.body.replace(b'"OK"', b'"ok"'), 0.0)
    with pytest.raises(AssertionError, match="no JWKS key"):
        signing_kid(tampered, keys)


def test_failed_request_sends_an_error_webhook(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    queued = submit(client, fal, FLUX, {"num_images": 2}, fal_webhook=webhook_sink.url)
    (webhook,) = webhook_sink.wait_for(1)

    assert webhook.json() == {
        "request_id": queued["request_id"],
        "gateway_request_id": queued["gateway_request_id"],
        "status": "ERROR",
        "error": "Invalid status code: 422",
        "payload": {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]},
    }


def test_unreachable_input_url_fails_the_request_not_the_emulator(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    missing = f"{fal.urls.cdn_url}/files/nothing/here.png"
    closed_port = "http://127.0.0.1:9/input.png"
    ids = [
        submit(client, fal, "fal-ai/clarity-upscaler", {"image_url": url}, fal_webhook=webhook_sink.url)[
            "request_id"
        ]
        for url in (missing, closed_port, f"{fal.urls.api_url}/no-such-path")
    ]
    webhooks = {hook.json()["request_id"]: hook.json() for hook in webhook_sink.wait_for(3)}

    for request_id in ids:
        body = webhooks[request_id]
        assert (body["status"], body["error"]) == ("ERROR", "Invalid status code: 422")
        (detail,) = body["payload"]["detail"]
        assert (detail["loc"], detail["type"]) == (["body", "image_url"], "file_download_error")
        assert fal.control.job(request_id).status == "COMPLETED"


def test_non_2xx_replies_are_retried_and_each_attempt_is_signed(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    webhook_sink.statuses = [500, 503]
    queued = submit_with_webhook(client, fal, webhook_sink)
    webhooks = webhook_sink.wait_for(3)
    fal.control.wait_idle()

    keys = public_keys(fal.jwks_url)
    assert {signing_kid(hook, keys) for hook in webhooks} <= set(keys)
    assert len({hook.body for hook in webhooks}) == 1
    attempts = fal.control.job(queued["request_id"]).deliveries
    assert [(a.attempt, a.outcome, a.status_code) for a in attempts] == [
        (1, "http_error", 500),
        (2, "http_error", 503),
        (3, "delivered", 200),
    ]


def test_slow_replies_time_out_and_are_retried(
    fal_emulator_factory: EmulatorFactory, webhook_sink: WebhookSink
) -> None:
    fal = fal_emulator_factory(webhook_timeout_s=0.2, webhook_backoff_s=0.01)
    webhook_sink.delays_s = [0.5]
    with key_client(fal) as client:
        queued = submit_with_webhook(client, fal, webhook_sink)
        webhook_sink.wait_for(2)
        fal.control.wait_idle()
    outcomes = [attempt.outcome for attempt in fal.control.job(queued["request_id"]).deliveries]
    assert outcomes == ["timeout", "delivered"]


def test_deliveries_in_flight_are_bounded_and_the_rest_wait_their_turn(
    fal_emulator_factory: EmulatorFactory, webhook_sink: WebhookSink
) -> None:
    fal = fal_emulator_factory(webhook_concurrency=2, queue_wait_s=0.0, run_time_s=0.0)
    webhook_sink.delays_s = [0.1] * 8  # a slow receiver: deliveries pile up
    with key_client(fal) as client:
        for n in range(8):
            submit_with_webhook(client, fal, webhook_sink, prompt=f"cat {n}")
        webhook_sink.wait_for(8)
        fal.control.wait_idle()
    assert webhook_sink.most_in_flight == 2
    attempts = [attempt for n in range(8) for attempt in fal.control.jobs()[n].deliveries]
    assert [attempt.outcome for attempt in attempts] == ["delivered"] * 8  # waiting is no timeout


def test_retries_stop_after_the_configured_count(
    fal_emulator_factory: EmulatorFactory, webhook_sink: WebhookSink
) -> None:
    fal = fal_emulator_factory(webhook_max_retries=3, webhook_backoff_s=0.01)
    webhook_sink.statuses = [500] * 10
    with key_client(fal) as client:
        submit_with_webhook(client, fal, webhook_sink)
        fal.control.wait_idle()
    assert len(webhook_sink.received) == 4


def test_payload_error_sends_ok_without_payload(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    fal.control.set_faults(payload_error_rate=1.0)
    queued = submit_with_webhook(client, fal, webhook_sink)
    (webhook,) = webhook_sink.wait_for(1)

    body = webhook.json()
    assert (body["status"], body["payload"]) == ("OK", None)
    assert isinstance(body["payload_error"], str)
    assert client.get(queued["response_url"]).status_code == 200  # the result is still there


def test_dropped_webhooks_are_never_sent(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    fal.control.set_faults(webhook={"drop_rate": 1.0})
    queued = submit_with_webhook(client, fal, webhook_sink)
    wait_completed(client, queued["status_url"])
    fal.control.wait_idle()

    assert webhook_sink.received == []
    (attempt,) = fal.control.job(queued["request_id"]).deliveries
    assert attempt.outcome == "dropped"


def test_duplicated_webhooks_arrive_twice(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    fal.control.set_faults(webhook={"duplicate_rate": 1.0})
    queued = submit_with_webhook(client, fal, webhook_sink)
    first, second = webhook_sink.wait_for(2)
    fal.control.wait_idle()

    assert first.body == second.body
    assert (
        first.headers["x-fal-webhook-request-id"]
        == second.headers["x-fal-webhook-request-id"]
        == queued["request_id"]
    )
    assert [a.delivery for a in fal.control.webhooks()] == ["original", "duplicate"]
    assert len(webhook_sink.received) == 2


def test_delayed_webhooks_arrive_late(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    fal.control.set_faults(webhook={"delay_rate": 1.0, "delay_s": 0.5})
    queued = submit_with_webhook(client, fal, webhook_sink)
    (webhook,) = webhook_sink.wait_for(1)

    completed_at = fal.control.job(queued["request_id"]).completed_at
    assert completed_at is not None
    assert webhook.received_at - completed_at >= 0.5


def test_reordered_webhook_arrives_after_a_later_one(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    fal.control.set_faults(webhook={"reorder_rate": 1.0, "reorder_max_hold_s": 5.0})
    early = submit_with_webhook(client, fal, webhook_sink)
    wait_completed(client, early["status_url"])
    fal.control.set_faults()  # later deliveries go straight out and release the parked one
    late = submit_with_webhook(client, fal, webhook_sink)
    webhooks = webhook_sink.wait_for(2, timeout_s=3)

    assert [hook.json()["request_id"] for hook in webhooks] == [late["request_id"], early["request_id"]]


def test_rotated_keys_sign_new_deliveries(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    submit_with_webhook(client, fal, webhook_sink)
    webhook_sink.wait_for(1)
    old_keys = public_keys(fal.jwks_url)
    new_kid = fal.control.rotate_key()
    submit_with_webhook(client, fal, webhook_sink)
    _, after = webhook_sink.wait_for(2)

    both = public_keys(fal.jwks_url)
    assert set(both) == set(old_keys) | {new_kid}
    assert signing_kid(after, both) == new_kid
    with pytest.raises(AssertionError):
        signing_kid(after, old_keys)
    fal.control.rotate_key(keep_previous=False)
    assert len(public_keys(fal.jwks_url)) == 1


def test_sync_runs_send_no_webhook(
    fal: RunningEmulator, client: httpx.Client, webhook_sink: WebhookSink
) -> None:
    response = client.post(
        f"{fal.urls.run_url}/{FLUX}", json={"prompt": "x"}, params={"fal_webhook": webhook_sink.url}
    )
    fal.control.wait_idle()

    assert response.status_code == 200
    assert webhook_sink.received == []
