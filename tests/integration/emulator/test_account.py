"""The account's balance and lock (docs/fal-contract.md §6): billed requests are charged, an
exhausted balance locks the account, and a locked account's submits and uploads answer 403 while
its requests in flight still finish."""

from __future__ import annotations

import httpx
import pytest

from falflow_tools.emulator import RunningEmulator
from falflow_tools.emulator.account import ADMIN_LOCK, EXHAUSTED_BALANCE
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.emulator.helpers import key_client, run_to_completion, submit, wait_completed

FLUX = "fal-ai/flux/dev"  # 0.025 USD per image
PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)


def locked(reason: str) -> dict[str, str]:
    return {"detail": f"User is locked. Reason: {reason}"}


def cdn_token(client: httpx.Client, fal: RunningEmulator) -> str:
    response = client.post(f"{fal.urls.rest_url}/storage/auth/token", params={"storage_type": "fal-cdn-v3"})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def upload(fal: RunningEmulator, token: str) -> httpx.Response:
    return httpx.post(
        f"{fal.urls.cdn_url}/files/upload",
        content=PNG,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "image/png"},
    )


def test_a_locked_account_refuses_submits_and_uploads_while_its_requests_in_flight_finish(
    fal_emulator_factory: EmulatorFactory,
) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.3)
    with key_client(fal) as client:
        in_flight = submit(client, fal, FLUX, {"prompt": "before the lock"})
        token = cdn_token(client, fal)

        view = fal.control.lock_account()

        assert (view.locked, view.lock_reason) == (True, ADMIN_LOCK)
        for refused in (
            client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}),
            client.post(f"{fal.urls.run_url}/{FLUX}", json={"prompt": "x"}),
            client.post(f"{fal.urls.rest_url}/storage/auth/token", params={"storage_type": "fal-cdn-v3"}),
            client.post(f"{fal.urls.rest_url}/storage/upload/initiate", json={"file_name": "a.png"}),
            upload(fal, token),
        ):
            assert (refused.status_code, refused.json()) == (403, locked(ADMIN_LOCK)), refused.request.url
        # A bad key is still told so first.
        with key_client(fal, "nobody:wrong") as stranger:
            assert stranger.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}).status_code == 401

        # Status, result and cancel are not billable: the request submitted before the lock ends.
        wait_completed(client, in_flight["status_url"])
        result = client.get(in_flight["response_url"])
        assert result.status_code == 200
        assert client.put(in_flight["cancel_url"]).json() == {"status": "ALREADY_COMPLETED"}
        assert httpx.get(result.json()["images"][0]["url"]).status_code == 200  # the CDN still serves
        assert client.get(f"{fal.urls.api_url}/models/pricing", params={"endpoint_id": FLUX}).is_success

        assert fal.control.unlock_account().locked is False
        submit(client, fal, FLUX, {"prompt": "after the unlock"})
        assert upload(fal, cdn_token(client, fal)).status_code == 200


def test_the_balance_pays_for_billed_requests_and_running_out_locks_the_account(
    fal: RunningEmulator, client: httpx.Client, admin: httpx.Client
) -> None:
    assert fal.control.account().balance_usd == 1000.0
    fal.control.set_balance(0.06)

    run_to_completion(client, fal, FLUX, {"prompt": "x", "num_images": 2})
    assert fal.control.account().balance_usd == pytest.approx(0.01)
    run_to_completion(client, fal, FLUX, {"num_images": 3})  # no prompt: a 422, not billed
    assert fal.control.account().locked is False
    run_to_completion(client, fal, FLUX, {"prompt": "y"})  # 0.025 takes it below 0

    account = fal.control.account()
    assert (account.balance_usd, account.locked, account.lock_reason) == (
        pytest.approx(-0.015),
        True,
        EXHAUSTED_BALANCE,
    )
    events = admin.get(f"{fal.urls.api_url}/models/billing-events").json()["billing_events"]
    assert 0.06 - sum(event["cost_total"] for event in events) == pytest.approx(account.balance_usd)
    refused = client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "z"})
    assert (refused.status_code, refused.json()) == (403, locked(EXHAUSTED_BALANCE))

    topped_up = fal.control.set_balance(10.0)  # a top-up lifts an exhausted-balance lock

    assert (topped_up.balance_usd, topped_up.locked, topped_up.lock_reason) == (10.0, False, None)
    submit(client, fal, FLUX, {"prompt": "z"})


def test_a_top_up_does_not_lift_an_admin_lock_and_a_reset_restores_the_account(fal: RunningEmulator) -> None:
    fal.control.lock_account("TOP_UP.")
    assert fal.control.set_balance(500.0).lock_reason == "TOP_UP."
    assert fal.control.set_balance(-1.0).lock_reason == "TOP_UP."  # still the first lock's reason

    fal.control.reset()

    assert fal.control.account().model_dump() == {
        "balance_usd": 1000.0,
        "lock_threshold_usd": 0.0,
        "locked": False,
        "lock_reason": None,
    }


def test_a_balance_that_starts_below_the_threshold_is_locked(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(starting_balance_usd=4.0, lock_threshold_usd=5.0)

    assert fal.control.account().lock_reason == EXHAUSTED_BALANCE
    assert fal.control.set_balance(5.0).locked is False  # not below the threshold any more
    assert fal.control.set_balance(4.99).lock_reason == EXHAUSTED_BALANCE


def test_the_lock_control_checks_its_body(fal: RunningEmulator) -> None:
    with httpx.Client(base_url=f"{fal.base_url}/_emulator") as control:
        assert control.post("/account/lock", json={"reason": ""}).status_code == 422
        assert control.post("/account/balance", json={}).status_code == 422
        assert control.post("/account/lock").json()["lock_reason"] == ADMIN_LOCK
