"""The Platform API (``api.fal.ai/v1``), per docs/fal-contract.md §5 and fal's OpenAPI spec.

Models and pricing come from the catalogue; usage, billing events and analytics are computed
from the jobs the emulator actually ran, so a pipeline's cost collection can be checked against
what it submitted. Errors use the Platform API's ``{"error": {"type", "message"}}`` body.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from falflow_tools.emulator.account_api import account_routes, list_instances
from falflow_tools.emulator.auth import Principal
from falflow_tools.emulator.catalogue import JSON, ModelSpec
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.errors import platform_error
from falflow_tools.emulator.state import Job, utc_iso
from falflow_tools.emulator.usage import BadParameter, TimeWindow, costs, paginate, parse_limit, percentile

CURRENCY = "USD"
MAX_IDS = 50
MAX_BILLING_SPAN = timedelta(days=90)
# The request history looks back 24 h by default, 90 days when one request id is asked for.
HISTORY_DEFAULT_SPAN = timedelta(days=1)
HISTORY_REQUEST_ID_SPAN = timedelta(days=90)
HISTORY_SORTS = ("ended_at", "duration")
# status filter -> the result statuses it keeps.
HISTORY_STATUSES: dict[str, Callable[[int], bool]] = {
    "success": lambda code: 200 <= code < 300,
    "user_error": lambda code: 400 <= code < 500,
    "error": lambda code: code >= 500,
}
MODEL_EXPANSIONS = {"openapi-3.0", "enterprise_status"}
USAGE_EXPANSIONS = {"time_series", "summary", "auth_method", "auth_method_structured"}
VOLUME_METRICS = ("request_count", "success_count", "user_error_count", "error_count")
ERROR_TYPE_METRICS: dict[str, tuple[str, ...]] = {
    "startup_error_count": ("startup_timeout", "runner_scheduling_failure"),
    "connection_error_count": (
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
    ),
    "timeout_error_count": ("request_timeout",),
    "runtime_error_count": ("runner_server_error", "internal_error"),
}
PREPARE_PERCENTILES = {f"p{p}_prepare_duration": p for p in (50, 75, 90, 95, 99)}
DURATION_PERCENTILES = {f"p{p}_duration": p for p in (25, 50, 75, 90, 95, 99)}
COLD_BOOT_METRICS = (
    "cold_boot_count",
    "p50_cold_boot_duration",
    "p75_cold_boot_duration",
    "p90_cold_boot_duration",
)
ANALYTICS_METRICS = {
    *VOLUME_METRICS,
    *ERROR_TYPE_METRICS,
    *PREPARE_PERCENTILES,
    *DURATION_PERCENTILES,
    *COLD_BOOT_METRICS,
    "total_billable_duration",
}

Scope = Literal["optional", "api", "admin"]


class _Rejected(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


class _HistoricalEstimate(BaseModel):
    estimate_type: Literal["historical_api_price"]
    endpoints: dict[
        str, Annotated[dict[Literal["call_quantity"], Annotated[int, Field(ge=1)]], Field(min_length=1)]
    ]


class _UnitEstimate(BaseModel):
    estimate_type: Literal["unit_price"]
    endpoints: dict[
        str, Annotated[dict[Literal["unit_quantity"], Annotated[float, Field(ge=1e-6)]], Field(min_length=1)]
    ]


class _EstimateRequest(BaseModel):
    body: Annotated[_HistoricalEstimate | _UnitEstimate, Field(discriminator="estimate_type")]


def _multi(request: Request, name: str) -> list[str]:
    """A parameter given repeated and/or comma-separated."""
    values = [part.strip() for value in request.query_params.getlist(name) for part in value.split(",")]
    return [value for value in values if value]


def _ids(request: Request, name: str, *, required: bool = False) -> list[str]:
    ids = _multi(request, name)
    if required and not ids:
        raise BadParameter(f"{name} is required")
    if len(ids) > MAX_IDS:
        raise BadParameter(f"at most {MAX_IDS} values of {name} are accepted")
    return ids


def platform_routes(emulator: FalEmulator) -> list[Route]:
    """The Platform API's routes, reporting on ``emulator``'s models and jobs."""
    api = PlatformApi(emulator)

    def route(path: str, handler: Callable[[Request], Awaitable[JSON]], method: str = "GET") -> Route:
        return Route(f"/api/v1{path}", _endpoint(handler), methods=[method])

    return [
        route("/models", api.models),
        route("/models/pricing", api.pricing),
        route("/models/pricing/estimate", api.estimate, "POST"),
        route("/models/usage", api.usage),
        route("/models/billing-events", api.billing_events),
        route("/models/analytics", api.analytics),
        route("/models/requests/by-endpoint", api.requests_by_endpoint),
        route("/compute/instances", api.compute_instances),
        route("/meta", api.meta),
        route("/account/billing", api.account_billing),
        *account_routes(emulator),
        Route("/api/v1/{path:path}", _not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]


def _endpoint(handler: Callable[[Request], Awaitable[JSON]]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await handler(request))
        except _Rejected as rejected:
            return rejected.response
        except BadParameter as exc:
            return platform_error(400, str(exc))

    return endpoint


async def _not_found(request: Request) -> Response:
    return platform_error(404, f"{request.method} {request.url.path} is not served by the fal emulator")


class PlatformApi:
    def __init__(self, emulator: FalEmulator) -> None:
        self._emulator = emulator

    def _require(self, request: Request, scope: Scope) -> Principal:
        principal = self._emulator.auth.identify(request.headers.get("authorization"))
        if principal.kind == "none" and scope != "optional":
            raise _Rejected(platform_error(401, "Missing API key: send 'Authorization: Key <FAL_KEY>'"))
        if principal.kind not in ("none", "api", "admin"):
            raise _Rejected(platform_error(401, "Invalid API key"))
        if scope == "admin" and principal.kind != "admin":
            raise _Rejected(platform_error(403, "This endpoint requires an ADMIN API key"))
        return principal

    def _models_by_id(self, ids: Iterable[str]) -> list[ModelSpec]:
        models = [(endpoint_id, self._emulator.catalogue.get(endpoint_id)) for endpoint_id in ids]
        unknown = [endpoint_id for endpoint_id, model in models if model is None]
        if unknown:
            raise _Rejected(platform_error(404, f"Unknown endpoint_id: {', '.join(unknown)}"))
        return [model for _, model in models if model is not None]

    # ------------------------------------------------------------------ models and pricing

    async def models(self, request: Request) -> JSON:
        principal = self._require(request, "optional")
        ids = set(_ids(request, "endpoint_id"))
        status = request.query_params.get("status")
        if status not in (None, "active", "deprecated"):
            raise BadParameter("status must be active or deprecated")
        expand = set(_multi(request, "expand"))
        if not expand <= MODEL_EXPANSIONS:
            raise BadParameter(f"expand accepts {', '.join(sorted(MODEL_EXPANSIONS))}")
        category = request.query_params.get("category")
        words = _words(request.query_params.get("q", ""))
        models = [
            model
            for model in self._emulator.catalogue.listed()
            if (not ids or model.endpoint_id in ids)
            and (status is None or model.status == status)
            and (category is None or model.category == category)
            and all(word in _words(_searchable(model)) for word in words)
        ]
        page = paginate(
            models,
            parse_limit(request.query_params.get("limit"), 50, 100),
            request.query_params.get("cursor"),
        )
        return {
            "models": [self._model_entry(model, principal, expand) for model in page.items],
            **page.fields,
        }

    def _model_entry(self, model: ModelSpec, principal: Principal, expand: set[str]) -> JSON:
        urls = self._emulator.urls
        entry: JSON = {
            "endpoint_id": model.endpoint_id,
            "metadata": {
                "display_name": model.display_name,
                "category": model.category,
                "description": model.description,
                "status": model.status,
                "tags": list(model.tags),
                "updated_at": model.updated_at,
                "is_favorited": False if principal.is_key else None,
                "thumbnail_url": f"{urls.cdn_url}/files/thumbnails/{model.endpoint_id.replace('/', '_')}.png",
                "model_url": f"{urls.run_url}/{model.endpoint_id}",
                "license_type": model.license_type,
                "date": model.date,
                "highlighted": False,
                "kind": "inference",
                "duration_estimate": model.duration_estimate_min,
                "pinned": False,
            },
        }
        if "openapi-3.0" in expand:
            entry["openapi"] = self._openapi(model)
        if "enterprise_status" in expand:
            entry["enterprise_status"] = "ready"
        return entry

    def _openapi(self, model: ModelSpec) -> JSON:
        """An OpenAPI 3.0 document of the model's queue API, from its pydantic input/output."""
        components: dict[str, Any] = {}
        refs = {}
        for kind, schema_model in (("Input", model.input_model), ("Output", model.output_model)):
            schema = schema_model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            name = schema_model.__name__
            components[name] = schema
            refs[kind] = {"$ref": f"#/components/schemas/{name}"}
        path = f"/{model.endpoint_id}"
        return {
            "openapi": "3.0.4",
            "info": {
                "title": model.display_name,
                "version": "1.0.0",
                "x-fal-metadata": {"endpointId": model.endpoint_id, "category": model.category},
            },
            "servers": [{"url": self._emulator.urls.queue_url}],
            "paths": {
                path: {
                    "post": {
                        "requestBody": {
                            "required": True,
                            "content": {"application/json": {"schema": refs["Input"]}},
                        },
                        "responses": {"200": {"description": "The request is queued"}},
                    }
                },
                f"{path}/requests/{{request_id}}": {
                    "get": {
                        "parameters": [
                            {
                                "name": "request_id",
                                "in": "path",
                                "required": True,
                                "schema": {"type": "string"},
                            }
                        ],
                        "responses": {
                            "200": {
                                "description": "Result",
                                "content": {"application/json": {"schema": refs["Output"]}},
                            }
                        },
                    }
                },
            },
            "components": {"schemas": components},
        }

    async def pricing(self, request: Request) -> JSON:
        self._require(request, "api")
        models = self._models_by_id(_ids(request, "endpoint_id", required=True))
        prices = [
            {
                "endpoint_id": model.endpoint_id,
                "unit_price": model.unit_price,
                "unit": model.unit,
                "currency": CURRENCY,
            }
            for model in models
        ]
        return {"prices": prices, "next_cursor": None, "has_more": False}

    async def estimate(self, request: Request) -> JSON:
        self._require(request, "api")
        try:
            body = _EstimateRequest.model_validate({"body": await _json(request)}).body
        except ValidationError as exc:
            raise BadParameter(_first_error(exc)) from exc
        models = dict(zip(body.endpoints, self._models_by_id(body.endpoints), strict=True))
        if isinstance(body, _HistoricalEstimate):
            total = sum(
                quantity["call_quantity"] * models[endpoint_id].typical_units * models[endpoint_id].unit_price
                for endpoint_id, quantity in body.endpoints.items()
            )
        else:
            total = sum(
                quantity["unit_quantity"] * models[endpoint_id].unit_price
                for endpoint_id, quantity in body.endpoints.items()
            )
        return {"estimate_type": body.estimate_type, "total_cost": round(total, 9), "currency": CURRENCY}

    # ------------------------------------------------------------------ usage and billing

    def _finished_jobs(self, request: Request, window: TimeWindow, *, billed_only: bool) -> list[Job]:
        ids = set(_ids(request, "endpoint_id"))
        key_ids = set(_ids(request, "api_key_id"))
        usernames = set(_ids(request, "login_username"))
        request_ids = set(_ids(request, "request_id"))
        jobs = [
            job
            for job in self._emulator.state.jobs.values()
            if job.outcome is not None
            and job.completed_at is not None
            and window.contains(job.completed_at)
            and (not billed_only or job.outcome.billed_units > 0)
            and (not ids or str(job.endpoint) in ids)
            and (not key_ids or job.api_key_id in key_ids)
            # Every job belongs to the one emulated user: a username filter matches all or none.
            and (not usernames or self._emulator.config.user_id in usernames)
            and (not request_ids or job.request_id in request_ids)
        ]
        return sorted(jobs, key=lambda job: job.completed_at or 0.0)

    def _line(self, model: ModelSpec, quantity: float, key_id: str | None, expand: set[str]) -> JSON:
        discount = self._emulator.config.percent_discount
        money = costs(quantity, model.unit_price, discount)
        line: JSON = {
            "endpoint_id": model.endpoint_id,
            "unit": model.unit,
            "quantity": quantity,
            "unit_price": model.unit_price,
            "percent_discount": discount,
            **money,
            "cost": money["cost_total"],
            "currency": CURRENCY,
        }
        return line | _auth_fields(key_id, expand)

    async def usage(self, request: Request) -> JSON:
        self._require(request, "admin")
        window = _window(request)
        expand = set(_multi(request, "expand")) or {"time_series"}
        if not expand <= USAGE_EXPANSIONS or not expand & {"time_series", "summary"}:
            raise BadParameter(
                "expand needs time_series and/or summary (plus auth_method, auth_method_structured)"
            )
        by_key = bool(expand & {"auth_method", "auth_method_structured"})
        jobs = self._finished_jobs(request, window, billed_only=True)

        def lines(group: Iterable[Job]) -> list[JSON]:
            quantities: dict[tuple[str, str | None], float] = defaultdict(float)
            models: dict[str, ModelSpec] = {}
            for job in group:
                assert job.outcome is not None
                quantities[(job.model.endpoint_id, job.api_key_id if by_key else None)] += (
                    job.outcome.billed_units
                )
                models[job.model.endpoint_id] = job.model
            return [
                self._line(models[endpoint_id], quantity, key_id, expand)
                for (endpoint_id, key_id), quantity in sorted(quantities.items(), key=lambda item: item[0][0])
            ]

        return _report(request, window, jobs, expand, lines)

    async def billing_events(self, request: Request) -> JSON:
        self._require(request, "admin")
        query = request.query_params
        window = TimeWindow.from_query(query.get("start"), query.get("end"), bound_to_timeframe="false")
        if window.end - window.start > MAX_BILLING_SPAN:
            raise BadParameter("the date range is limited to 90 days per request")
        expand = set(_multi(request, "expand"))
        if not expand <= {"auth_method", "auth_method_structured"}:
            raise BadParameter("expand accepts auth_method and auth_method_structured")
        jobs = self._finished_jobs(request, window, billed_only=True)
        jobs.reverse()  # newest first
        page = paginate(jobs, parse_limit(query.get("limit"), 100, 10_000), query.get("cursor"))
        return {"billing_events": [self._billing_event(job, expand) for job in page.items], **page.fields}

    def _billing_event(self, job: Job, expand: set[str]) -> JSON:
        assert job.outcome is not None
        assert job.completed_at is not None
        discount = self._emulator.config.percent_discount
        money = job.billed_costs(discount)
        event: JSON = {
            "request_id": job.request_id,
            "endpoint_id": job.model.endpoint_id,
            "timestamp": utc_iso(job.completed_at),
            "output_units": job.outcome.billed_units,
            "unit_price": job.model.unit_price,
            "percent_discount": discount,
            **money,
            "cost_estimate_nano_usd": round(money["cost_total"] * 1e9),
        }
        return event | _auth_fields(job.api_key_id, expand)

    # ------------------------------------------------------------------ analytics

    async def analytics(self, request: Request) -> JSON:
        self._require(request, "api")
        _ids(request, "endpoint_id", required=True)
        window = _window(request)
        expand = set(_multi(request, "expand")) or {"time_series", "request_count"}
        metrics = expand & ANALYTICS_METRICS
        shapes = expand & {"time_series", "summary"}
        if not shapes or not metrics or expand - ANALYTICS_METRICS - shapes:
            raise BadParameter("expand needs time_series and/or summary plus at least one known metric")
        jobs = self._finished_jobs(request, window, billed_only=False)

        def results(group: Iterable[Job]) -> list[JSON]:
            by_endpoint: dict[str, list[Job]] = defaultdict(list)
            for job in group:
                by_endpoint[job.model.endpoint_id].append(job)
            return [
                {"endpoint_id": endpoint_id, **_metrics(endpoint_jobs, metrics)}
                for endpoint_id, endpoint_jobs in sorted(by_endpoint.items())
            ]

        return _report(request, window, jobs, shapes, results)

    # ------------------------------------------------------------------ request history

    async def requests_by_endpoint(self, request: Request) -> JSON:
        """``GET /models/requests/by-endpoint``: the account's requests to the given endpoints.

        A request is listed once a runner has started it (the spec requires ``started_at`` of
        every item), whether it has ended or not; ``start``/``end`` bound when it was sent.
        ``expand=payloads`` adds ``json_input``/``json_output``, which are null for a request
        sent with ``X-Fal-Store-IO: 0`` (fal kept no payloads). Newest first.
        """
        self._require(request, "api")
        query = request.query_params
        ids = set(_ids(request, "endpoint_id", required=True))
        request_id = query.get("request_id")
        span = HISTORY_REQUEST_ID_SPAN if request_id else HISTORY_DEFAULT_SPAN
        window = _history_window(query.get("start"), query.get("end"), span)
        status = query.get("status")
        if status is not None and status not in HISTORY_STATUSES:
            raise BadParameter(f"status must be one of {', '.join(HISTORY_STATUSES)}")
        expand = set(_multi(request, "expand"))
        if not expand <= {"payloads"}:
            raise BadParameter("expand accepts payloads")
        sort_by = query.get("sort_by", "ended_at")
        if sort_by not in HISTORY_SORTS:
            raise BadParameter(f"sort_by must be one of {', '.join(HISTORY_SORTS)}")
        jobs = [
            job
            for job in self._emulator.state.jobs.values()
            if job.started_at is not None
            and str(job.endpoint) in ids
            and window.contains(job.submitted_at)
            and (request_id is None or job.request_id == request_id)
            and (status is None or _ended_as(job, HISTORY_STATUSES[status]))
        ]
        jobs.sort(key=_history_order(sort_by), reverse=True)
        page = paginate(jobs, parse_limit(query.get("limit"), 50, 100), query.get("cursor"))
        items = [_history_item(job, payloads="payloads" in expand) for job in page.items]
        return {"items": items, **page.fields}

    # ------------------------------------------------------------------ account, compute and meta

    async def account_billing(self, request: Request) -> JSON:
        """``GET /account/billing`` (ADMIN): the username; ``expand=credits`` adds the balance, shown
        as 0 when requests that finished after the lock took it below (the spec's ``minimum: 0``)."""
        self._require(request, "admin")
        expand = set(_multi(request, "expand"))
        if not expand <= {"credits"}:
            raise BadParameter("expand accepts credits")
        billing: JSON = {"username": self._emulator.config.user_id}
        if "credits" in expand:
            balance = max(self._emulator.account.balance_usd, 0.0)
            billing["credits"] = {"current_balance": balance, "currency": CURRENCY}
        return billing

    async def compute_instances(self, request: Request) -> JSON:
        self._require(request, "admin")
        if not self._emulator.config.compute_permission:
            raise _Rejected(platform_error(403, "Compute instances are not enabled for this account"))
        return list_instances(self._emulator, request)

    async def meta(self, _request: Request) -> JSON:
        return {"webhook_ip_ranges": list(self._emulator.config.webhook_ip_ranges)}


