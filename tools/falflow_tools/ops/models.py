"""fal's model catalogue and prices, from the Platform API (with the stack's fal API key)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Literal

from falflow.fal import FalError, FalPlatformClient, ModelInfo, Price
from falflow_tools.ops.target import OpsError, Target

OPENAPI_EXPANSION = "openapi-3.0"


def platform(target: Target) -> FalPlatformClient:
    return FalPlatformClient(target.fal, target.fal_api_key)


def search_models(
    target: Target,
    query: str | None = None,
    *,
    category: str | None = None,
    status: Literal["active", "deprecated"] | None = None,
    limit: int = 20,
    client: FalPlatformClient | None = None,
) -> list[ModelInfo]:
    client = client or platform(target)
    try:
        return list(itertools.islice(client.iter_models(query, category=category, status=status), limit))
    except FalError as error:
        raise OpsError(f"fal's model search failed: {error}") from error


def show_model(
    target: Target, endpoint_id: str, *, schema: bool = False, client: FalPlatformClient | None = None
) -> ModelInfo:
    """One model's metadata (and its OpenAPI schema with `schema`)."""
    client = client or platform(target)
    try:
        found = list(
            client.iter_models(endpoint_ids=[endpoint_id], expand=[OPENAPI_EXPANSION] if schema else None)
        )
    except FalError as error:
        raise OpsError(f"fal's model lookup failed: {error}") from error
    for model in found:
        if model.endpoint_id == endpoint_id:
            return model
    raise OpsError(f"fal has no model {endpoint_id!r}")


def model_pricing(
    target: Target, endpoint_ids: Sequence[str], *, client: FalPlatformClient | None = None
) -> list[Price]:
    client = client or platform(target)
    try:
        prices = client.pricing(endpoint_ids)
    except FalError as error:
        raise OpsError(f"fal's pricing lookup failed: {error}") from error
    unknown = set(endpoint_ids) - {price.endpoint_id for price in prices}
    if unknown and not prices:
        raise OpsError(f"fal has no price for {', '.join(sorted(unknown))}")
    return prices
