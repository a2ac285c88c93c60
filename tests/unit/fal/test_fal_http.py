from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from falflow.fal.errors import (
    FalNotFoundError,
    FalRateLimitedError,
    FalRequestTimeoutError,
    FalServerError,
    FalTransportError,
)
from falflow.fal.http import USER_AGENT, FalHttp, RetryPolicy, build_http_client
from falflow.settings import FalSettings
from tests.unit.fal.fal_fakes import API_KEY, ScriptedFal, Sleeps

URL = "https://queue.fal.test/fal-ai/flux/requests/r-1/status"
OK = httpx.Response(200, json={"ok": True})


def fal_http(settings: FalSettings, fal: ScriptedFal, retry: RetryPolicy, key: str = API_KEY) -> FalHttp:
    return FalHttp(settings, lambda: key, fal.client(), retry)


def test_shared_client_carries_user_agent_and_settings_timeouts(settings: FalSettings) -> None:
    client = build_http_client(settings)

    assert client.headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("falflow/")
    assert client.timeout.connect == settings.connect_timeout_s
    assert client.timeout.read == settings.read_timeout_s
    assert not client.follow_redirects


def test_every_call_sends_the_key_from_the_provider_at_call_time(
    settings: FalSettings, retry: RetryPolicy
) -> None:
    keys = iter(["key-1", "key-2"])
    fal = ScriptedFal([OK])
    http = FalHttp(settings, lambda: next(keys), fal.client(), retry)

    http.request("GET", URL, idempotent=True)
    http.request("GET", URL, idempotent=True)

    assert [r.headers["Authorization"] for r in fal.requests] == ["Key key-1", "Key key-2"]


def test_unauthorized_calls_send_no_key(settings: FalSettings, retry: RetryPolicy) -> None:
    fal = ScriptedFal([OK])

    fal_http(settings, fal, retry).request("GET", URL, idempotent=True, authorized=False)

    assert "Authorization" not in fal.requests[0].headers


def test_idempotent_call_retries_retryable_errors_with_exponential_backoff(
    settings: FalSettings, retry: RetryPolicy, sleeps: Sleeps
) -> None:
    fal = ScriptedFal([httpx.Response(503), httpx.Response(429), httpx.ReadTimeout, OK])

    response = fal_http(settings, fal, retry).request("GET", URL, idempotent=True)

    assert response.json() == {"ok": True}
    assert len(fal.requests) == 4
    assert sleeps.delays == pytest.approx([0.2, 0.4, 0.8])


def test_retries_stop_at_max_attempts_and_raise_the_last_error(
    settings: FalSettings, retry: RetryPolicy, sleeps: Sleeps
) -> None:
    fal = ScriptedFal(
        [httpx.Response(503, json={"detail": "busy", "error_type": "runner_scheduling_failure"})]
    )

    with pytest.raises(FalServerError) as raised:
        fal_http(settings, fal, retry).request("GET", URL, idempotent=True)

    assert raised.value.error_type == "runner_scheduling_failure"
    assert len(fal.requests) == settings.max_attempts
    assert len(sleeps.delays) == settings.max_attempts - 1


def test_backoff_is_capped(settings: FalSettings, sleeps: Sleeps) -> None:
    many = settings.model_copy(update={"max_attempts": 8, "backoff_base_s": 1.0, "backoff_cap_s": 5.0})
    fal = ScriptedFal([httpx.Response(500)])
    retry = RetryPolicy.from_settings(many, sleep=sleeps, random=lambda: 1.0)

    with pytest.raises(FalServerError):
        FalHttp(many, lambda: API_KEY, fal.client(), retry).request("GET", URL, idempotent=True)

    assert sleeps.delays == pytest.approx([1, 2, 4, 5, 5, 5, 5])


