"""Plain-httpx helpers for the emulator's own tests (no falflow client: these tests pin the wire)."""

from __future__ import annotations

import ssl
import time
from typing import Any

import httpx

from falflow_tools.emulator import RunningEmulator

# Every new httpx client loads the CA bundle (~80 ms); the emulator speaks plain HTTP, so the
# tests share one TLS context instead.
_TLS = ssl.create_default_context()


def http_client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=_TLS, **{"timeout": 10.0} | kwargs)


def key_client(fal: RunningEmulator, key: str | None = None, **kwargs: Any) -> httpx.Client:
    """An httpx client sending ``Authorization: Key <key>`` (the API key by default)."""
    return http_client(headers={"Authorization": f"Key {key or fal.api_key}"}, **kwargs)


def submit(
    client: httpx.Client,
    fal: RunningEmulator,
    endpoint_id: str,
    payload: dict[str, Any],
    **params: str,
) -> dict[str, Any]:
    response = client.post(f"{fal.urls.queue_url}/{endpoint_id}", json=payload, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_completed(client: httpx.Client, status_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get(status_url)
        body: dict[str, Any] = response.json()
        if body["status"] == "COMPLETED":
            assert response.status_code == 200
            return body
        assert response.status_code == 202
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {body['status']} after {timeout_s} s")
        time.sleep(0.02)


def run_to_completion(
    client: httpx.Client, fal: RunningEmulator, endpoint_id: str, payload: dict[str, Any], **params: str
) -> tuple[dict[str, Any], httpx.Response]:
    """Submit, wait for COMPLETED, fetch the result: (submit response body, result response)."""
    queued = submit(client, fal, endpoint_id, payload, **params)
    wait_completed(client, queued["status_url"])
    return queued, client.get(queued["response_url"])
