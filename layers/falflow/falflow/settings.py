"""The fal field groups every function's settings class is composed of.

The convention: each function has one settings class, ``falflow/<function>/settings.py``, made of
the shared groups it needs (`JobsTableSettings`, `HandoffSettings`, `FalConnectionSettings`,
`SecretIds`, `DeadLetterSettings`) plus its own fields. ``<Name>App.from_environment()`` validates
it once per cold start and passes what each part needs down explicitly; nothing re-reads the
environment later.

Every base URL of fal is configurable so the same code talks to fal or to the local fal emulator,
and boto3 honours ``AWS_ENDPOINT_URL`` so the same code talks to AWS or to moto's server.
Secrets never live here: only the Secrets Manager ids under which the fal keys are kept.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr
from pydantic_settings import BaseSettings, SettingsConfigDict

from falflow.observability import JobMetrics


class FalSettings(BaseSettings):
    """Where fal lives and how patiently we talk to it."""

    model_config = SettingsConfigDict(env_prefix="FAL_", extra="ignore")

    queue_url: str = "https://queue.fal.run"
    run_url: str = "https://fal.run"
    rest_url: str = "https://rest.fal.ai"
    api_url: str = "https://api.fal.ai/v1"
    cdn_url: str = "https://v3.fal.media"
    # fal moved its REST host from rest.alpha.fal.ai in Feb 2026; the old host stays as a fallback.
    jwks_urls: list[str] = Field(
        default_factory=lambda: [
            "https://rest.fal.ai/.well-known/jwks.json",
            "https://rest.alpha.fal.ai/.well-known/jwks.json",
        ]
    )
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_attempts: int = 4
    backoff_base_s: float = 0.2
    backoff_cap_s: float = 5.0


class SecretIds(BaseSettings):
    """A group of a function's settings: the Secrets Manager ids (names or ARNs) of the fal keys and
    how long their values are cached (`falflow.secrets.FalKeys` reads them)."""

    model_config = SettingsConfigDict(extra="ignore")

    fal_key_secret_id: str = ""
    fal_admin_key_secret_id: str = ""
    secret_cache_seconds: int = 300


class FalConnectionSettings(BaseSettings):
    """A group of a function's settings: `FalSettings` (env prefix ``FAL_``), validated with the rest.

    Its prefix differs from the function's own fields, so it is validated in its own class when the
    function's settings are, and reached as ``settings.fal`` (it adds no field of its own).
    """

    model_config = SettingsConfigDict(extra="ignore")

    _fal: FalSettings = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        self._fal = FalSettings()

    @property
    def fal(self) -> FalSettings:
        return self._fal


class MetricSettings(BaseSettings):
    """A group of a function's settings: which models get their own ``model`` metric dimension
    (env METRIC_MODELS, a JSON list; `falflow.observability.JobMetrics` explains the bound)."""

    model_config = SettingsConfigDict(extra="ignore")

    metric_models: list[str] = Field(default_factory=list)

    def job_metrics(self) -> JobMetrics:
        return JobMetrics(frozenset(self.metric_models))
