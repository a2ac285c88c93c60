"""Verify fal's ED25519 webhook signatures against fal's JWKS (docs/fal-contract.md §3).

The signed message is ``request_id\\nuser_id\\ntimestamp\\nhex(sha256(raw body))``, with the header
values exactly as received and the raw body bytes (never re-serialised JSON).
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

# fal rotates keys; never trust a copy older than this.
MAX_JWKS_AGE_S = 24 * 3600.0
# A flood of badly signed requests must not turn into a flood of JWKS fetches.
MIN_REFETCH_INTERVAL_S = 60.0
# Without usable keys, a failed fetch is tried again after this, not at each delivery: often enough
# that one timeout does not turn away every delivery for a minute (a 1,000-job local run saw two
# timed-out fetches refuse 3,274 deliveries), rarely enough not to hammer fal's JWKS host.
FETCH_RETRY_S = 5.0
DEFAULT_TOLERANCE_S = 300
# ASCII digits only: int() would also take "+1", " 1", "1_000" or non-ASCII digits.
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")

REQUEST_ID_HEADER = "x-fal-webhook-request-id"
USER_ID_HEADER = "x-fal-webhook-user-id"
TIMESTAMP_HEADER = "x-fal-webhook-timestamp"
SIGNATURE_HEADER = "x-fal-webhook-signature"


class InvalidSignatureError(Exception):
    """The delivery is not provably from fal: reject it (401), do not retry."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JwksUnavailableError(Exception):
    """No JWKS URL gave usable keys. Transient: answer 5xx so fal redelivers later."""


@dataclass(frozen=True, slots=True)
class VerifiedDelivery:
    request_id: str
    user_id: str
    timestamp: int


class JwksCache:
    """fal's webhook public keys, fetched lazily and kept at most ``max_age_s`` (≤ 24 h)."""

    def __init__(
        self,
        urls: Sequence[str],
        http: httpx.Client,
        max_age_s: float = MAX_JWKS_AGE_S,
        clock: Callable[[], float] = time.time,
        *,
        min_refetch_interval_s: float = MIN_REFETCH_INTERVAL_S,
        fetch_retry_s: float = FETCH_RETRY_S,
    ) -> None:
        if not urls:
            raise ValueError("JwksCache needs at least one JWKS URL")
        self._urls = list(urls)
        self._http = http
        self.max_age_s = min(max_age_s, MAX_JWKS_AGE_S)
        self._clock = clock
        self._min_refetch_interval_s = min_refetch_interval_s
        self._fetch_retry_s = min(fetch_retry_s, min_refetch_interval_s)
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._lock = threading.Lock()

    def keys(self) -> list[Ed25519PublicKey]:
        """The cached keys, fetched first if missing or older than ``max_age_s``."""
        with self._lock:
            if self._fetched_at is None or self._clock() - self._fetched_at >= self.max_age_s:
                if self._attempted_within(self._fetch_retry_s):
                    # The last fetch failed moments ago; fail fast instead of hammering the host.
                    raise JwksUnavailableError("fal JWKS fetch failed moments ago")
                self._fetch()
            return list(self._keys)

    def refresh(self) -> list[Ed25519PublicKey]:
        """Fetch now, trying each URL in turn. Raises ``JwksUnavailableError`` if none works."""
        with self._lock:
            self._fetch()
            return list(self._keys)

    def refresh_if_older_than(self, seconds: float) -> bool:
        """Refetch unless the last attempt was under ``seconds`` ago; True if keys were refetched."""
        with self._lock:
            if self._attempted_within(seconds):
                return False
            self._fetch()
            return True

    def refresh_on_unknown_key(self) -> bool:
        """The once-per-failure refetch of ``verify_fal_signature``, rate limited."""
        return self.refresh_if_older_than(self._min_refetch_interval_s)

    def _attempted_within(self, seconds: float) -> bool:
        return self._attempted_at is not None and self._clock() - self._attempted_at < seconds

    def _fetch(self) -> None:
        self._attempted_at = self._clock()
        failures: list[str] = []
        for url in self._urls:
            try:
                response = self._http.get(url)
                response.raise_for_status()
                keys = parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                failures.append(f"{url}: {type(exc).__name__}")
                continue
            if keys:
                self._keys, self._fetched_at = keys, self._attempted_at
                return
            failures.append(f"{url}: no Ed25519 keys")
        raise JwksUnavailableError("no usable fal JWKS: " + "; ".join(failures))


def parse_jwks(document: Any) -> list[Ed25519PublicKey]:
    """The Ed25519 keys of a JWKS document; other key types and malformed keys are skipped."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("JWKS document has no 'keys' list")
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            continue
        x = entry.get("x")
        if not isinstance(x, str):
            continue
        try:
            keys.append(Ed25519PublicKey.from_public_bytes(b64url_decode(x)))
        except ValueError:  # wrong length, or bad base64 (binascii.Error is a ValueError)
            continue
    return keys


def b64url_decode(value: str) -> bytes:
    """base64url without padding, as JWKS writes it; Python's decoder insists on the padding."""
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def verify_fal_signature(
    headers: Mapping[str, str],
    raw_body: bytes,
    jwks: JwksCache,
    *,
    now: float | None = None,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> VerifiedDelivery:
    """Check a webhook delivery; raise ``InvalidSignatureError`` unless fal signed it recently.

    Headers are matched case-insensitively (API Gateway lower-cases them). When no cached key
    verifies, the JWKS is refetched once (rate limited) in case fal rotated its keys.
    """
    by_name = {name.lower(): value for name, value in headers.items()}
    missing = [
        name
        for name in (REQUEST_ID_HEADER, USER_ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
        if not by_name.get(name)
    ]
    if missing:
        raise InvalidSignatureError(f"missing header {', '.join(missing)}")
    request_id, user_id = by_name[REQUEST_ID_HEADER], by_name[USER_ID_HEADER]
    timestamp_text = by_name[TIMESTAMP_HEADER]

    if not _UNIX_SECONDS.fullmatch(timestamp_text):
        raise InvalidSignatureError("timestamp is not a Unix time in seconds")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise InvalidSignatureError(f"timestamp is more than {tolerance_s} s from now")

    try:
        signature = bytes.fromhex(by_name[SIGNATURE_HEADER])
    except ValueError:
        raise InvalidSignatureError("signature is not hex") from None

    message = "\n".join((request_id, user_id, timestamp_text, hashlib.sha256(raw_body).hexdigest())).encode()
    if _any_key_verifies(jwks.keys(), signature, message) or (
        jwks.refresh_on_unknown_key() and _any_key_verifies(jwks.keys(), signature, message)
    ):
        return VerifiedDelivery(request_id=request_id, user_id=user_id, timestamp=timestamp)
    raise InvalidSignatureError("no fal key verifies the signature")


def _any_key_verifies(keys: Sequence[Ed25519PublicKey], signature: bytes, message: bytes) -> bool:
    for key in keys:
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