# ---------------------------------------------------------------------- helpers


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise BadParameter("the body must be JSON") from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in error["loc"][1:]) or "body"
    return f"{location}: {error['msg']}"


def _window(request: Request) -> TimeWindow:
    query = request.query_params
    return TimeWindow.from_query(
        query.get("start"),
        query.get("end"),
        timezone=query.get("timezone"),
        timeframe=query.get("timeframe"),
        bound_to_timeframe=query.get("bound_to_timeframe"),
    )


def _report(
    request: Request,
    window: TimeWindow,
    jobs: list[Job],
    expand: set[str],
    results: Callable[[Iterable[Job]], list[JSON]],
) -> JSON:
    """The shape usage and analytics share: ``time_series`` buckets (paged) and/or a ``summary``
    over the whole window, each made of ``results`` of a group of jobs."""
    limit = parse_limit(request.query_params.get("limit"), 100, 1000)
    cursor = request.query_params.get("cursor")
    summary = {"summary": results(jobs)} if "summary" in expand else {}
    if "time_series" not in expand:
        page = paginate(summary["summary"], limit, cursor)
        return {"summary": page.items, **page.fields}
    buckets: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:  # sorted by completion, so buckets come out in time order
        buckets[window.bucket(job.completed_at or 0.0)].append(job)
    page = paginate(
        [{"bucket": bucket, "results": results(group)} for bucket, group in buckets.items()], limit, cursor
    )
    return {"time_series": page.items, **page.fields, **summary}


