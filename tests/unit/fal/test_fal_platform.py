from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from falflow.fal.errors import FalError, FalPlatformError
from falflow.fal.http import RetryPolicy
from falflow.fal.platform import FalPlatformClient
from falflow.settings import FalSettings
from tests.unit.fal.fal_fakes import ScriptedFal, Sleeps

API = "https://api.fal.test/v1"
START = datetime(2026, 8, 1, tzinfo=UTC)
END = datetime(2026, 8, 2, tzinfo=UTC)


@pytest.fixture
def platform_for(
    settings: FalSettings, retry: RetryPolicy, api_key: Callable[[], str]
) -> Callable[[ScriptedFal], FalPlatformClient]:
    return lambda fal: FalPlatformClient(settings, api_key, fal.client(), retry=retry)


def paged(pages: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """Serve ``pages`` by cursor ("c1", "c2", …), the way fal encodes page numbers."""

    def serve(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        index = int(cursor[1:]) if cursor else 0
        more = index + 1 < len(pages)
        return httpx.Response(
            200, json={**pages[index], "has_more": more, "next_cursor": f"c{index + 1}" if more else None}
        )

    return serve


def platform_error(kind: str, status: int) -> httpx.Response:
    return httpx.Response(status, json={"error": {"type": kind, "message": f"{kind} happened"}})


def test_iter_models_walks_every_page_lazily_with_the_filters(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    pages = [
        {"models": [{"endpoint_id": "fal-ai/flux/dev", "metadata": {"display_name": "FLUX.1 [dev]"}}]},
        {"models": [{"endpoint_id": "fal-ai/flux/schnell"}, {"endpoint_id": "fal-ai/flux-pro"}]},
        {"models": [{"endpoint_id": "fal-ai/recraft-v3", "openapi": {"openapi": "3.0.0"}}]},
    ]
    fal = ScriptedFal([paged(pages)])
    models = platform_for(fal).iter_models(
        "flux",
        category="text-to-image",
        status="active",
        expand=["openapi-3.0", "enterprise_status"],
        page_size=2,
    )

    first = next(models)
    assert first.endpoint_id == "fal-ai/flux/dev"
    assert first.metadata is not None
    assert first.metadata.display_name == "FLUX.1 [dev]"
    assert len(fal.requests) == 1  # lazily: no page is fetched before it is needed
    rest = list(models)

    assert [m.endpoint_id for m in rest] == ["fal-ai/flux/schnell", "fal-ai/flux-pro", "fal-ai/recraft-v3"]
    assert rest[-1].openapi == {"openapi": "3.0.0"}
    assert [r.url.params.get("cursor") for r in fal.requests] == [None, "c1", "c2"]
    for request in fal.requests:
        assert request.url.copy_with(query=None) == f"{API}/models"
        assert request.url.params["q"] == "flux"
        assert request.url.params["category"] == "text-to-image"
        assert request.url.params["status"] == "active"
        assert request.url.params["limit"] == "2"
        assert request.url.params.get_list("expand") == ["openapi-3.0", "enterprise_status"]


def test_iter_models_filters_by_repeated_endpoint_ids(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    fal = ScriptedFal([paged([{"models": []}])])

    assert list(platform_for(fal).iter_models(endpoint_ids=["fal-ai/flux/dev", "fal-ai/flux/schnell"])) == []
    assert fal.requests[0].url.params.get_list("endpoint_id") == ["fal-ai/flux/dev", "fal-ai/flux/schnell"]


def test_a_repeated_cursor_stops_instead_of_looping_forever(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    loop = httpx.Response(
        200, json={"models": [{"endpoint_id": "a/b"}], "has_more": True, "next_cursor": "Mg=="}
    )
    fal = ScriptedFal([loop])

    with pytest.raises(FalError, match="repeated pagination cursor"):
        list(platform_for(fal).iter_models())

    assert len(fal.requests) == 2


def test_pricing_batches_ids_by_50_and_reads_every_page(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    ids = [f"owner/model-{n}" for n in range(120)]

    def serve(request: httpx.Request) -> httpx.Response:
        asked = request.url.params.get_list("endpoint_id")
        half = len(asked) // 2
        page = asked[half:] if request.url.params.get("cursor") else asked[:half]
        return httpx.Response(
            200,
            json={
                "prices": [
                    {"endpoint_id": e, "unit_price": 0.025, "unit": "image", "currency": "USD"} for e in page
                ],
                "has_more": not request.url.params.get("cursor"),
                "next_cursor": None if request.url.params.get("cursor") else "Mg==",
            },
        )

    fal = ScriptedFal([serve])
    prices = platform_for(fal).pricing(ids)

    assert [p.endpoint_id for p in prices] == ids
    assert {(p.unit_price, p.unit, p.currency) for p in prices} == {(0.025, "image", "USD")}
    asked = [r.url.params.get_list("endpoint_id") for r in fal.requests if not r.url.params.get("cursor")]
    assert [len(batch) for batch in asked] == [50, 50, 20]
    assert all(r.url.copy_with(query=None) == f"{API}/models/pricing" for r in fal.requests)


def test_pricing_of_no_ids_asks_nothing(platform_for: Callable[[ScriptedFal], FalPlatformClient]) -> None:
    fal = ScriptedFal([])

    assert platform_for(fal).pricing([]) == []
    assert fal.requests == []


def test_estimate_cost_from_call_counts(platform_for: Callable[[ScriptedFal], FalPlatformClient]) -> None:
    fal = ScriptedFal(
        [
            httpx.Response(
                200, json={"estimate_type": "historical_api_price", "total_cost": 2.5, "currency": "USD"}
            )
        ]
    )

    estimate = platform_for(fal).estimate_cost(call_quantities={"fal-ai/flux/dev": 100})

    assert (estimate.estimate_type, estimate.total_cost, estimate.currency) == (
        "historical_api_price",
        2.5,
        "USD",
    )
    assert fal.requests[0].method == "POST"
    assert fal.requests[0].url == f"{API}/models/pricing/estimate"
    assert json.loads(fal.requests[0].content) == {
        "estimate_type": "historical_api_price",
        "endpoints": {"fal-ai/flux/dev": {"call_quantity": 100}},
    }


def test_estimate_cost_from_unit_quantities(platform_for: Callable[[ScriptedFal], FalPlatformClient]) -> None:
    fal = ScriptedFal(
        [httpx.Response(200, json={"estimate_type": "unit_price", "total_cost": 1, "currency": "USD"})]
    )

    platform_for(fal).estimate_cost(unit_quantities={"fal-ai/flux/dev": 40, "fal-ai/kling": 12.5})

    assert json.loads(fal.requests[0].content) == {
        "estimate_type": "unit_price",
        "endpoints": {"fal-ai/flux/dev": {"unit_quantity": 40}, "fal-ai/kling": {"unit_quantity": 12.5}},
    }


@pytest.mark.parametrize(
    "kwargs", [{}, {"call_quantities": {"a/b": 1}, "unit_quantities": {"a/b": 1.0}}, {"call_quantities": {}}]
)
def test_estimate_cost_needs_exactly_one_non_empty_form(
    platform_for: Callable[[ScriptedFal], FalPlatformClient], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"exactly one|no endpoints"):
        platform_for(ScriptedFal([])).estimate_cost(**kwargs)


def line(endpoint_id: str, cost: float) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint_id,
        "unit": "image",
        "quantity": 4,
        "unit_price": 0.025,
        "percent_discount": None,
        "cost_subtotal": cost,
        "cost_discount": 0,
        "cost_total": cost,
        "cost": cost,
        "currency": "USD",
    }


def test_usage_merges_every_page_and_joins_a_bucket_split_across_pages(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    pages = [
        {
            "time_series": [
                {"bucket": "2026-08-01T00:00:00+00:00", "results": [line("fal-ai/flux/dev", 0.1)]},
                {"bucket": "2026-08-01T01:00:00+00:00", "results": [line("fal-ai/flux/dev", 0.2)]},
            ],
            "summary": [line("fal-ai/flux/dev", 0.3)],
        },
        {
            "time_series": [
                {"bucket": "2026-08-01T01:00:00+00:00", "results": [line("fal-ai/kling", 0.5)]},
                {"bucket": "2026-08-01T02:00:00+00:00", "results": [line("fal-ai/kling", 0.7)]},
            ],
            "summary": [line("fal-ai/kling", 1.2)],
        },
    ]
    fal = ScriptedFal([paged(pages)])

    report = platform_for(fal).usage(
        START,
        END,
        endpoint_ids=["fal-ai/flux/dev", "fal-ai/kling"],
        timeframe="hour",
        bound_to_timeframe=False,
        expand=("time_series", "summary", "auth_method"),
    )

    assert [b.bucket[11:13] for b in report.time_series] == ["00", "01", "02"]
    assert [r.endpoint_id for r in report.time_series[1].results] == ["fal-ai/flux/dev", "fal-ai/kling"]
    assert [s.cost_total for s in report.summary] == [0.3, 1.2]
    params = fal.requests[0].url.params
    assert fal.requests[0].url.copy_with(query=None) == f"{API}/models/usage"
    assert params["start"] == "2026-08-01T00:00:00+00:00"
    assert params["end"] == "2026-08-02T00:00:00+00:00"
    assert params["timeframe"] == "hour"
    assert params["bound_to_timeframe"] == "false"
    assert params.get_list("expand") == ["time_series", "summary", "auth_method"]
    assert params.get_list("endpoint_id") == ["fal-ai/flux/dev", "fal-ai/kling"]
    assert len(fal.requests) == 2


def test_usage_accepts_dates_and_defaults_to_time_series(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    fal = ScriptedFal([paged([{"time_series": []}])])

    platform_for(fal).usage(date(2026, 8, 1), "2026-08-02")

    params = fal.requests[0].url.params
    assert (params["start"], params["end"]) == ("2026-08-01", "2026-08-02")
    assert params.get_list("expand") == ["time_series"]
    assert "bound_to_timeframe" not in params
    assert "endpoint_id" not in params


def test_naive_datetimes_are_refused(platform_for: Callable[[ScriptedFal], FalPlatformClient]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        platform_for(ScriptedFal([])).usage(datetime(2026, 8, 1), END)


def test_more_than_50_endpoint_ids_on_a_report_is_refused(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    with pytest.raises(ValueError, match="at most 50"):
        platform_for(ScriptedFal([])).usage(START, END, endpoint_ids=[f"a/{n}" for n in range(51)])


def test_billing_events_iterate_pages_and_batch_request_ids(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    request_ids = [f"req-{n}" for n in range(60)]

    def serve(request: httpx.Request) -> httpx.Response:
        asked = request.url.params.get_list("request_id")
        events = [
            {
                "request_id": rid,
                "endpoint_id": "fal-ai/flux/dev",
                "timestamp": "2026-08-01T10:00:00Z",
                "output_units": 1,
                "unit_price": 0.025,
                "percent_discount": None,
                "cost_subtotal": 0.025,
                "cost_discount": 0,
                "cost_total": 0.025,
                "cost_estimate_nano_usd": 25_000_000,
            }
            for rid in asked
        ]
        return httpx.Response(200, json={"billing_events": events, "has_more": False, "next_cursor": None})

    fal = ScriptedFal([serve])
    events = list(
        platform_for(fal).iter_billing_events(START, END, request_ids=request_ids, endpoint_ids=["x/y"])
    )

    assert [e.request_id for e in events] == request_ids
    assert events[0].cost_estimate_nano_usd == 25_000_000
    assert [len(r.url.params.get_list("request_id")) for r in fal.requests] == [50, 10]
    assert all(r.url.params.get_list("endpoint_id") == ["x/y"] for r in fal.requests)
    assert all(r.url.copy_with(query=None) == f"{API}/models/billing-events" for r in fal.requests)


def test_billing_events_without_request_ids_walk_all_pages(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    event = {"request_id": "r", "endpoint_id": "e/f", "timestamp": "t", "cost_total": 1}
    fal = ScriptedFal([paged([{"billing_events": [event]}] * 3)])

    assert len(list(platform_for(fal).iter_billing_events(START, END))) == 3
    assert "request_id" not in fal.requests[0].url.params


def test_analytics_sends_metrics_in_expand_and_merges_pages(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    pages = [
        {
            "time_series": [
                {"bucket": "b1", "results": [{"endpoint_id": "a/b", "request_count": 3, "p90_duration": 2.1}]}
            ]
        },
        {
            "time_series": [{"bucket": "b2", "results": [{"endpoint_id": "a/b", "request_count": 5}]}],
            "summary": [],
        },
    ]
    fal = ScriptedFal([paged(pages)])

    report = platform_for(fal).analytics(["a/b"], START, END, metrics=("request_count", "p90_duration"))

    assert [b.results[0].request_count for b in report.time_series] == [3, 5]
    assert report.time_series[0].results[0].model_extra == {"p90_duration": 2.1}
    params = fal.requests[0].url.params
    assert fal.requests[0].url.copy_with(query=None) == f"{API}/models/analytics"
    assert params.get_list("expand") == ["time_series", "request_count", "p90_duration"]
    assert params.get_list("endpoint_id") == ["a/b"]


@pytest.mark.parametrize(("ids", "metrics"), [([], ("request_count",)), (["a/b"], ())])
def test_analytics_needs_an_endpoint_and_a_metric(
    platform_for: Callable[[ScriptedFal], FalPlatformClient], ids: list[str], metrics: tuple[str, ...]
) -> None:
    with pytest.raises(ValueError, match="at least one"):
        platform_for(ScriptedFal([])).analytics(ids, START, END, metrics=metrics)


def test_compute_instances_walk_all_pages(platform_for: Callable[[ScriptedFal], FalPlatformClient]) -> None:
    instance = {"id": "i-1", "instance_type": "gpu_1x_h100_sxm5", "region": "us-east", "status": "ready"}
    fal = ScriptedFal([paged([{"instances": [instance]}, {"instances": [{**instance, "id": "i-2"}]}])])

    assert [i.id for i in platform_for(fal).iter_compute_instances()] == ["i-1", "i-2"]
    assert fal.requests[0].url.copy_with(query=None) == f"{API}/compute/instances"


def test_meta_needs_no_key(platform_for: Callable[[ScriptedFal], FalPlatformClient]) -> None:
    fal = ScriptedFal([httpx.Response(200, json={"webhook_ip_ranges": ["34.1.2.0/24", "2600:1900::/28"]})])

    assert platform_for(fal).meta().webhook_ip_ranges == ["34.1.2.0/24", "2600:1900::/28"]
    assert "Authorization" not in fal.requests[0].headers
    assert fal.requests[0].url == f"{API}/meta"


def test_account_billing_asks_for_the_credits(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    body = {"username": "my-team", "credits": {"current_balance": 24.5, "currency": "USD"}}
    fal = ScriptedFal([httpx.Response(200, json=body)])

    billing = platform_for(fal).account_billing()

    assert billing.username == "my-team"
    assert billing.credits is not None
    assert (billing.credits.current_balance, billing.credits.currency) == (24.5, "USD")
    assert fal.requests[0].url.copy_with(query=None) == f"{API}/account/billing"
    assert fal.requests[0].url.params.get_list("expand") == ["credits"]
    assert fal.requests[0].headers["Authorization"].startswith("Key ")


def test_account_billing_without_credits_has_none(
    platform_for: Callable[[ScriptedFal], FalPlatformClient],
) -> None:
    fal = ScriptedFal([httpx.Response(200, json={"username": "my-team"})])

    assert platform_for(fal).account_billing().credits is None


def test_platform_rate_limit_and_server_errors_are_retried(
    platform_for: Callable[[ScriptedFal], FalPlatformClient], sleeps: Sleeps
) -> None:
    ok = httpx.Response(200, json={"webhook_ip_ranges": []})
    fal = ScriptedFal([platform_error("rate_limited", 429), platform_error("server_error", 500), ok])

    platform_for(fal).meta()

    assert len(fal.requests) == 3
    assert sleeps.delays == pytest.approx([0.2, 0.4])


def test_platform_auth_error_is_raised_without_retry(
    platform_for: Callable[[ScriptedFal], FalPlatformClient], sleeps: Sleeps
) -> None:
    fal = ScriptedFal([platform_error("authorization_error", 403)])

    with pytest.raises(FalPlatformError) as raised:
        platform_for(fal).usage(START, END)

    assert (raised.value.status, raised.value.error_type, raised.value.retryable) == (
        403,
        "authorization_error",
        False,
    )
    assert len(fal.requests) == 1
    assert sleeps.delays == []


def test_every_platform_call_sends_the_key(platform_for: Callable[[ScriptedFal], FalPlatformClient]) -> None:
    fal = ScriptedFal([paged([{"models": [], "prices": [], "instances": []}])])
    platform = platform_for(fal)

    list(itertools.chain(platform.iter_models(), platform.iter_compute_instances()))
    platform.pricing(["a/b"])

    assert [r.headers["Authorization"].split()[0] for r in fal.requests] == ["Key"] * 3
