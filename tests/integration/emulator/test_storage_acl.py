"""Private outputs, storage settings, signed URLs, payload deletion, compute instances, model
fallbacks and the backup origin, as fal's Platform OpenAPI and clients describe them: every
Platform response is checked against the spec (docs/fal-contract.md §2, §4, §5)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from falflow_tools.emulator import RunningEmulator
from falflow_tools.emulator.acl import AccountStorage, Acl, Lifecycle, StorageSettingsBody
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.emulator.helpers import http_client, wait_completed
from tests.integration.emulator.platform_contract import assert_matches_spec

FLUX = "fal-ai/flux/dev"


def run(
    client: httpx.Client, fal: RunningEmulator, headers: dict[str, str] | None = None, endpoint: str = FLUX
) -> tuple[dict[str, Any], httpx.Response]:
    response = client.post(f"{fal.urls.queue_url}/{endpoint}", json={"prompt": "a"}, headers=headers or {})
    assert response.status_code == 200, response.text
    queued: dict[str, Any] = response.json()
    wait_completed(client, queued["status_url"])
    return queued, client.get(queued["response_url"])


def output_url(result: httpx.Response) -> str:
    return str(result.json()["images"][0]["url"])


def put_settings(fal: RunningEmulator, client: httpx.Client, body: dict[str, Any]) -> Any:
    return assert_matches_spec(client.put(f"{fal.urls.api_url}/storage/settings", json=body))


def test_storage_settings_start_empty_and_drop_rules_for_unknown_users(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    assert assert_matches_spec(client.get(f"{fal.urls.api_url}/storage/settings")) == {
        "expiration_duration_seconds": None,
        "initial_acl": None,
    }
    saved = put_settings(
        fal,
        client,
        {
            "expiration_duration_seconds": 86400,
            "initial_acl": {
                "default": "forbid",
                "rules": [
                    {"user": fal.user_id, "decision": "allow"},
                    {"user": "nobody-we-know", "decision": "allow"},
                ],
            },
        },
    )
    assert saved["initial_acl"]["rules"] == [{"user": fal.user_id, "decision": "allow"}]
    assert assert_matches_spec(client.get(f"{fal.urls.api_url}/storage/settings")) == saved
    # Omitted fields are cleared (the spec: "always send the full desired configuration").
    assert put_settings(fal, client, {}) == {"expiration_duration_seconds": None, "initial_acl": None}


@pytest.mark.parametrize(("decision", "status"), [("forbid", 403), ("hide", 404), ("allow", 200)])
def test_the_account_default_acl_decides_what_an_anonymous_read_of_an_output_gets(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client, decision: str, status: int
) -> None:
    put_settings(fal, client, {"initial_acl": {"default": decision}})
    _, result = run(client, fal)
    url = output_url(result)

    assert anonymous.get(url).status_code == status
    acl = assert_matches_spec(client.get(f"{fal.urls.api_url}/storage/files/acl", params={"url": url}))
    assert acl == {"default": decision, "rules": []}


def test_a_signed_url_reads_a_private_file_and_only_that_file(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client
) -> None:
    put_settings(fal, client, {"initial_acl": {"default": "forbid"}})
    _, first = run(client, fal)
    _, second = run(client, fal)
    url = output_url(first)

    signed = assert_matches_spec(
        client.post(
            f"{fal.urls.api_url}/storage/files/sign", params={"url": url}, json={"expiration_seconds": 60}
        )
    )["signed_url"]

    assert signed.startswith(url + "?identity=")
    read = anonymous.get(signed)
    assert read.status_code == 200
    assert read.headers["content-type"] == "image/png"
    other = output_url(second) + "?" + signed.split("?", 1)[1]
    assert anonymous.get(other).status_code == 403  # the signature is for one file


def test_the_request_lifecycle_header_overrides_the_account_default(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client
) -> None:
    put_settings(fal, client, {"initial_acl": {"default": "forbid"}})
    public = {"X-Fal-Object-Lifecycle-Preference": json.dumps({"initial_acl": {"default": "allow"}})}
    _, result = run(client, fal, public)

    assert anonymous.get(output_url(result)).status_code == 200
    hidden = {
        "X-Fal-Object-Lifecycle-Preference": json.dumps({"initial_acl": {"default": "hide", "rules": []}})
    }
    _, result = run(client, fal, hidden)
    assert anonymous.get(output_url(result)).status_code == 404


def test_a_file_acl_can_be_replaced(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client
) -> None:
    put_settings(fal, client, {"initial_acl": {"default": "forbid"}})
    _, result = run(client, fal)
    url = output_url(result)

    applied = assert_matches_spec(
        client.put(f"{fal.urls.api_url}/storage/files/acl", params={"url": url}, json={"default": "allow"})
    )

    assert applied == {"default": "allow", "rules": []}
    assert anonymous.get(url).status_code == 200


def test_signing_refuses_what_the_spec_refuses(fal: RunningEmulator, client: httpx.Client) -> None:
    _, result = run(client, fal)
    url = output_url(result)
    sign = f"{fal.urls.api_url}/storage/files/sign"
    for response, status in (
        (client.post(sign, params={"url": url}, json={"expiration_seconds": 0}), 400),
        (client.post(sign, params={"url": url}, json={"expiration_seconds": 604801}), 400),
        (client.post(sign, params={"url": url + "?x=1"}, json={"expiration_seconds": 60}), 400),
        (
            client.post(
                sign, params={"url": f"{fal.urls.cdn_url}/files/nope/a.png"}, json={"expiration_seconds": 60}
            ),
            404,
        ),
        (http_client().post(sign, params={"url": url}, json={"expiration_seconds": 60}), 401),
    ):
        assert response.status_code == status, response.text
        assert_matches_spec(response)


def test_expiry_and_signatures_follow_the_clock() -> None:
    storage = AccountStorage(known_users=frozenset({"me"}))
    storage.save_settings(
        StorageSettingsBody(expiration_duration_seconds=60, initial_acl=Acl(default="hide"))
    )
    storage.register(("f", "a.png"), storage.for_new_file(None), created_at=1000.0)
    token = storage.sign(("f", "a.png"), 30)

    assert storage.decide(("f", "a.png"), None, now=1001.0) == "hide"
    assert storage.decide(("f", "a.png"), token, now=1001.0) == "allow"
    assert storage.decide(("f", "a.png"), "forged", now=1001.0) == "hide"
    assert storage.decide(("f", "a.png"), token, now=1060.0) == "expired"
    lifecycle = Lifecycle.from_header('{"expiration_duration_seconds": 5}')
    assert storage.for_new_file(lifecycle).expiration_duration_seconds == 5


def test_deleting_a_requests_payloads_needs_admin_and_removes_result_and_outputs(
    fal: RunningEmulator, client: httpx.Client, admin: httpx.Client, anonymous: httpx.Client
) -> None:
    queued, result = run(client, fal)
    url = f"{fal.urls.api_url}/models/requests/{queued['request_id']}/payloads"

    assert assert_matches_spec(client.delete(url))["error"]["type"] == "authorization_error"
    deleted = assert_matches_spec(admin.delete(url, headers={"Idempotency-Key": "k-1"}))

    assert deleted["cdn_delete_results"] == [{"link": output_url(result), "exception": None}]
    assert client.get(queued["response_url"]).status_code == 404
    assert anonymous.get(output_url(result)).status_code == 404
    (job,) = fal.control.jobs()
    assert job.payloads_deleted
    missing = admin.delete(
        f"{fal.urls.api_url}/models/requests/00000000-0000-0000-0000-000000000000/payloads"
    )
    assert missing.status_code == 404
    assert_matches_spec(missing)


def test_compute_instances_are_created_read_and_deleted(fal: RunningEmulator, admin: httpx.Client) -> None:
    instances = f"{fal.urls.api_url}/compute/instances"
    body = {"instance_type": "gpu_8x_h100_sxm5", "ssh_key": "ssh-ed25519 AAAA me", "sector": "sector_2"}

    created = assert_matches_spec(admin.post(instances, json=body, headers={"Idempotency-Key": "k"}))
    again = assert_matches_spec(admin.post(instances, json=body, headers={"Idempotency-Key": "k"}))

    assert again["id"] == created["id"]  # the same Idempotency-Key creates one instance
    assert assert_matches_spec(admin.get(f"{instances}/{created['id']}")) == created
    assert [i["id"] for i in assert_matches_spec(admin.get(instances))["instances"]] == [created["id"]]
    deleted = admin.delete(f"{instances}/{created['id']}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert assert_matches_spec(admin.get(f"{instances}/{created['id']}"))["error"]["type"] == "not_found"
    bad = admin.post(
        instances, json={"instance_type": "gpu_1x_h100_sxm5", "ssh_key": "k", "sector": "sector_1"}
    )
    assert bad.status_code == 400
    assert_matches_spec(bad)


def test_a_model_fallback_is_reported_unless_the_request_disabled_it(
    fal_emulator_factory: EmulatorFactory,
) -> None:
    fal = fal_emulator_factory(model_fallbacks={FLUX: "fal-ai/flux/schnell"}, faults={"fallback_rate": 1.0})
    with http_client(headers={"Authorization": f"Key {fal.api_key}"}) as client:
        _, rerouted = run(client, fal)
        _, kept = run(client, fal, {"X-Fal-Disable-Fallbacks": "true"})

    assert rerouted.headers["x-fal-served-from"] == "fal-ai/flux/schnell"
    assert kept.headers["x-fal-served-from"] == FLUX
    assert sorted((j.fallbacks_allowed, j.served_from) for j in fal.control.jobs()) == [
        (False, FLUX),
        (True, "fal-ai/flux/schnell"),
    ]


def test_the_backup_origin_serves_the_same_queue(fal: RunningEmulator, client: httpx.Client) -> None:
    assert fal.urls.queue_backup_url
    assert fal.urls.queue_backup_url != fal.urls.queue_url
    response = client.post(f"{fal.urls.queue_backup_url}/{FLUX}", json={"prompt": "a"})

    assert response.status_code == 200
    assert wait_completed(client, response.json()["status_url"])["status"] == "COMPLETED"
    assert fal.env()["FAL_QUEUE_BACKUP_URL"] == fal.urls.queue_backup_url
