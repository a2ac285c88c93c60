"""The webhook function's entry: `WebhookApp`, built once per cold start from the environment, turns
an API Gateway HTTP API (v2) event into the receiver's reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from aws_lambda_powertools.utilities.typing import LambdaContext

from falflow.fal.http import USER_AGENT
from falflow.fal.webhook import JwksCache
from falflow.webhook.http_api import UnreadableBodyError, http_response, webhook_request
from falflow.webhook.receiver import WebhookReceiver, WebhookReply
from falflow.webhook.settings import WebhookSettings
from falflow.webhook.token import webhook_tokens

JWKS_TIMEOUT_S = 2.0


class WebhookApp:
    def __init__(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver

    @classmethod
    def from_environment(cls, settings: WebhookSettings | None = None) -> WebhookApp:
        """Once per cold start: settings validated, clients and the JWKS cache made."""
        settings = settings or WebhookSettings()
        # Short timeouts: even a fetch from both JWKS hosts must fit the function's 10 s, well
        # inside the 15 s fal waits for a reply.
        jwks_http = httpx.Client(
            timeout=httpx.Timeout(JWKS_TIMEOUT_S), headers={"User-Agent": USER_AGENT}, follow_redirects=False
        )
        jwks = JwksCache(
            settings.fal.jwks_urls, jwks_http, min_refetch_interval_s=settings.jwks_refetch_seconds
        )
        receiver = WebhookReceiver(
            settings.completion_handoff(),
            jwks,
            webhook_tokens(settings),
            tolerance_s=settings.webhook_tolerance_seconds,
            allowed_user_ids=settings.fal_webhook_user_ids,
        )
        return cls(receiver)

    def handle(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        """An API Gateway HTTP API (v2) event in, its response out."""
        try:
            request = webhook_request(event)
        except UnreadableBodyError as error:
            return http_response(WebhookReply(400, {"message": str(error)}))
        return http_response(self.receiver.receive(request))
