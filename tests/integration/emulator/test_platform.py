"""The Platform API: every response matches fal's OpenAPI spec, and usage, billing events and
analytics add up to the jobs the emulator actually ran."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from falflow_tools.emulator import ComputeInstance, RunningEmulator
from falflow_tools.emulator.usage import TimeWindow
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.emulator.helpers import key_client, run_to_completion, wait_completed
from tests.integration.emulator.platform_contract import assert_matches_spec

FLUX = "fal-ai/flux/dev"
KLING = "fal-ai/kling-video/v2/master/text-to-video"
AUDIO = "fal-ai/stable-audio"


def get(client: httpx.Client, fal: RunningEmulator, path: str, **params: Any) -> Any:
    return assert_matches_spec(client.get(f"{fal.urls.api_url}{path}", params=params))


def run_jobs(client: httpx.Client, fal: RunningEmulator) -> dict[str, str]:
    """Billable work: 4 flux images (one sync), 10 s of video, 3 s of audio; plus one failure."""
    request_ids = {}
    for name, endpoint, payload in (
        ("flux-2", FLUX, {"prompt": "x", "num_images": 2}),
        ("flux-1", FLUX, {"prompt": "y"}),
        ("kling", KLING, {"prompt": "z", "duration": "10"}),
        ("audio", AUDIO, {"prompt": "rain", "seconds_total": 3}),
        ("failed", FLUX, {"num_images": 3}),
    ):
        queued, _ = run_to_completion(client, fal, endpoint, payload)
        request_ids[name] = queued["request_id"]
    sync = client.post(f"{fal.urls.run_url}/{FLUX}", json={"prompt": "sync"})
    request_ids["sync"] = sync.headers["x-fal-request-id"]
    return request_ids


def test_models_list_filter_and_page(fal: RunningEmulator, anonymous: httpx.Client) -> None:
    everything = get(anonymous, fal, "/models")
    ids = [model["endpoint_id"] for model in everything["models"]]
    assert {FLUX, KLING, AUDIO, "fal-ai/clarity-upscaler", "fal-ai/fast-sdxl"} == set(ids)
    assert everything["models"][0]["metadata"]["is_favorited"] is None  # anonymous

    paged, cursor = [], None
    while True:
        page = get(anonymous, fal, "/models", limit=2, **({"cursor": cursor} if cursor else {}))
        paged += [model["endpoint_id"] for model in page["models"]]
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
        assert base64.b64decode(cursor).isdigit()
    assert paged == ids

    deprecated = get(anonymous, fal, "/models", status="deprecated")["models"]
    assert [(m["endpoint_id"], m["metadata"]["status"]) for m in deprecated] == [
        ("fal-ai/fast-sdxl", "deprecated")
    ]
    by_category = get(anonymous, fal, "/models", category="text-to-video")["models"]
    assert [m["endpoint_id"] for m in by_category] == [KLING]
    searched = get(anonymous, fal, "/models", q="text to image")["models"]
    assert {m["endpoint_id"] for m in searched} == {FLUX, "fal-ai/fast-sdxl"}
    found = anonymous.get(f"{fal.urls.api_url}/models?endpoint_id={FLUX},{AUDIO}&endpoint_id={KLING}")
    assert {m["endpoint_id"] for m in assert_matches_spec(found)["models"]} == {FLUX, AUDIO, KLING}


def test_models_expand_openapi(fal: RunningEmulator, client: httpx.Client) -> None:
    (model,) = get(client, fal, "/models", endpoint_id=FLUX, expand=["openapi-3.0", "enterprise_status"])[
        "models"
    ]
    openapi = model["openapi"]

    assert openapi["openapi"].startswith("3.0")
    assert model["metadata"]["is_favorited"] is False
    assert model["enterprise_status"] == "ready"
    request_schema = openapi["paths"][f"/{FLUX}"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    schema_name = request_schema["$ref"].rsplit("/", 1)[-1]
    assert "prompt" in openapi["components"]["schemas"][schema_name]["required"]


def test_pricing_and_estimates(fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client) -> None:
    prices = get(client, fal, "/models/pricing", endpoint_id=[FLUX, KLING])["prices"]
    assert {(p["endpoint_id"], p["unit"], p["currency"]) for p in prices} == {
        (FLUX, "image", "USD"),
        (KLING, "second", "USD"),
    }
    unit_price = {p["endpoint_id"]: p["unit_price"] for p in prices}

    def estimate(body: dict[str, Any]) -> httpx.Response:
        return client.post(f"{fal.urls.api_url}/models/pricing/estimate", json=body)

    by_units = assert_matches_spec(
        estimate(
            {
                "estimate_type": "unit_price",
                "endpoints": {FLUX: {"unit_quantity": 10}, KLING: {"unit_quantity": 5}},
            }
        )
    )
    assert by_units["total_cost"] == pytest.approx(10 * unit_price[FLUX] + 5 * unit_price[KLING])
    by_calls = assert_matches_spec(
        estimate({"estimate_type": "historical_api_price", "endpoints": {KLING: {"call_quantity": 2}}})
    )
    assert by_calls == {
        "estimate_type": "historical_api_price",
        "total_cost": pytest.approx(2 * 5 * 0.28),
        "currency": "USD",
    }

    assert assert_matches_spec(estimate({"estimate_type": "unit_price", "endpoints": {FLUX: {}}}))["error"][
        "type"
    ] == ("validation_error")
    assert (
        estimate(
            {"estimate_type": "unit_price", "endpoints": {"fal-ai/nope": {"unit_quantity": 1}}}
        ).status_code
        == 404
    )
    assert assert_matches_spec(client.get(f"{fal.urls.api_url}/models/pricing")).get("error")
    assert assert_matches_spec(
        client.get(f"{fal.urls.api_url}/models/pricing", params={"endpoint_id": "x/y"})
    )["error"]
    assert (
        assert_matches_spec(
            anonymous.get(f"{fal.urls.api_url}/models/pricing", params={"endpoint_id": FLUX})
        )["error"]["type"]
        == "authorization_error"
    )


def test_usage_adds_up_to_the_jobs_that_ran(fal_emulator_factory: EmulatorFactory) -> None:
    fal = fal_emulator_factory(percent_discount=10)
    with key_client(fal) as client, key_client(fal, fal.admin_key) as admin:
        run_jobs(client, fal)
        usage = get(admin, fal, "/models/usage", expand=["time_series", "summary", "auth_method_structured"])

    summary = {line["endpoint_id"]: line for line in usage["summary"]}
    assert {endpoint: line["quantity"] for endpoint, line in summary.items()} == {
        FLUX: 4,
        KLING: 10,
        AUDIO: 3,
    }
    for line in summary.values():
        assert line["percent_discount"] == 10
        assert line["cost_subtotal"] == pytest.approx(line["quantity"] * line["unit_price"])
        assert line["cost_discount"] == pytest.approx(line["cost_subtotal"] * 0.10)
        assert line["cost_total"] == pytest.approx(line["quantity"] * line["unit_price"] * 0.9)
        assert line["auth_method_structured"]["api_key_id"] == "emulator-key"
    assert summary[KLING]["cost_total"] == pytest.approx(10 * 0.28 * 0.9)

    (bucket,) = usage["time_series"]  # everything ran within this hour (the 24 h default picks hours)
    start = datetime.fromisoformat(bucket["bucket"])
    assert start.utcoffset() == timedelta(0)
    assert start.minute == start.second == 0
    assert start <= datetime.now(UTC) < start + timedelta(hours=1)
    assert sum(line["quantity"] for line in bucket["results"]) == 17


def test_usage_buckets_follow_timezone_and_timeframe(
    fal: RunningEmulator, client: httpx.Client, admin: httpx.Client
) -> None:
    run_to_completion(client, fal, FLUX, {"prompt": "x"})
    series = get(admin, fal, "/models/usage", timezone="America/New_York", timeframe="day")["time_series"]

    (bucket,) = series
    start = datetime.fromisoformat(bucket["bucket"])
    assert start.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
    assert (start.hour, start.minute) == (0, 0)


def test_billing_events_are_per_request(
    fal: RunningEmulator, client: httpx.Client, admin: httpx.Client
) -> None:
    ids = run_jobs(client, fal)
    events = get(admin, fal, "/models/billing-events")["billing_events"]

    billed = {event["request_id"]: event for event in events}
    assert set(billed) == {ids[name] for name in ("flux-2", "flux-1", "kling", "audio", "sync")}
    assert [e["timestamp"] for e in events] == sorted((e["timestamp"] for e in events), reverse=True)
    for event in events:
        assert event["cost_total"] == pytest.approx(event["output_units"] * event["unit_price"])
        assert event["cost_estimate_nano_usd"] == round(event["cost_total"] * 1e9)
    assert billed[ids["flux-2"]]["output_units"] == 2
    assert billed[ids["kling"]]["output_units"] == 10

    (one,) = get(admin, fal, "/models/billing-events", request_id=ids["audio"])["billing_events"]
    assert one["endpoint_id"] == AUDIO
    assert (
        get(admin, fal, "/models/billing-events", endpoint_id=KLING)["billing_events"][0]["request_id"]
        == ids["kling"]
    )
    paged = get(admin, fal, "/models/billing-events", limit=2)
    assert (len(paged["billing_events"]), paged["has_more"]) == (2, True)


def test_analytics_counts_successes_and_failures(fal: RunningEmulator, client: httpx.Client) -> None:
    run_jobs(client, fal)
    metrics = ["summary", "request_count", "success_count", "user_error_count", "error_count", "p50_duration"]
    (flux,) = get(client, fal, "/models/analytics", endpoint_id=FLUX, expand=metrics)["summary"]

    assert flux["endpoint_id"] == FLUX
    assert (flux["request_count"], flux["success_count"], flux["user_error_count"], flux["error_count"]) == (
        4,
        3,
        1,
        0,
    )
    assert flux["p50_duration"] >= fal.config.run_time_s
    assert "p90_duration" not in flux  # only the metrics asked for

    series = get(client, fal, "/models/analytics", endpoint_id=[FLUX, KLING])["time_series"]
    assert {r["endpoint_id"]: r["request_count"] for r in series[0]["results"]} == {FLUX: 4, KLING: 1}


def test_admin_only_endpoints(fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client) -> None:
    for path in ("/models/usage", "/models/billing-events", "/compute/instances", "/account/billing"):
        forbidden = assert_matches_spec(client.get(f"{fal.urls.api_url}{path}"))
        assert forbidden["error"]["type"] == "authorization_error"
        assert client.get(f"{fal.urls.api_url}{path}").status_code == 403
        assert anonymous.get(f"{fal.urls.api_url}{path}").status_code == 401
    bearer = anonymous.get(
        f"{fal.urls.api_url}/models/usage", headers={"Authorization": f"Bearer {fal.admin_key}"}
    )
    assert assert_matches_spec(bearer)["error"]["type"] == "authorization_error"


def test_compute_instances(fal_emulator_factory: EmulatorFactory) -> None:
    listed = fal_emulator_factory(compute_instances=[ComputeInstance(id="inst_1", ip="203.0.113.7")])
    with key_client(listed, listed.admin_key) as admin:
        (instance,) = get(admin, listed, "/compute/instances")["instances"]
    assert instance == {
        "id": "inst_1",
        "instance_type": "gpu_1x_h100_sxm5",
        "region": "us-east",
        "ip": "203.0.113.7",
        "status": "ready",
    }

    no_permission = fal_emulator_factory(compute_permission=False)
    with key_client(no_permission, no_permission.admin_key) as admin:
        response = admin.get(f"{no_permission.urls.api_url}/compute/instances")
    assert response.status_code == 403
    assert assert_matches_spec(response)["error"]["type"] == "authorization_error"


def test_account_billing_shows_the_balance_left_after_billed_requests(
    fal: RunningEmulator, client: httpx.Client, admin: httpx.Client
) -> None:
    assert get(admin, fal, "/account/billing") == {"username": "emulator-user"}  # credits only if expanded
    run_to_completion(client, fal, FLUX, {"prompt": "x", "num_images": 2})

    billing = get(admin, fal, "/account/billing", expand="credits")

    assert billing == {
        "username": "emulator-user",
        "credits": {"current_balance": pytest.approx(1000.0 - 2 * 0.025), "currency": "USD"},
    }
    assert get(admin, fal, "/account/billing", expand=["credits"])["credits"] == billing["credits"]
    fal.control.set_balance(-3.0)  # requests that finished after the lock took it below 0
    assert get(admin, fal, "/account/billing", expand="credits")["credits"]["current_balance"] == 0
    refused = admin.get(f"{fal.urls.api_url}/account/billing", params={"expand": "invoices"})
    assert (refused.status_code, assert_matches_spec(refused)["error"]["type"]) == (400, "validation_error")


def test_meta_needs_no_key(fal: RunningEmulator, anonymous: httpx.Client) -> None:
    assert "127.0.0.1/32" in get(anonymous, fal, "/meta")["webhook_ip_ranges"]


def test_bad_parameters_are_validation_errors(
    fal: RunningEmulator, client: httpx.Client, admin: httpx.Client
) -> None:
    for response in (
        client.get(f"{fal.urls.api_url}/models", params={"status": "retired"}),
        client.get(f"{fal.urls.api_url}/models", params={"limit": "0"}),
        client.get(f"{fal.urls.api_url}/models", params={"cursor": "not base64!"}),
        client.get(f"{fal.urls.api_url}/models/analytics"),
        client.get(f"{fal.urls.api_url}/models/analytics", params={"endpoint_id": FLUX, "expand": "summary"}),
        admin.get(f"{fal.urls.api_url}/models/usage", params={"expand": "auth_method"}),
        admin.get(f"{fal.urls.api_url}/models/usage", params={"timeframe": "fortnight"}),
        admin.get(f"{fal.urls.api_url}/models/usage", params={"start": "2026-01-02", "end": "2026-01-01"}),
        admin.get(
            f"{fal.urls.api_url}/models/billing-events", params={"start": "2025-01-01", "end": "2025-06-01"}
        ),
    ):
        assert response.status_code == 400, response.request.url
        assert assert_matches_spec(response)["error"]["type"] == "validation_error"


def test_unserved_platform_paths_are_not_found(fal: RunningEmulator, client: httpx.Client) -> None:
    response = client.get(f"{fal.urls.api_url}/keys")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("span", "timeframe"),
    [
        (timedelta(minutes=90), "minute"),
        (timedelta(hours=30), "hour"),
        (timedelta(days=30), "day"),
        (timedelta(days=100), "week"),
        (timedelta(days=200), "month"),
    ],
)
def test_timeframe_is_picked_from_the_span(span: timedelta, timeframe: str) -> None:
    end = datetime(2026, 3, 18, 10, 30, tzinfo=UTC)
    window = TimeWindow.from_query((end - span).isoformat(), end.isoformat())
    assert window.timeframe == timeframe


def test_bound_to_timeframe_snaps_the_window() -> None:
    start, end = "2026-03-18T10:17:00Z", "2026-03-19T08:05:00Z"
    snapped = TimeWindow.from_query(start, end)
    exact = TimeWindow.from_query(start, end, bound_to_timeframe="false")

    assert (snapped.start.isoformat(), snapped.end.isoformat()) == (
        "2026-03-18T10:00:00+00:00",
        "2026-03-19T09:00:00+00:00",
    )
    assert (exact.start.isoformat(), exact.end.isoformat()) == (
        "2026-03-18T10:17:00+00:00",
        "2026-03-19T08:05:00+00:00",
    )
    week = TimeWindow.from_query("2026-03-01", "2026-05-01", timeframe="week")
    assert week.start.weekday() == 0
    month = TimeWindow.from_query("2025-11-15", "2026-12-10", timeframe="month")
    assert (month.start.isoformat(), month.end.isoformat()) == (
        "2025-11-01T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
    )


def _history(client: httpx.Client, fal: RunningEmulator, **params: Any) -> Any:
    return get(client, fal, "/models/requests/by-endpoint", **params)


def test_request_history_lists_the_requests_of_an_endpoint_with_their_payloads(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    ids = run_jobs(client, fal)

    flux = _history(client, fal, endpoint_id=FLUX, expand="payloads")
    by_id = {item["request_id"]: item for item in flux["items"]}
    assert set(by_id) == {ids[name] for name in ("flux-2", "flux-1", "failed", "sync")}
    assert flux["has_more"] is False
    assert flux["next_cursor"] is None
    assert by_id[ids["flux-1"]]["json_input"] == {"prompt": "y"}
    assert by_id[ids["flux-1"]]["json_output"]["images"]
    assert by_id[ids["flux-1"]]["status_code"] == 200
    assert by_id[ids["failed"]]["status_code"] == 422
    assert all(item["sent_at"] <= item["started_at"] <= item["ended_at"] for item in flux["items"])
    ended = [item["ended_at"] for item in flux["items"]]
    assert ended == sorted(ended, reverse=True)  # by end time, newest first

    plain = _history(client, fal, endpoint_id=FLUX)
    assert all("json_input" not in item for item in plain["items"])  # only with expand=payloads
    both = _history(client, fal, endpoint_id=f"{FLUX},{KLING}")
    assert len(both["items"]) == 5


def test_request_history_filters_and_pages(fal: RunningEmulator, client: httpx.Client) -> None:
    ids = run_jobs(client, fal)

    (failed,) = _history(client, fal, endpoint_id=FLUX, status="user_error")["items"]
    assert failed["request_id"] == ids["failed"]
    assert len(_history(client, fal, endpoint_id=FLUX, status="success")["items"]) == 3
    (one,) = _history(client, fal, endpoint_id=FLUX, request_id=ids["flux-2"])["items"]
    assert one["request_id"] == ids["flux-2"]
    longest = _history(client, fal, endpoint_id=FLUX, sort_by="duration")["items"]
    assert [i["duration"] for i in longest] == sorted((i["duration"] for i in longest), reverse=True)

    later = datetime.now(UTC) + timedelta(hours=1)
    window = {"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()}
    assert _history(client, fal, endpoint_id=FLUX, **window)["items"] == []  # sent before the window

    paged, cursor = [], None
    while True:
        page = _history(client, fal, endpoint_id=FLUX, limit=3, **({"cursor": cursor} if cursor else {}))
        paged += [item["request_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert sorted(paged) == sorted(i["request_id"] for i in _history(client, fal, endpoint_id=FLUX)["items"])


def test_request_history_keeps_no_payloads_of_a_request_sent_without_store_io(
    fal: RunningEmulator, client: httpx.Client
) -> None:
    response = client.post(
        f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "private"}, headers={"X-Fal-Store-IO": "0"}
    )
    wait_completed(client, response.json()["status_url"])

    (item,) = _history(client, fal, endpoint_id=FLUX, expand="payloads")["items"]
    assert (item["json_input"], item["json_output"]) == (None, None)


def test_request_history_lists_a_request_once_a_runner_started_it(
    fal_emulator_factory: EmulatorFactory,
) -> None:
    fal = fal_emulator_factory(queue_wait_s=30.0)
    with key_client(fal) as client:
        client.post(f"{fal.urls.queue_url}/{FLUX}", json={"prompt": "waiting"}).raise_for_status()
        # started_at is required of every item: a request still in the queue is not listed yet.
        assert _history(client, fal, endpoint_id=FLUX)["items"] == []


def test_request_history_needs_a_key_and_an_endpoint(
    fal: RunningEmulator, client: httpx.Client, anonymous: httpx.Client
) -> None:
    url = f"{fal.urls.api_url}/models/requests/by-endpoint"
    missing_key = anonymous.get(url, params={"endpoint_id": FLUX})
    assert (missing_key.status_code, assert_matches_spec(missing_key)["error"]["type"]) == (
        401,
        "authorization_error",
    )
    for params in (
        {},
        {"endpoint_id": FLUX, "limit": "101"},
        {"endpoint_id": FLUX, "status": "done"},
        {"endpoint_id": FLUX, "expand": "logs"},
        {"endpoint_id": FLUX, "sort_by": "started_at"},
        {"endpoint_id": ",".join([FLUX] * 51)},
    ):
        refused = client.get(url, params=params)
        assert (refused.status_code, assert_matches_spec(refused)["error"]["type"]) == (
            400,
            "validation_error",
        ), params