def _history_window(start: str | None, end: str | None, default_span: timedelta) -> TimeWindow:
    window = TimeWindow.from_query(None, end, bound_to_timeframe="false")
    if start is None:
        return TimeWindow(window.end - default_span, window.end, window.timeframe, window.tz)
    return TimeWindow.from_query(start, end, bound_to_timeframe="false")


def _ended_as(job: Job, wanted: Callable[[int], bool]) -> bool:
    return job.outcome is not None and job.completed_at is not None and wanted(job.outcome.status_code)


def _history_order(sort_by: str) -> Callable[[Job], tuple[float, float]]:
    """Newest (or longest) first once reversed; a request still running sorts as the newest."""
    if sort_by == "duration":
        return lambda job: (_duration(job) or -1.0, job.submitted_at)
    return lambda job: (job.completed_at if job.completed_at is not None else float("inf"), job.submitted_at)


def _duration(job: Job) -> float | None:
    if job.started_at is None or job.completed_at is None:
        return None
    return job.completed_at - job.started_at


def _history_item(job: Job, *, payloads: bool) -> JSON:
    assert job.started_at is not None
    item: JSON = {
        "request_id": job.request_id,
        "endpoint_id": str(job.endpoint),
        "started_at": utc_iso(job.started_at),
        "sent_at": utc_iso(job.submitted_at),
        "ended_at": utc_iso(job.completed_at) if job.completed_at is not None else None,
        "status_code": job.outcome.status_code if job.outcome is not None else None,
        "duration": _duration(job),
    }
    if payloads:
        kept = job.store_io
        item["json_input"] = job.payload if kept else None
        item["json_output"] = job.outcome.body if kept and job.outcome is not None else None
    return item


