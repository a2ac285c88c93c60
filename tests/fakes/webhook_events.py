"""Signed fal webhook deliveries for tests and for ``events/``: a signing key, its JWKS, and
API Gateway HTTP API (v2) events carrying a delivery.

The committed key in ``events/webhook/`` is a TEST key (it signs nothing but samples). Re-sign the
samples with the current time (fal's signatures are valid for ±300 s) before a local invoke:

    .venv/bin/python -m tests.fakes.webhook_events
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)

from falflow.webhook.token import JOB_ID_PARAMETER, TOKEN_PARAMETER, WebhookTokens, job_token
from falflow_tools.emulator.signing import base64url_unpadded, webhook_message
from falflow_tools.local.front_door import Route
from falflow_tools.local.front_door import http_api_event as front_door_event

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events" / "webhook"
TEST_KEY_PATH = EVENTS_DIR / "test-signing-key.pem"
TEST_JWKS_PATH = EVENTS_DIR / "jwks.json"
TEST_USER_ID = "falflow-test-user"
WEBHOOK_PATH = "/webhooks/fal"
TEST_TOKEN_KEY = b"falflow-test-webhook-token-key"


@dataclass
class StaticTokenKeys:
    """`TokenKeys` with fixed values; set ``current`` and ``previous`` to model a rotation."""

    current_key: bytes = TEST_TOKEN_KEY
    previous_key: bytes | None = None

    def current(self) -> bytes:
        return self.current_key

    def previous(self) -> bytes | None:
        return self.previous_key


def fixed_tokens() -> WebhookTokens:
    """The tokens under `TEST_TOKEN_KEY` (unit tests' stand-in for the stack secret)."""
    return WebhookTokens(StaticTokenKeys())


@dataclass(frozen=True)
class WebhookSigner:
    """Signs deliveries the way fal does (docs/fal-contract.md §3)."""

    key: Ed25519PrivateKey
    kid: str
    user_id: str = TEST_USER_ID

    @classmethod
    def generate(cls, kid: str | None = None) -> WebhookSigner:
        return cls(Ed25519PrivateKey.generate(), kid or f"test-{uuid.uuid4().hex[:8]}")

    @classmethod
    def committed(cls) -> WebhookSigner:
        """The TEST key committed in events/webhook/ (never used for anything real)."""
        key = load_pem_private_key(TEST_KEY_PATH.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        kid = json.loads(TEST_JWKS_PATH.read_text())["keys"][0]["kid"]
        return cls(key, kid)

    def jwk(self) -> dict[str, str]:
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig", "x": base64url_unpadded(raw)}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk()]}

    def headers(self, body: bytes, request_id: str, *, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        message = webhook_message(request_id, self.user_id, stamp, body)
        return {
            "X-Fal-Webhook-Request-Id": request_id,
            "X-Fal-Webhook-User-Id": self.user_id,
            "X-Fal-Webhook-Timestamp": stamp,
            "X-Fal-Webhook-Signature": self.key.sign(message).hex(),
        }


def delivery(request_id: str, *, payload: Any = None, status: str = "OK", **extra: Any) -> bytes:
    """A webhook body in fal's shape, serialised compactly like fal's sender."""
    body = {"request_id": request_id, "gateway_request_id": request_id, "status": status, "payload": payload}
    return json.dumps({**body, **extra}, separators=(",", ":")).encode()


def http_api_event(
    body: bytes,
    headers: Mapping[str, str],
    *,
    job_id: str | None,
    token: str | None = None,
    base64_body: bool = False,
    lower_case_headers: bool = True,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event for ``POST /webhooks/fal?job_id=…&token=…``, as
    the local front door builds it; a test may also force a base64 body or keep mixed-case header
    names."""
    query = {JOB_ID_PARAMETER: job_id} if job_id is not None else {}
    if token is not None:
        query[TOKEN_PARAMETER] = token
    all_headers = {"content-type": "application/json", "user-agent": "fal-webhook", **headers}
    event = front_door_event(
        route=Route("POST", WEBHOOK_PATH, "WebhookFunction"),
        path_parameters={},
        method="POST",
        raw_path=WEBHOOK_PATH,
        raw_query=urlencode(query),
        headers=list(all_headers.items()),
        body=body,
        source_ip="192.0.2.10",
        domain_name="local.execute-api.us-east-1.amazonaws.com",
    )
    if base64_body:  # API Gateway base64-encodes whatever it deems binary
        event.update(body=base64.b64encode(body).decode(), isBase64Encoded=True)
    if not lower_case_headers:
        event["headers"] = all_headers
    return event


def event_body(event: Mapping[str, Any]) -> bytes:
    body = str(event.get("body") or "")
    return base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()


def resign_event(
    event: dict[str, Any], signer: WebhookSigner, *, timestamp: int | None = None, token: str | None = None
) -> dict[str, Any]:
    """The same event with a fresh signature (the body bytes unchanged), and with ``token`` on its
    URL if given (the committed samples carry none: a token is only valid under one stack's secret)."""
    headers = {k: v for k, v in event["headers"].items() if not k.lower().startswith("x-fal-webhook-")}
    request_id = event["headers"]["x-fal-webhook-request-id"]
    signed = {
        k.lower(): v for k, v in signer.headers(event_body(event), request_id, timestamp=timestamp).items()
    }
    resigned = {**event, "headers": {**headers, **signed}}
    if token is not None:
        query = {**event.get("queryStringParameters", {}), TOKEN_PARAMETER: token}
        resigned.update(queryStringParameters=query, rawQueryString=urlencode(query))
    return resigned


def write_test_key() -> WebhookSigner:
    """Create the committed TEST key and its JWKS (run once; kept in git)."""
    signer = WebhookSigner.generate(kid="falflow-events-test-key")
    pem = signer.key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    EVENTS_DIR.mkdir(parents=True, exist_ok=True)
    TEST_KEY_PATH.write_bytes(pem)
    TEST_JWKS_PATH.write_text(json.dumps(signer.jwks(), indent=2) + "\n")
    return signer


def main() -> None:
    """Re-sign every webhook sample in events/webhook/ with the current time (and, given the stack's
    webhook token secret in FALFLOW_WEBHOOK_TOKEN_KEY, put each job's token on its URL)."""
    signer = WebhookSigner.committed()
    token_key = os.environ.get("FALFLOW_WEBHOOK_TOKEN_KEY", "").encode()
    for path in sorted(EVENTS_DIR.glob("*.json")):
        if path == TEST_JWKS_PATH:
            continue
        event = json.loads(path.read_text())
        job_id = event["queryStringParameters"][JOB_ID_PARAMETER]
        token = job_token(token_key, job_id) if token_key else None
        path.write_text(json.dumps(resign_event(event, signer, token=token), indent=2) + "\n")
        print(f"re-signed {path.relative_to(EVENTS_DIR.parents[1])}", file=sys.stderr)


if __name__ == "__main__":
    main()
