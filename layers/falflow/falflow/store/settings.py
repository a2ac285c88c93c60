"""The store function's configuration (env vars of template.yaml's StoreFunction), validated once per
cold start by `StoreApp.from_environment`: the jobs table, fal, its keys, dead-lettering and its own."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from falflow.aws.dead_letter import DeadLetterSettings
from falflow.completion.finalise import FinaliserSettings
from falflow.jobs.settings import JobsTableSettings
from falflow.settings import FalConnectionSettings, SecretIds
from falflow.store.copy import MIN_PART_SIZE, CopyLimits
from falflow.store.media import MediaPolicy


class StoreSettings(
    JobsTableSettings, FinaliserSettings, FalConnectionSettings, SecretIds, DeadLetterSettings
):
    # Host patterns (fnmatch, e.g. "*.fal.media") output files may be downloaded from, over https.
    media_hosts: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*.fal.media"])
    # Exact origins ("http://127.0.0.1:8123") trusted although they are plain http or loopback.
    # Only the local stack and tests set this (the fal emulator's CDN); deployed stacks leave it empty.
    media_allow_local: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_output_bytes: Annotated[int, Field(ge=1)] = 5 * 2**30
    part_size_bytes: Annotated[int, Field(ge=MIN_PART_SIZE)] = 8 * 2**20
    # boto3's own upload concurrency; memory stays near (10 + 1) parts, ~90 MB with 8 MiB parts.
    copy_concurrency: Annotated[int, Field(ge=1, le=16)] = 10
    # How long one store run holds a job; longer than the store function's timeout (the local stack
    # scales both down together: falflow_tools.local.timings).
    store_lease_seconds: Annotated[float, Field(gt=0)] = 960

    @field_validator("media_hosts", "media_allow_local", mode="before")
    @classmethod
    def _json_or_comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return (
                json.loads(text)
                if text.startswith("[")
                else [p.strip() for p in text.split(",") if p.strip()]
            )
        return value

    @property
    def store_lease(self) -> timedelta:
        return timedelta(seconds=self.store_lease_seconds)

    def media_policy(self) -> MediaPolicy:
        return MediaPolicy.build(self.media_hosts, self.media_allow_local, self.max_output_bytes)

    def copy_limits(self) -> CopyLimits:
        return CopyLimits(
            part_size=self.part_size_bytes, concurrency=self.copy_concurrency, max_bytes=self.max_output_bytes
        )
