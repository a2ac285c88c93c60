"""Validating Platform API responses against fal's OpenAPI 3.1 spec.

``fal-platform-openapi.json`` is a verbatim copy of ``/work/shared/fal/platform-openapi.json``
(fal's Platform API v1 spec, read from tryAGI/Fal at badf521), kept here so CI checks the contract
from a fresh clone. Each response is validated with JSON Schema 2020-12 against the schema the
spec gives for its path, method and status; ``$ref``s resolve inside the spec document.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC: dict[str, Any] = json.loads((Path(__file__).with_name("fal-platform-openapi.json")).read_text())
_SPEC_URI = "urn:fal:platform-openapi"
_REGISTRY: Registry[Any] = Registry().with_resource(
    _SPEC_URI, Resource.from_contents(SPEC, default_specification=DRAFT202012)
)
API_PREFIX = "/api/v1"


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def spec_path(path: str) -> str:
    """The spec's path for a request path: itself, or the template it fills (``/a/{id}/b``)."""
    if path in SPEC["paths"]:
        return path
    for template in SPEC["paths"]:
        if "{" in template and re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            return str(template)
    raise AssertionError(f"{path} is not a path of fal's Platform API")


def assert_matches_spec(response: httpx.Response) -> Any:
    """Validate ``response`` (an ``{api_url}/...`` call) against the spec; returns its JSON."""
    path = spec_path(response.request.url.path.removeprefix(API_PREFIX))
    method = response.request.method.lower()
    operation = SPEC["paths"][path][method]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method.upper()} {path} answered {status}, not in the spec"
    assert response.headers["content-type"].startswith("application/json")
    pointer = _pointer("paths", path, method, "responses", status, "content", "application/json", "schema")
    validator = Draft202012Validator(
        {"$ref": f"{_SPEC_URI}#/{pointer}"},
        registry=_REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
    body = response.json()
    validator.validate(body)
    return body