def _words(text: str) -> list[str]:
    return text.lower().replace("-", " ").replace("/", " ").replace("_", " ").split()


def _searchable(model: ModelSpec) -> str:
    return " ".join([model.endpoint_id, model.display_name, model.description, model.category, *model.tags])


def _auth_fields(key_id: str | None, expand: set[str]) -> JSON:
    fields: JSON = {}
    if key_id is None:
        return fields
    if "auth_method" in expand:
        fields["auth_method"] = f"API key {key_id}"
    if "auth_method_structured" in expand:
        fields["auth_method_structured"] = {"detail": f"API key {key_id}", "api_key_id": key_id}
    return fields


def _metrics(jobs: list[Job], wanted: set[str]) -> JSON:
    """The requested analytics metrics of one endpoint's requests in one bucket."""
    values: JSON = {
        **_status_counts(jobs),
        "cold_boot_count": 0,  # the emulator's runners are always warm
        "total_billable_duration": round(_billable_duration(jobs), 6),
        **_error_type_counts(jobs),
        **_duration_percentiles(jobs),
    }
    values |= {name: 0.0 for name in COLD_BOOT_METRICS if name != "cold_boot_count"}
    return {name: value for name, value in values.items() if name in wanted}


def _status_counts(jobs: list[Job]) -> JSON:
    statuses = [job.outcome.status_code for job in jobs if job.outcome is not None]
    return {
        "request_count": len(jobs),
        "success_count": sum(200 <= status < 300 for status in statuses),
        "user_error_count": sum(400 <= status < 500 for status in statuses),
        "error_count": sum(status >= 500 for status in statuses),
    }


def _billable_duration(jobs: list[Job]) -> float:
    """Seconds run by the requests that were billed."""
    return sum(
        job.completed_at - job.started_at
        for job in jobs
        if job.outcome is not None and job.outcome.billed_units > 0 and job.started_at and job.completed_at
    )


def _error_type_counts(jobs: list[Job]) -> JSON:
    error_types = [job.outcome.error_type for job in jobs if job.outcome is not None]
    return {name: sum(kind in types for kind in error_types) for name, types in ERROR_TYPE_METRICS.items()}


def _duration_percentiles(jobs: list[Job]) -> JSON:
    """Percentiles of the time spent waiting to start (prepare) and running (duration)."""
    prepare = [job.started_at - job.submitted_at for job in jobs if job.started_at is not None]
    durations = [
        job.completed_at - job.started_at
        for job in jobs
        if job.started_at is not None and job.completed_at is not None
    ]
    return {
        **{name: round(percentile(prepare, p), 6) for name, p in PREPARE_PERCENTILES.items()},
        **{name: round(percentile(durations, p), 6) for name, p in DURATION_PERCENTILES.items()},
    }
