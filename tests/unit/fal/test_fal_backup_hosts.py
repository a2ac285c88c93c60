"""fal's backup origins (docs/fal-contract.md §2): a request the primary queue or run host could not
even be connected to goes once, unchanged, to ``queue.falrun.com`` / ``falrun.com``; nothing else
does (fal-ai/fal ``test_fallback_domains``, ``test_http_does_not_fallback``)."""

from __future__ import annotations

import httpx
import pytest

from falflow.fal.errors import FalServerError, FalTransportError
from falflow.fal.http import FalHttp, RetryPolicy
from falflow.fal.queue import FalQueueClient
from falflow.settings import FalSettings
from tests.unit.fal.fal_fakes import API_KEY, ScriptedFal, Sleeps

SUBMIT = "https://queue.fal.test/fal-ai/flux/dev?fal_webhook=https%3A%2F%2Fhook%2F%3Fjob_id%3Dj"


@pytest.fixture
def with_backups(settings: FalSettings) -> FalSettings:
    return settings.model_copy(
        update={"queue_backup_url": "https://queue.falrun.test", "run_backup_url": "https://falrun.test"}
    )


def refuse_primary(request: httpx.Request) -> httpx.Response:
    if request.url.host in ("queue.fal.test", "fal.test"):
        raise httpx.ConnectError("connection refused", request=request)
    return httpx.Response(200, json={"ok": True, "host": request.url.host})


@pytest.mark.parametrize(
    ("url", "backup_host"),
    [(SUBMIT, "queue.falrun.test"), ("https://fal.test/fal-ai/flux/dev", "falrun.test")],
)
def test_a_refused_connection_is_sent_once_unchanged_to_the_backup_origin(
    with_backups: FalSettings, retry: RetryPolicy, sleeps: Sleeps, url: str, backup_host: str
) -> None:
    fal = ScriptedFal([refuse_primary])
    http = FalHttp(with_backups, lambda: API_KEY, fal.client(), retry)

    response = http.request("POST", url, idempotent=False, json={"prompt": "x"})

    assert response.json()["host"] == backup_host
    primary, backup = fal.requests
    assert backup.url == primary.url.copy_with(host=backup_host)
    assert backup.content == primary.content == b'{"prompt":"x"}'
    assert backup.headers["Authorization"] == f"Key {API_KEY}"
    assert sleeps.delays == []  # the backup is part of the same attempt


@pytest.mark.parametrize(
    "failure", [httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout]
)
def test_a_failure_after_the_connection_exists_never_goes_to_the_backup(
    with_backups: FalSettings, retry: RetryPolicy, failure: type[httpx.TransportError]
) -> None:
    fal = ScriptedFal([failure])
    http = FalHttp(with_backups, lambda: API_KEY, fal.client(), retry)

    with pytest.raises(FalTransportError) as raised:
        http.request("POST", SUBMIT, idempotent=False, json={})

    assert raised.value.ambiguous  # fal may have it: resending (anywhere) could duplicate the job
    assert {r.url.host for r in fal.requests} == {"queue.fal.test"}


def test_an_http_error_from_the_primary_is_not_a_reason_to_switch_hosts(
    with_backups: FalSettings, retry: RetryPolicy
) -> None:
    fal = ScriptedFal([httpx.Response(500, json={"detail": "boom"}, headers={"x-fal-request-id": "r"})])

    with pytest.raises(FalServerError):
        FalHttp(with_backups, lambda: API_KEY, fal.client(), retry).request("POST", SUBMIT, idempotent=False)

    assert {r.url.host for r in fal.requests} == {"queue.fal.test"}


def test_other_hosts_have_no_backup(with_backups: FalSettings, retry: RetryPolicy) -> None:
    fal = ScriptedFal([httpx.ConnectError])
    http = FalHttp(with_backups, lambda: API_KEY, fal.client(), retry)

    with pytest.raises(FalTransportError):
        http.request("GET", "https://api.fal.test/v1/models", idempotent=True)

    assert {r.url.host for r in fal.requests} == {"api.fal.test"}


def test_when_both_origins_refuse_the_retry_policy_sees_the_primary_error(
    with_backups: FalSettings, retry: RetryPolicy, sleeps: Sleeps
) -> None:
    fal = ScriptedFal([httpx.ConnectError, httpx.ConnectError, httpx.Response(200, json={})])

    FalHttp(with_backups, lambda: API_KEY, fal.client(), retry).request("POST", SUBMIT, idempotent=False)

    # Certainly unsent both times, so the submit is retried after a backoff (primary first again).
    assert [r.url.host for r in fal.requests] == ["queue.fal.test", "queue.falrun.test", "queue.fal.test"]
    assert sleeps.delays == pytest.approx([0.2])


def test_stored_urls_on_the_backup_queue_origin_are_fal_s_own(
    with_backups: FalSettings, retry: RetryPolicy
) -> None:
    fal = ScriptedFal([httpx.Response(200, json={"status": "IN_QUEUE"})])
    queue = FalQueueClient(with_backups, lambda: API_KEY, fal.client(), retry=retry)

    status = queue.status("https://queue.falrun.test/fal-ai/flux/requests/r-1/status")

    assert status.status == "IN_QUEUE"
    with pytest.raises(ValueError, match="not fal's queue host"):
        queue.status("https://falrun.test.evil/fal-ai/flux/requests/r-1/status")
