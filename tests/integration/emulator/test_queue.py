"""The queue and sync hosts behave like fal's (docs/fal-contract.md §2), observed with plain httpx."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from falflow_tools.emulator import RunningEmulator
from falflow_tools.emulator.endpoints import EndpointId, RequestPath, parse_request_path
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.emulator.helpers import key_client, run_to_completion, submit, wait_completed

FLUX = "fal-ai/flux/dev"
KLING = "fal-ai/kling-video/v2/master/text-to-video"


@pytest.mark.parametrize(
    ("endpoint_id", "app", "path"),
    [
        ("fal-ai/flux/dev", "fal-ai/flux", "dev"),
        ("fal-ai/kling-video/v2/master/text-to-video", "fal-ai/kling-video", "v2/master/text-to-video"),
        ("fal-ai/stable-audio", "fal-ai/stable-audio", None),
        ("workflows/fal-ai/my-flow", "workflows/fal-ai/my-flow", None),
        ("comfy/someone/graph/run", "comfy/someone/graph", "run"),
        ("123-myapp", "123/myapp", None),
    ],
)
def test_endpoint_ids_split_like_fals_clients(endpoint_id: str, app: str, path: str | None) -> None:
    parsed = EndpointId.parse(endpoint_id)
    assert (parsed.app, parsed.path) == (app, path)


@pytest.mark.parametrize("endpoint_id", ["flux", "workflows/only-owner", "a//b"])
def test_malformed_endpoint_ids_are_rejected(endpoint_id: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint id"):
        EndpointId.parse(endpoint_id)


def test_request_paths_name_the_app_only() -> None:
    assert parse_request_path("fal-ai/flux/requests/abc/status") == RequestPath(
        "fal-ai/flux", "abc", "status"
    )
    assert parse_request_path("workflows/o/a/requests/abc/cancel") == RequestPath(
        "workflows/o/a", "abc", "cancel"
    )
    assert parse_request_path("fal-ai/flux/requests/abc/status/stream") == RequestPath(
        "fal-ai/flux", "abc", "stream"
    )
    assert parse_request_path("fal-ai/flux/dev/requests/abc/status") is None
    assert parse_request_path("fal-ai/flux/requests/abc/result") is None


def test_submit_answers_fal_urls_without_the_subpath(fal: RunningEmulator, client: httpx.Client) -> None:
    response = client.post(f"{fal.urls.queue_url}/{KLING}", json={"prompt": "a fox"})

    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    base = f"{fal.urls.queue_url}/fal-ai/kling-video/requests/{request_id}"
    assert body == {
        "status": "IN_QUEUE",
        "request_id": request_id,
        "gateway_request_id": request_id,
        "response_url": base,
        "status_url": f"{base}/status",
        "cancel_url": f"{base}/cancel",
        "queue_position": 0,
    }
    assert response.headers["x-fal-request-id"] == request_id
    assert client.get(body["status_url"]).status_code in (200, 202)


def test_request_urls_with_the_subpath_are_not_found(fal: RunningEmulator, client: httpx.Client) -> None:
    queued = submit(client, fal, KLING, {"prompt": "a fox"})
    request_id = queued["request_id"]
    wrong = f"{fal.urls.queue_url}/{KLING}/requests/{request_id}"

    assert client.get(f"{wrong}/status").status_code == 404
    assert client.get(wrong).status_code == 404
    assert client.put(f"{wrong}/cancel").status_code == 404
    # Another app's URL does not reach this request either.
    other_app = f"{fal.urls.queue_url}/fal-ai/flux/requests/{request_id}/status"
    assert client.get(other_app).status_code == 404
    assert client.get(queued["status_url"]).status_code in (200, 202)


def test_workflow_namespace_stays_in_request_urls(fal: RunningEmulator, client: httpx.Client) -> None:
    queued, result = run_to_completion(client, fal, "workflows/falflow/text-to-image", {"prompt": "a cat"})

    assert queued["status_url"] == (
        f"{fal.urls.queue_url}/workflows/falflow/text-to-image/requests/{queued['request_id']}/status"
    )
    assert result.status_code == 200
    assert len(result.json()["images"]) == 1


def test_status_goes_from_queue_position_to_logs_to_metrics(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.05, run_time_s=0.4, concurrency=1, log_interval_s=0.05)
    with key_client(fal) as client:
        jobs = [submit(client, fal, FLUX, {"prompt": f"cat {n}"}) for n in range(3)]
        assert [job["queue_position"] for job in jobs] == [0, 1, 2]

        first = jobs[0]
        deadline = time.monotonic() + 5
        while (status := client.get(first["status_url"], params={"logs": "1"})).json()[
            "status"
        ] != "IN_PROGRESS":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert status.status_code == 202
        time.sleep(0.1)
        with_logs = client.get(first["status_url"], params={"logs": "1"}).json()
        assert with_logs["status"] == "IN_PROGRESS"
        assert with_logs["logs"]
        assert {"message", "level", "source", "timestamp"} <= set(with_logs["logs"][0])
        assert client.get(first["status_url"], params={"logs": "0"}).json()["logs"] is None

        third = client.get(jobs[2]["status_url"])
        assert third.status_code == 202
        assert third.json()["status"] == "IN_QUEUE"
        assert third.json()["queue_position"] == 1  # only the second job is ahead now

        done = wait_completed(client, first["status_url"] + "?logs=true")
        assert done["metrics"]["inference_time"] >= 0.4
        assert "error" not in done
        assert done["logs"][-1]["message"] == "Done"


def test_low_priority_waits_behind_every_normal_request(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.0, run_time_s=0.3, concurrency=1)
    with key_client(fal) as client:
        running = submit(client, fal, FLUX, {"prompt": "first"})
        time.sleep(0.05)
        low = client.post(
            f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "low"}, headers={"X-Fal-Queue-Priority": "low"}
        ).json()
        normal = submit(client, fal, FLUX, {"prompt": "normal"})

        assert client.get(low["status_url"]).json()["queue_position"] == 1
        assert client.get(normal["status_url"]).json()["queue_position"] == 0
        for job in (running, low, normal):
            wait_completed(client, job["status_url"])
    started = {job.request_id: job.started_at or 0.0 for job in fal.control.jobs()}
    assert 0 < started[normal["request_id"]] < started[low["request_id"]]


def test_invalid_input_fails_as_completed_with_the_models_422(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    queued, result = run_to_completion(client, fal, FLUX, {"image_size": "square"})
    status = client.get(queued["status_url"]).json()

    assert status["status"] == "COMPLETED"
    assert status["error_type"] == "missing"
    assert status["error"] == "field required"
    assert result.status_code == 422
    assert result.json() == {
        "detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]
    }


def test_sync_run_answers_the_output_or_the_422(fal: RunningEmulator, client: httpx.Client) -> None:
    ok = client.post(f"{fal.urls.run_url}/{FLUX}", json={"prompt": "a cat", "num_images": 2})
    too_many = client.post(f"{fal.urls.run_url}/{FLUX}", json={"prompt": "a cat", "num_images": 5})

    assert ok.status_code == 200
    assert [image["content_type"] for image in ok.json()["images"]] == ["image/png", "image/png"]
    assert too_many.status_code == 422
    (error,) = too_many.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "num_images"], "less_than_equal")


def test_unknown_models_are_not_found(fal: RunningEmulator, client: httpx.Client) -> None:
    for url in (f"{fal.urls.queue_url}/fal-ai/no-such-model", f"{fal.urls.run_url}/fal-ai/flux/schnell-xl"):
        response = client.post(url, json={"prompt": "x"})
        assert response.status_code == 404
        assert "not found" in response.json()["detail"]
    assert fal.control.jobs() == []


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer emulator-key:emulator-secret", "Key wrong:key", "emulator-key:emulator-secret"],
)
def test_queue_needs_a_valid_key_header(
    fal: RunningEmulator, anonymous: httpx.Client, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    submitted = anonymous.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}, headers=headers)
    status = anonymous.get(f"{fal.urls.queue_url}/fal-ai/flux/requests/abc/status", headers=headers)

    for response in (submitted, status):
        assert response.status_code == 401
        assert isinstance(response.json()["detail"], str)


def test_admin_keys_can_use_the_queue(fal: RunningEmulator, admin: httpx.Client) -> None:
    _, result = run_to_completion(admin, fal, FLUX, {"prompt": "x"})
    assert result.status_code == 200


def test_cancel_drops_queued_requests_and_signals_running_ones(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.0, run_time_s=0.4, concurrency=1)
    with key_client(fal) as client:
        running = submit(client, fal, FLUX, {"prompt": "running"})
        queued = submit(client, fal, FLUX, {"prompt": "queued"})
        time.sleep(0.1)

        dropped = client.put(queued["cancel_url"])
        assert (dropped.status_code, dropped.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        status = client.get(queued["status_url"]).json()
        assert (status["status"], status["error_type"]) == ("COMPLETED", "client_cancelled")

        signalled = client.put(running["cancel_url"])
        assert (signalled.status_code, signalled.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
        wait_completed(client, running["status_url"])
        assert client.get(running["response_url"]).status_code == 200  # it still finished

        again = client.put(running["cancel_url"])
        assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
        unknown = client.put(f"{fal.urls.queue_url}/fal-ai/flux/requests/nope/cancel")
        assert (unknown.status_code, unknown.json()) == (404, {"status": "NOT_FOUND"})
        assert client.post(running["cancel_url"]).status_code == 404  # POST is a submit to a non-model


def test_cancel_can_stop_running_requests_when_configured(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.0, run_time_s=1.0, honour_cancel_in_progress=True)
    with key_client(fal) as client:
        running = submit(client, fal, FLUX, {"prompt": "running"})
        time.sleep(0.2)
        assert client.put(running["cancel_url"]).status_code == 202
        status = wait_completed(client, running["status_url"], timeout_s=2)
    assert status["error_type"] == "client_cancelled"


def test_results_expire_after_their_retention(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(stored_result_retention_s=0.3, result_retention_s=0.6)
    with key_client(fal) as client:
        stored, result = run_to_completion(client, fal, FLUX, {"prompt": "kept briefly"})
        assert result.status_code == 200
        time.sleep(0.35)
        assert client.get(stored["response_url"]).status_code == 404
        assert client.get(stored["status_url"]).json()["status"] == "COMPLETED"

        no_store = client.post(
            f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}, headers={"X-Fal-Store-IO": "0"}
        )
        wait_completed(client, no_store.json()["status_url"])
        time.sleep(0.35)
        assert client.get(no_store.json()["response_url"]).status_code == 200  # 1 h rule, here 0.6 s
        time.sleep(0.35)
        assert client.get(no_store.json()["response_url"]).status_code == 404


def test_result_before_completion_is_refused(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.5)
    with key_client(fal) as client:
        queued = submit(client, fal, FLUX, {"prompt": "x"})
        response = client.get(queued["response_url"])
    assert response.status_code == 400


def test_start_timeout_ends_in_a_user_timeout(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.0, run_time_s=1.0, concurrency=1)
    with key_client(fal) as client:
        submit(client, fal, FLUX, {"prompt": "hogs the runner"})
        late = client.post(
            f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}, headers={"X-Fal-Request-Timeout": "0.3"}
        ).json()
        status = wait_completed(client, late["status_url"], timeout_s=2)
        result = client.get(late["response_url"])
        too_small = client.post(
            f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}, headers={"X-Fal-Request-Timeout": "0.05"}
        )

    assert status["error_type"] == "request_timeout"
    assert result.status_code == 504
    assert result.headers["x-fal-request-timeout-type"] == "user"
    assert result.json()["error_type"] == "request_timeout"
    assert too_small.status_code == 400


def test_sync_runs_get_429_when_every_runner_is_busy(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=0.0, run_time_s=0.5, concurrency=1)
    with key_client(fal) as client:
        queued = submit(client, fal, FLUX, {"prompt": "hogs the runner"})
        time.sleep(0.1)
        busy = client.post(f"{fal.urls.run_url}/{FLUX}", json={"prompt": "x"})
        wait_completed(client, queued["status_url"])
        free = client.post(f"{fal.urls.run_url}/{FLUX}", json={"prompt": "x"})

    assert busy.status_code == 429
    assert (busy.json()["error_type"], busy.headers["x-fal-needs-retry"]) == (
        "concurrent_requests_limit",
        "1",
    )
    assert free.status_code == 200


def test_max_queue_length_rejects_with_429(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(queue_wait_s=1.0)
    with key_client(fal) as client:
        for _ in range(2):
            submit(client, fal, FLUX, {"prompt": "x"}, fal_max_queue_length="2")
        rejected = client.post(
            f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "x"}, params={"fal_max_queue_length": "2"}
        )
        other_app = client.post(
            f"{fal.urls.queue_url}/fal-ai/stable-audio",
            json={"prompt": "x"},
            params={"fal_max_queue_length": "2"},
        )
    assert rejected.status_code == 429
    assert other_app.status_code == 200
    assert len(fal.control.jobs()) == 3


def test_status_stream_sends_events_until_completed(fal: RunningEmulator, client: httpx.Client) -> None:
    queued = submit(client, fal, FLUX, {"prompt": "x"})
    events = []
    with client.stream("GET", queued["status_url"] + "/stream") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    statuses = [event["status"] for event in events]
    assert statuses[-1] == "COMPLETED"
    assert statuses == sorted(statuses, key=["IN_QUEUE", "IN_PROGRESS", "COMPLETED"].index)


def test_deprecated_models_still_run(fal: RunningEmulator, client: httpx.Client) -> None:
    _, result = run_to_completion(client, fal, "fal-ai/fast-sdxl", {"prompt": "x", "num_images": 3})
    assert result.status_code == 200
    assert [(image["width"], image["height"]) for image in result.json()["images"]] == [(1024, 1024)] * 3
