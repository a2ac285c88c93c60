"""Configuration, validated once per cold start.

Every base URL of fal is configurable so the same code talks to fal or to the local fal emulator,
and boto3 honours ``AWS_ENDPOINT_URL`` so the same code talks to AWS or to moto's server.
Secrets never live here: only the Secrets Manager ids under which the fal keys are kept.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    """Secrets Manager ids (names or ARNs) of the fal keys; the values are read through a cache."""

    model_config = SettingsConfigDict(extra="ignore")

    fal_key_secret_id: str = ""
    fal_admin_key_secret_id: str = ""
    secret_cache_seconds: int = 300


@lru_cache(maxsize=1)
def fal_settings() -> FalSettings:
    return FalSettings()


@lru_cache(maxsize=1)
def secret_ids() -> SecretIds:
    return SecretIds()