@given(
    attempt=st.integers(min_value=1, max_value=60),
    base=st.floats(min_value=0.001, max_value=10),
    cap=st.floats(min_value=0.001, max_value=60),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_full_jitter_stays_within_zero_and_the_capped_ceiling(
    attempt: int, base: float, cap: float, draw: float
) -> None:
    policy = RetryPolicy(max_attempts=3, base_s=base, cap_s=cap, random=lambda: draw)

    delay = policy.delay(attempt)

    assert 0 <= delay <= min(cap, base * 2 ** (attempt - 1))
    assert delay == pytest.approx(draw * min(cap, base * 2 ** (attempt - 1)))


def test_non_retryable_errors_are_raised_at_once(
    settings: FalSettings, retry: RetryPolicy, sleeps: Sleeps
) -> None:
    fal = ScriptedFal([httpx.Response(404, json={"detail": "Request not found"})])

    with pytest.raises(FalNotFoundError):
        fal_http(settings, fal, retry).request("GET", URL, idempotent=True)

    assert len(fal.requests) == 1
    assert sleeps.delays == []


def test_expected_statuses_are_returned_not_raised(settings: FalSettings, retry: RetryPolicy) -> None:
    fal = ScriptedFal([httpx.Response(400, json={"status": "ALREADY_COMPLETED"})])

    response = fal_http(settings, fal, retry).request("PUT", URL, idempotent=True, expected={400})

    assert response.status_code == 400


# --- submits: never silently re-sent once fal may have accepted them -------------------------


@pytest.mark.parametrize(
    "ambiguous_failure", [httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError]
)
def test_submit_is_not_resent_after_a_failure_that_may_have_reached_fal(
    settings: FalSettings,
    retry: RetryPolicy,
    sleeps: Sleeps,
    ambiguous_failure: type[httpx.TransportError],
) -> None:
    fal = ScriptedFal([ambiguous_failure, OK])

    with pytest.raises(FalTransportError) as raised:
        fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={"prompt": "x"})

    assert raised.value.ambiguous
    assert len(fal.requests) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("unsent_failure", [httpx.ConnectError, httpx.ConnectTimeout])
def test_submit_is_retried_when_the_connection_never_carried_it(
    settings: FalSettings, retry: RetryPolicy, sleeps: Sleeps, unsent_failure: type[httpx.TransportError]
) -> None:
    fal = ScriptedFal([unsent_failure, OK])

    response = fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={"prompt": "x"})

    assert response.status_code == 200
    assert len(fal.requests) == 2
    assert [r.content for r in fal.requests] == [b'{"prompt":"x"}'] * 2
    assert sleeps.delays == pytest.approx([0.2])


def test_submit_is_retried_after_429(settings: FalSettings, retry: RetryPolicy) -> None:
    fal = ScriptedFal([httpx.Response(429, json={"detail": "queue is full"}), OK])

    fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={})

    assert len(fal.requests) == 2


@pytest.mark.parametrize("status", [502, 503, 504])
def test_submit_is_retried_after_an_ingress_error_without_a_request_id(
    settings: FalSettings, retry: RetryPolicy, status: int
) -> None:
    fal = ScriptedFal([httpx.Response(status, text="<html>nginx</html>"), OK])

    fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={})

    assert len(fal.requests) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_submit_is_not_retried_after_a_server_error_fal_gave_an_id(
    settings: FalSettings, retry: RetryPolicy, status: int
) -> None:
    fal = ScriptedFal([httpx.Response(status, json={"detail": "x"}, headers={"x-fal-request-id": "r-1"}), OK])

    with pytest.raises(FalServerError) as raised:
        fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={})

    assert raised.value.request_id == "r-1"
    assert len(fal.requests) == 1


@pytest.mark.parametrize("body", ["upstream request timeout", ""])
def test_submit_is_not_retried_after_a_proxy_5xx_without_fal_s_ingress_evidence(
    settings: FalSettings, retry: RetryPolicy, body: str
) -> None:
    # A 504 from a proxy that is not fal's nginx ingress can come after fal queued the request.
    fal = ScriptedFal([httpx.Response(504, text=body), OK])

    with pytest.raises(FalServerError) as raised:
        fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={})

    assert not raised.value.not_received
    assert len(fal.requests) == 1


def test_submit_is_not_retried_after_a_500_without_an_id(settings: FalSettings, retry: RetryPolicy) -> None:
    # A 500 comes from fal itself, not from an ingress proxy in front of it.
    fal = ScriptedFal([httpx.Response(500, json={"detail": "x"}), OK])

    with pytest.raises(FalServerError):
        fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={})

    assert len(fal.requests) == 1


def test_submit_is_not_retried_after_its_own_start_deadline(
    settings: FalSettings, retry: RetryPolicy
) -> None:
    deadline = httpx.Response(504, json={"detail": "timeout"}, headers={"X-Fal-Request-Timeout-Type": "user"})
    fal = ScriptedFal([deadline, OK])

    with pytest.raises(FalRequestTimeoutError):
        fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={})

    assert len(fal.requests) == 1


def test_submit_gives_up_after_max_attempts_of_unsent_failures(
    settings: FalSettings, retry: RetryPolicy
) -> None:
    fal = ScriptedFal([httpx.Response(429, json={"detail": "queue is full"})])

    with pytest.raises(FalRateLimitedError):
        fal_http(settings, fal, retry).request("POST", URL, idempotent=False, json={})

    assert len(fal.requests) == settings.max_attempts
