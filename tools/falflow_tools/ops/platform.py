"""fal's analytics and compute instances, from the Platform API with the stack's fal keys
(analytics with the API key; compute with the ADMIN key: docs/fal-contract.md §5)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from falflow.fal import AnalyticsResult, ComputeInstance, FalError, FalPlatformClient
from falflow.fal.platform import ANALYTICS_METRICS
from falflow_tools.ops.submit import routes
from falflow_tools.ops.target import OpsError, Target

# What `falflow analytics` asks fal for: volumes and the run-time percentiles fal reports.
INSTANCE_TYPES = ("gpu_1x_h100_sxm5", "gpu_8x_h100_sxm5")
SECTORS = ("sector_1", "sector_2", "sector_3")


@dataclass(frozen=True)
class EndpointAnalytics:
    """One endpoint's requests over a window, as fal counts them."""

    endpoint_id: str
    requests: int
    successes: int
    user_errors: int
    errors: int
    percentiles: dict[str, float]

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.requests if self.requests else None

    @classmethod
    def of(cls, result: AnalyticsResult) -> EndpointAnalytics:
        extra: dict[str, Any] = result.model_extra or {}
        return cls(
            endpoint_id=result.endpoint_id,
            requests=result.request_count or 0,
            successes=result.success_count or 0,
            user_errors=result.user_error_count or 0,
            errors=result.error_count or 0,
            percentiles={k: float(v) for k, v in extra.items() if k.endswith("duration") and v is not None},
        )

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "success_rate": self.success_rate}


def analytics_models(target: Target, models: Sequence[str]) -> list[str]:
    """The endpoints to report: those asked for, else every model the stack's routes use."""
    chosen = list(dict.fromkeys(models)) or sorted({route.model for route in routes(target).root.values()})
    if not chosen:
        raise OpsError("the stack has no routes: name the models with --model")
    return chosen


def analytics(
    target: Target,
    models: Sequence[str],
    *,
    since: datetime,
    until: datetime,
    client: FalPlatformClient | None = None,
) -> list[EndpointAnalytics]:
    client = client or FalPlatformClient(target.fal, target.fal_api_key)
    try:
        report = client.analytics(
            analytics_models(target, models),
            since,
            until,
            bound_to_timeframe=False,
            metrics=ANALYTICS_METRICS,
            expand=("summary",),
        )
    except FalError as error:
        raise OpsError(f"fal's analytics failed: {error}") from error
    return [EndpointAnalytics.of(result) for result in report.summary]


def _admin(target: Target) -> FalPlatformClient:
    return FalPlatformClient(target.fal, target.fal_admin_key)


def _compute_call[T](what: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except FalError as error:
        raise OpsError(f"fal refused to {what}: {error}") from error


def list_instances(target: Target) -> list[ComputeInstance]:
    return _compute_call("list compute instances", lambda: list(_admin(target).iter_compute_instances()))


def show_instance(target: Target, instance_id: str) -> ComputeInstance:
    return _compute_call("show the instance", lambda: _admin(target).compute_instance(instance_id))


def create_instance(
    target: Target, instance_type: str, ssh_key: str, *, sector: str | None = None
) -> ComputeInstance:
    """Create one instance: it bills until deleted. One idempotency key per command, so the
    client's retries of a lost reply cannot create a second one."""
    key = str(uuid.uuid4())
    return _compute_call(
        "create the instance",
        lambda: _admin(target).create_compute_instance(
            instance_type, ssh_key, sector=sector, idempotency_key=key
        ),
    )


def delete_instance(target: Target, instance_id: str) -> None:
    _compute_call("delete the instance", lambda: _admin(target).delete_compute_instance(instance_id))
