"""fal's model catalogue and prices, from the Platform API (with the stack's fal API key)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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


@dataclass(frozen=True)
class InputField:
    name: str
    type: str
    required: bool
    default: Any = None
    has_default: bool = False
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        if self.has_default:
            found["default"] = self.default
        if self.description:
            found["description"] = self.description
        return found


def input_fields(model: ModelInfo) -> list[InputField]:
    """The fields of the model's input, from the request body of its OpenAPI POST operation."""
    document = model.openapi or {}
    schema = _input_schema(document)
    if schema is None:
        raise OpsError(f"fal published no input schema for {model.endpoint_id}")
    required = set(schema.get("required", []))
    return [
        InputField(
            name=name,
            type=_type_name(document, spec),
            required=name in required,
            default=spec.get("default"),
            has_default="default" in spec,
            description=str(spec.get("description", "")),
        )
        for name, spec in schema.get("properties", {}).items()
    ]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    found: Any = document
    for part in ref[2:].split("/"):
        found = found.get(part, {}) if isinstance(found, dict) else {}
    return found if isinstance(found, dict) else {}


def _input_schema(document: dict[str, Any]) -> dict[str, Any] | None:
    for operations in document.get("paths", {}).values():
        body = (operations.get("post") or {}).get("requestBody", {})
        schema = body.get("content", {}).get("application/json", {}).get("schema")
        if isinstance(schema, dict):
            return _resolve(document, schema)
    return None


def _type_name(document: dict[str, Any], spec: dict[str, Any]) -> str:
    """`string`, `integer`, `enum(a|b)`, `ImageSize`, `string | ImageSize`, `array[string]`."""
    for combined in ("anyOf", "oneOf", "allOf"):
        if combined in spec:
            names = [_type_name(document, part) for part in spec[combined]]
            return " | ".join(dict.fromkeys(name for name in names if name != "null")) or "null"
    if "$ref" in spec:
        resolved = _resolve(document, spec)
        if "enum" in resolved:
            return _type_name(document, resolved)
        return str(spec["$ref"]).rsplit("/", 1)[-1]
    if "enum" in spec:
        return "enum(" + "|".join(str(value) for value in spec["enum"]) + ")"
    if spec.get("type") == "array":
        return f"array[{_type_name(document, spec.get('items', {}))}]"
    return str(spec.get("type", "any"))
