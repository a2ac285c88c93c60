"""The emulator's own webhook signing keys, published as a JWKS like fal's (docs/fal-contract.md §3).

fal signs ``request_id \\n user_id \\n timestamp \\n hex(sha256(raw body))`` with Ed25519 and
sends the hex signature in ``X-Fal-Webhook-Signature``; receivers try every key of the JWKS.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def webhook_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The exact bytes fal signs for a webhook delivery."""
    return "\n".join([request_id, user_id, timestamp, hashlib.sha256(body).hexdigest()]).encode()


def base64url_unpadded(data: bytes) -> str:
    """JWK encoding: base64url without ``=`` padding (the receivers' classic pitfall)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(kid=f"emulator-{secrets.token_hex(6)}", private_key=Ed25519PrivateKey.generate())

    def jwk(self) -> dict[str, str]:
        raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "use": "sig", "x": base64url_unpadded(raw)}


class KeyRing:
    """The signing key plus, after a rotation, the previous one (still published, no longer used)."""

    def __init__(self) -> None:
        self._current = SigningKey.generate()
        self._previous: SigningKey | None = None

    @property
    def current(self) -> SigningKey:
        return self._current

    def rotate(self, *, keep_previous: bool = True) -> SigningKey:
        self._previous = self._current if keep_previous else None
        self._current = SigningKey.generate()
        return self._current

    def jwks(self) -> dict[str, Any]:
        keys = [self._current] + ([self._previous] if self._previous else [])
        return {"keys": [key.jwk() for key in keys]}

    def sign(self, request_id: str, user_id: str, timestamp: str, body: bytes) -> str:
        message = webhook_message(request_id, user_id, timestamp, body)
        return self._current.private_key.sign(message).hex()
