"""The submit function's configuration, validated once per cold start.

Every field is read from the environment variable of the same name in upper case, exactly as
template.yaml sets it for SubmitFunction (a test holds the two equal); fal's settings are
``settings.fal`` (env ``FAL_*``). A bad route table or a
webhook URL that cannot carry a job id and token fails the cold start, not the first job.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Self
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field, field_validator, model_validator

from falflow.aws.dead_letter import DeadLetterSettings
from falflow.settings import FalConnectionSettings, SecretIds, WebhookTokenSettings
from falflow.spend.caps import Caps
from falflow.spend.settings import SpendSettings, route_caps
from falflow.submit.batches.settings import FanOutSettings
from falflow.submit.request import FalDefaults
from falflow.submit.routes import RouteTable
from falflow.webhook.token import JOB_ID_PARAMETER, TOKEN_PARAMETER


class SubmitSettings(
    FanOutSettings,
    FalConnectionSettings,
    SecretIds,
    WebhookTokenSettings,
    DeadLetterSettings,
    SpendSettings,
):
    input_bucket: Annotated[str, Field(min_length=1)]
    webhook_url: str
    routes: RouteTable = Field(default_factory=RouteTable)
    jobs_prefix: Annotated[str, Field(min_length=1)] = "jobs/"
    # Lifetime of the presigned GET URLs fal reads input files through. A URL signed with the
    # function's role credentials dies with them, whatever this says: see falflow.submit.files.
    presign_expiry_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 6 * 3600
    # Where inputs too large for the job record are kept (input_ref); empty: such jobs are rejected.
    output_bucket: str = ""
    max_inline_input_bytes: Annotated[int, Field(ge=1024, le=300 * 1024)] = 64 * 1024
    # The model catalogue the collect function keeps; empty: leave unknown models to fal's 404.
    usage_table: str = ""
    # How long a submit whose reply was lost keeps the job to itself: the time fal's webhook has to
    # bind the request it may have queued before the job is sent again (falflow.submit.service).
    # Keep it below the intake queue's visibility timeout so the first redelivery can resend.
    submit_ambiguous_grace_seconds: Annotated[float, Field(gt=0, le=12 * 3600)] = 300
    # A worker's hold on a job while it sends it: longer than the submit function can run (its
    # Timeout, 60 s in template.yaml; a test holds it below half of this), so a live worker never
    # loses its lease. The local stack scales it with the intake queue's visibility and the
    # function's timeout (falflow_tools.local.timings).
    submit_lease_seconds: Annotated[float, Field(gt=0)] = 120
    # A message fal did not take (429, 5xx) comes back after this, doubled at each receive (30 s,
    # 60 s, 120 s, 240 s before the fifth and last); a held job's comes back when its hold ends.
    submit_retry_base_seconds: Annotated[float, Field(gt=0, le=900)] = 30
    # Submissions of one batch in flight at once (the batch size is 10).
    submit_concurrency: Annotated[int, Field(ge=1, le=100)] = 10
    # What fal may keep and do, where a route or request does not say (README "What fal keeps"):
    # keep the job's payloads (X-Fal-Store-IO), make its output files private from the start and
    # expire them (X-Fal-Object-Lifecycle-Preference; 0: the account's setting), delete fal's
    # payloads once our copy is stored, and reroute to an "equivalent" model (fal's fallbacks).
    store_io: bool = True
    private_outputs: bool = False
    output_expiry_seconds: Annotated[int, Field(ge=0)] = 0
    delete_payloads: bool = False
    allow_fallbacks: bool = False

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url_carries_a_job_id(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL")
        if parts.fragment:
            raise ValueError("must not have a fragment")
        for name, _ in parse_qsl(parts.query):
            if name in (JOB_ID_PARAMETER, TOKEN_PARAMETER):
                raise ValueError(f"must not carry a {name!r} parameter: each job adds its own")
        return value

    @model_validator(mode="after")
    def _jobs_prefix_is_no_route(self) -> Self:
        for prefix in self.routes.prefixes:
            if prefix.startswith(self.jobs_prefix) or self.jobs_prefix.startswith(prefix):
                raise ValueError(
                    f"route prefix {prefix!r} overlaps the jobs prefix {self.jobs_prefix!r}: "
                    "a key under both would be a job document and a media drop at once"
                )
        return self

    def route_caps(self) -> dict[str, Caps]:
        return route_caps(self.routes.root)

    def fal_defaults(self) -> FalDefaults:
        return FalDefaults(
            store_io=self.store_io,
            private_outputs=self.private_outputs,
            output_expiry_seconds=self.output_expiry_seconds or None,
            delete_payloads=self.delete_payloads,
            allow_fallbacks=self.allow_fallbacks,
        )

    @property
    def ambiguous_grace(self) -> timedelta:
        return timedelta(seconds=self.submit_ambiguous_grace_seconds)

    @property
    def worker_lease(self) -> timedelta:
        return timedelta(seconds=self.submit_lease_seconds)
