"""API Gateway HTTP API (payload v2) events in and out of the webhook receiver.

The signature covers the exact bytes fal sent, so the body is taken as API Gateway hands it over:
base64-decoded when ``isBase64Encoded`` is set, else the string's UTF-8 bytes — never parsed and
re-serialised. Header names arrive lower-cased from HTTP APIs; we lower-case them anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from falflow.webhook.receiver import WebhookReply, WebhookRequest


class UnreadableBodyError(ValueError):
    """``isBase64Encoded`` is set but the body is not base64."""


def webhook_request(event: Mapping[str, Any]) -> WebhookRequest:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise UnreadableBodyError("body is marked base64 but is not") from None
    else:
        raw = body.encode("utf-8")
    headers = {str(name).lower(): str(value) for name, value in (event.get("headers") or {}).items()}
    query = {str(k): str(v) for k, v in (event.get("queryStringParameters") or {}).items()}
    return WebhookRequest(headers=headers, body=raw, query=query)


def http_response(reply: WebhookReply) -> dict[str, Any]:
    return {
        "statusCode": reply.status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(reply.body),
    }
