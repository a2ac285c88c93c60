"""The webhook function's configuration (env vars of template.yaml's WebhookFunction), validated once
per cold start by `WebhookApp.from_environment`: the hand-off's settings, fal's (the JWKS URLs), the
webhook token secret's and its own."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from falflow.completion.settings import HandoffSettings
from falflow.settings import FalConnectionSettings, WebhookTokenSettings


class WebhookSettings(HandoffSettings, FalConnectionSettings, WebhookTokenSettings):
    # fal's signature timestamp may be this far from our clock, either way.
    webhook_tolerance_seconds: Annotated[int, Field(ge=1, le=3600)] = 300
    # After a signature no cached key verifies, fal's JWKS is refetched at most this often.
    jwks_refetch_seconds: Annotated[float, Field(ge=0)] = 60.0
    # fal user ids (X-Fal-Webhook-User-Id) whose deliveries are accepted; empty accepts any account.
    fal_webhook_user_ids: list[str] = Field(default_factory=list)
