"""Every injected fault is observable by a plain httpx client, and reproducible from the seed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from falflow_tools.emulator import EmulatorConfig, FaultConfig, HttpFaults, RunningEmulator
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.emulator.helpers import (
    http_client,
    key_client,
    run_to_completion,
    submit,
    wait_completed,
)

FLUX = "fal-ai/flux/dev"
Call = Callable[[httpx.Client, RunningEmulator, dict[str, Any]], httpx.Response]


def _finished_job(client: httpx.Client, fal: RunningEmulator) -> dict[str, Any]:
    queued, result = run_to_completion(client, fal, FLUX, {"prompt": "x"})
    return queued | {"image_url": result.json()["images"][0]["url"]}


# One request per fault group; `job` is a finished request made before the fault is switched on.
CALLS: dict[str, Call] = {
    "submit": lambda client, fal, _: client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}),
    "status": lambda client, _, job: client.get(job["status_url"]),
    "result": lambda client, _, job: client.get(job["response_url"]),
    "cancel": lambda client, _, job: client.put(job["cancel_url"]),
    "cdn": lambda client, _, job: client.get(job["image_url"]),
    "platform": lambda client, fal, _: client.get(f"{fal.urls.api_url}/models"),
    "upload": lambda client, fal, _: client.post(f"{fal.urls.rest_url}/storage/auth/token", json={}),
}


@pytest.mark.parametrize("group", sorted(CALLS))
@pytest.mark.parametrize("code", [429, 500, 503])
def test_error_faults_answer_in_the_hosts_shape(
    fal: RunningEmulator, client: httpx.Client, group: str, code: int
) -> None:
    job = _finished_job(client, fal)
    fal.control.set_faults(**{group: {f"rate_{code}": 1.0}})

    response = CALLS[group](client, fal, job)

    assert response.status_code == code
    if group == "platform":
        assert response.json()["error"]["type"] == {429: "rate_limited"}.get(code, "server_error")
    elif code == 503:
        # Looks like fal's ingress, the one 503 fal's clients retry.
        assert "nginx" in response.text
        assert "x-fal-request-id" not in response.headers
    else:
        assert "detail" in response.json()
    assert fal.control.requests()[-1].fault == str(code)


@pytest.mark.parametrize("group", sorted(CALLS))
def test_reset_faults_close_the_connection_without_a_response(
    fal: RunningEmulator, client: httpx.Client, group: str
) -> None:
    job = _finished_job(client, fal)
    fal.control.set_faults(**{group: {"rate_reset": 1.0}})

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        CALLS[group](client, fal, job)
    assert fal.control.requests()[-1].fault == "reset"


def test_a_submit_reset_after_it_was_queued_is_at_fal_but_its_reply_is_lost(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    fal.control.set_faults(submit={"rate_reset_after": 1.0, "max_faults": 1})

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "queued, then reset"})

    (queued,) = fal.control.jobs()  # fal has it: the emulator's own record of submissions
    assert fal.control.requests()[-1].fault == "reset_after"
    fal.control.wait_idle()
    assert fal.control.job(queued.request_id).status == "COMPLETED"


def test_a_proxy_504_after_queueing_carries_no_evidence_that_fal_did_not_receive_it(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    fal.control.set_faults(submit={"rate_proxy_504_after": 1.0, "max_faults": 1})

    response = client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "queued, then 504"})

    assert response.status_code == 504
    assert "x-fal-request-id" not in response.headers
    assert "nginx" not in response.text  # not fal's ingress page: fal's clients would not resend
    assert len(fal.control.jobs()) == 1
    last = fal.control.requests()[-1]
    assert (last.fault, last.status_code) == ("proxy_504_after", 504)


def test_reset_submit_never_reaches_the_queue(fal: RunningEmulator, client: httpx.Client) -> None:
    fal.control.set_faults(submit={"rate_reset": 1.0})
    with pytest.raises(httpx.TransportError):
        client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"})
    assert fal.control.jobs() == []


def test_timeout_fault_loses_the_response_of_work_that_was_done(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    fal.control.set_faults(submit={"rate_timeout": 1.0, "timeout_hold_s": 2.0})

    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}, timeout=0.3)
    (job,) = fal.control.jobs()  # the submit went through: never blindly re-send it
    assert job.endpoint_id == FLUX


@pytest.mark.parametrize("group", ["status", "cdn", "platform"])
def test_timeout_faults_hold_each_group(fal: RunningEmulator, client: httpx.Client, group: str) -> None:
    job = _finished_job(client, fal)
    fal.control.set_faults(**{group: {"rate_timeout": 1.0, "timeout_hold_s": 1.0}})
    with http_client(headers=client.headers, timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        CALLS[group](impatient, fal, job)
    assert fal.control.requests()[-1].fault == "timeout"


def test_max_faults_fails_only_the_first_requests(fal: RunningEmulator, client: httpx.Client) -> None:
    fal.control.set_faults(submit={"rate_503": 1.0, "max_faults": 2})
    codes = [client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_faults_are_reproducible_from_the_seed(fal: RunningEmulator, client: httpx.Client) -> None:
    def outcomes(seed: int) -> list[int]:
        fal.control.set_faults(seed=seed, platform={"rate_429": 0.3, "rate_500": 0.3})
        return [client.get(f"{fal.urls.api_url}/meta").status_code for _ in range(30)]

    first = outcomes(7)
    assert set(first) == {200, 429, 500}
    assert outcomes(7) == first
    assert outcomes(8) != first


def test_status_polls_do_not_shift_which_submits_fail(fal: RunningEmulator, client: httpx.Client) -> None:
    def submits(poll_between: bool) -> list[int]:
        fal.control.set_faults(seed=3, submit={"rate_500": 0.5}, status={"rate_500": 0.5})
        codes = []
        for _ in range(10):
            codes.append(client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}).status_code)
            if poll_between:
                client.get(f"{fal.urls.queue_url}/fal-ai/flux/requests/x/status")
        return codes

    assert submits(poll_between=False) == submits(poll_between=True)


def test_job_errors_complete_with_a_runner_error(fal: RunningEmulator, client: httpx.Client) -> None:
    fal.control.set_faults(job_error_rate=1.0)
    queued, result = run_to_completion(client, fal, FLUX, {"prompt": "x"})
    status = client.get(queued["status_url"]).json()

    assert (status["status"], status["error_type"]) == ("COMPLETED", "runner_server_error")
    assert result.status_code == 500
    assert result.headers["x-fal-error-type"] == "runner_server_error"
    assert result.json()["error_type"] == "runner_server_error"


def test_gateway_retries_change_the_gateway_request_id(fal: RunningEmulator, client: httpx.Client) -> None:
    fal.control.set_faults(gateway_retry_rate=1.0)
    queued = submit(client, fal, FLUX, {"prompt": "x"})
    wait_completed(client, queued["status_url"])
    assert queued["gateway_request_id"] != queued["request_id"]
    assert fal.control.job(queued["request_id"]).gateway_request_id == queued["gateway_request_id"]


def test_faults_from_the_constructor_survive_reset(fal_emulator_factory: EmulatorFactory) -> None:
    config = EmulatorConfig(faults=FaultConfig(submit=HttpFaults(rate_429=1.0)))
    fal = fal_emulator_factory(config)
    with key_client(fal) as client:
        assert client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}).status_code == 429
        fal.control.set_faults()
        assert client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}).status_code == 200
        fal.control.reset()
        assert fal.control.faults().submit.rate_429 == 1.0
        response = client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"})
    assert response.status_code == 429
    assert response.headers["x-fal-needs-retry"] == "1"


def test_invalid_fault_settings_are_refused(fal: RunningEmulator, anonymous: httpx.Client) -> None:
    response = anonymous.post(
        f"{fal.urls.control_url}/faults", json={"submit": {"rate_500": 0.7, "rate_503": 0.7}}
    )
    assert response.status_code == 422
    with pytest.raises(ValueError, match="add up to at most 1"):
        HttpFaults(rate_500=0.7, rate_503=0.7)
