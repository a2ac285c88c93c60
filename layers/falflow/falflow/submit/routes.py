"""The route table: which fal model a file dropped under a key prefix goes to, and with what input.

Deploy-time configuration (the ``Routes`` parameter of template.yaml, env ``ROUTES``), JSON:

    {"upscale/": {"model": "fal-ai/clarity-upscaler",
                  "input": {"image_url": "{file_url}", "upscale_factor": 2},
                  "max_bytes": 52428800},
     "animate/": {"model": "fal-ai/kling-video/v2/master/text-to-video",
                  "input": {"prompt": "{file_text}"}, "max_bytes": 16384}}

A key goes to the route with the longest matching prefix. In ``input``, string values may hold
placeholders, replaced wherever they occur:

- ``{file_url}``: a URL fal can read the file at (a presigned S3 GET URL, or with
  ``"file_via": "fal_cdn"`` the URL of a copy uploaded to fal's CDN);
- ``{file_text}``: the file's content as UTF-8 text (e.g. a prompt);
- ``{file_name}``: the last segment of the key; ``{key}``: the whole key.

Other braces are left alone, so prompts may contain them. A route may also fix ``priority``,
``start_timeout``, ``output_prefix`` and ``metadata``, and ``max_bytes`` rejects larger files;
and what fal may keep and do (``store_io``, ``private_outputs``, ``output_expiry_seconds``,
``delete_payloads``, ``allow_fallbacks``; unset: the stack default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, RootModel, model_validator

from falflow.deferred import DeferredModel
from falflow.submit.request import EndpointIdStr, OutputExpiry, OutputPrefix, Priority, StartTimeout

FileVia = Literal["presigned_url", "fal_cdn"]
FILE_PLACEHOLDERS = ("file_url", "file_text")
PLACEHOLDERS = (*FILE_PLACEHOLDERS, "file_name", "key")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
# Longest text a {file_text} placeholder takes when the route sets no max_bytes.
DEFAULT_MAX_TEXT_BYTES = 64 * 1024


def placeholders_in(template: Any) -> set[str]:
    """The placeholder names used anywhere in a (nested) input template."""
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, Mapping):
        return set().union(*(placeholders_in(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(*(placeholders_in(v) for v in template))
    return set()


def render(template: Any, values: Mapping[str, str]) -> Any:
    """The template with each placeholder named in ``values`` replaced; others stay as written."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    if isinstance(template, Mapping):
        return {k: render(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [render(v, values) for v in template]
    return template


class Route(DeferredModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: EndpointIdStr
    input: dict[str, Any]
    file_via: FileVia = "presigned_url"
    max_bytes: Annotated[int, Field(gt=0)] | None = None
    priority: Priority = "normal"
    start_timeout: StartTimeout | None = None
    output_prefix: OutputPrefix | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    store_io: bool | None = None
    private_outputs: bool | None = None
    output_expiry_seconds: OutputExpiry | None = None
    delete_payloads: bool | None = None
    # The route's own spend caps in USD (0: none), defaults a run-time budget may override
    # (read by falflow.spend.settings from the same table).
    daily_budget_usd: Annotated[float, Field(ge=0)] = 0
    monthly_budget_usd: Annotated[float, Field(ge=0)] = 0
    allow_fallbacks: bool | None = None

    @model_validator(mode="after")
    def _template_uses_the_file(self) -> Self:
        if not placeholders_in(self.input) & set(FILE_PLACEHOLDERS):
            raise ValueError("the input template must use the file: {file_url} or {file_text}")
        return self

    @property
    def placeholders(self) -> set[str]:
        return placeholders_in(self.input)

    @property
    def max_text_bytes(self) -> int:
        return min(self.max_bytes or DEFAULT_MAX_TEXT_BYTES, DEFAULT_MAX_TEXT_BYTES)


class RouteTable(RootModel[dict[str, Route]]):
    """Key prefix → route."""

    root: dict[str, Route] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _prefixes_are_relative(self) -> Self:
        for prefix in self.root:
            if not prefix or prefix.startswith("/"):
                raise ValueError(
                    f"route prefix {prefix!r} must be a non-empty key prefix without a leading /"
                )
        return self

    @property
    def prefixes(self) -> list[str]:
        return list(self.root)

    def match(self, key: str) -> tuple[str, Route] | None:
        """The route of the longest prefix of ``key``, or None."""
        matches = [prefix for prefix in self.root if key.startswith(prefix)]
        if not matches:
            return None
        prefix = max(matches, key=len)
        return prefix, self.root[prefix]
