from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from falflow.fal.webhook import (
    FETCH_RETRY_S,
    MAX_JWKS_AGE_S,
    MIN_REFETCH_INTERVAL_S,
    InvalidSignatureError,
    JwksCache,
    JwksUnavailableError,
    VerifiedDelivery,
    verify_fal_signature,
)

JWKS_URL = "https://rest.fal.test/.well-known/jwks.json"
FALLBACK_URL = "https://rest.alpha.fal.test/.well-known/jwks.json"
NOW = 1_780_000_000
BODY = b'{"request_id":"r-1","gateway_request_id":"r-1","status":"OK","payload":{"images":[]}}'
KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


def jwk(private: Ed25519PrivateKey, kid: str = "k1") -> dict[str, str]:
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": kid,
        "x": base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def signed_headers(
    body: bytes = BODY,
    *,
    key: Ed25519PrivateKey = KEY,
    timestamp: int = NOW,
    request_id: str = "r-1",
    user_id: str = "user-7",
) -> dict[str, str]:
    message = f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


@dataclass
class JwksHost:
    """Serves a JWKS per URL (a dict, or an int status to fail with) and counts fetches."""

    documents: dict[str, Any]
    fetches: list[str] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.fetches.append(url)
        document = self.documents.get(url, 404)
        if document == "connect-error":
            raise httpx.ConnectError("refused", request=request)
        if isinstance(document, int):
            return httpx.Response(document)
        return httpx.Response(200, json=document)

    def cache(self, *urls: str, clock: list[float] | None = None, **kwargs: Any) -> JwksCache:
        times = clock if clock is not None else [float(NOW)]
        http = httpx.Client(transport=httpx.MockTransport(self.handle))
        return JwksCache(list(urls) or [JWKS_URL], http, clock=lambda: times[0], **kwargs)


def test_valid_delivery_verifies() -> None:
    host = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}})

    delivery = verify_fal_signature(signed_headers(), BODY, host.cache(), now=NOW)

    assert delivery == VerifiedDelivery(request_id="r-1", user_id="user-7", timestamp=NOW)
    assert host.fetches == [JWKS_URL]


def test_the_jwks_x_is_unpadded_base64url_as_fal_publishes_it() -> None:
    x = jwk(KEY)["x"]
    assert len(x) == 43
    assert "=" not in x

    verify_fal_signature(signed_headers(), BODY, JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache(), now=NOW)


def test_tampered_body_is_rejected() -> None:
    jwks = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache()

    with pytest.raises(InvalidSignatureError, match="no fal key verifies"):
        verify_fal_signature(signed_headers(), BODY.replace(b'"OK"', b'"ERROR"'), jwks, now=NOW)


def test_reserialised_json_does_not_verify() -> None:
    jwks = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache()

    with pytest.raises(InvalidSignatureError):
        verify_fal_signature(signed_headers(), json.dumps(json.loads(BODY)).encode(), jwks, now=NOW)


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Fal-Webhook-Request-Id", "r-2"),
        ("X-Fal-Webhook-User-Id", "someone-else"),
    ],
)
def test_tampered_signed_headers_are_rejected(header: str, value: str) -> None:
    headers = {**signed_headers(), header: value}

    with pytest.raises(InvalidSignatureError):
        verify_fal_signature(headers, BODY, JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache(), now=NOW)


def test_wrong_key_is_rejected_after_one_rate_limited_refetch() -> None:
    host = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}})
    clock = [float(NOW)]
    jwks = host.cache(clock=clock)
    forged = signed_headers(key=OTHER_KEY)

    with pytest.raises(InvalidSignatureError):
        verify_fal_signature(forged, BODY, jwks, now=NOW)
    assert len(host.fetches) == 1  # the refetch would come less than a minute after the first fetch

    clock[0] += 61
    with pytest.raises(InvalidSignatureError):
        verify_fal_signature(forged, BODY, jwks, now=NOW)
    assert len(host.fetches) == 2  # one refetch, then rejected

    # A flood of forgeries right after does not reach the JWKS host again.
    for _ in range(20):
        with pytest.raises(InvalidSignatureError):
            verify_fal_signature(forged, BODY, jwks, now=NOW)
    assert len(host.fetches) == 2


def test_rotated_key_is_picked_up_by_the_refetch() -> None:
    host = JwksHost({JWKS_URL: {"keys": [jwk(OTHER_KEY, "old")]}})
    clock = [float(NOW)]
    jwks = host.cache(clock=clock)
    jwks.keys()
    clock[0] += 3600
    host.documents[JWKS_URL] = {"keys": [jwk(OTHER_KEY, "old"), jwk(KEY, "new")]}

    delivery = verify_fal_signature(signed_headers(), BODY, jwks, now=NOW)

    assert delivery.request_id == "r-1"
    assert len(host.fetches) == 2


def test_every_key_in_the_set_is_tried() -> None:
    keys = [jwk(Ed25519PrivateKey.generate(), f"k{n}") for n in range(3)] + [jwk(KEY, "mine")]
    jwks = JwksHost({JWKS_URL: {"keys": keys}}).cache()

    assert verify_fal_signature(signed_headers(), BODY, jwks, now=NOW).user_id == "user-7"


def test_keys_that_are_not_ed25519_are_ignored() -> None:
    document = {
        "keys": [
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "X25519", "x": jwk(KEY)["x"]},
            {"kty": "OKP", "crv": "Ed25519", "x": "too-short"},
            {"kty": "OKP", "crv": "Ed25519"},
            "not-a-key",
            jwk(KEY),
        ]
    }
    jwks = JwksHost({JWKS_URL: document}).cache()

    assert len(jwks.keys()) == 1
    verify_fal_signature(signed_headers(), BODY, jwks, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301, -10_000, 10_000])
def test_stale_and_future_timestamps_are_rejected(skew: int) -> None:
    jwks = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache()

    with pytest.raises(InvalidSignatureError, match="300 s"):
        verify_fal_signature(signed_headers(timestamp=NOW + skew), BODY, jwks, now=NOW)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_timestamps_within_tolerance_pass(skew: int) -> None:
    jwks = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache()

    assert (
        verify_fal_signature(signed_headers(timestamp=NOW + skew), BODY, jwks, now=NOW).timestamp
        == NOW + skew
    )


@pytest.mark.parametrize(
    "header",
    [
        "X-Fal-Webhook-Request-Id",
        "X-Fal-Webhook-User-Id",
        "X-Fal-Webhook-Timestamp",
        "X-Fal-Webhook-Signature",
    ],
)
def test_each_missing_header_is_rejected(header: str) -> None:
    host = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}})
    headers = signed_headers()
    del headers[header]

    with pytest.raises(InvalidSignatureError, match=header.lower()) as raised:
        verify_fal_signature(headers, BODY, host.cache(), now=NOW)

    assert "missing header" in raised.value.reason
    assert host.fetches == []  # rejected before any key is needed


@pytest.mark.parametrize("case", [str.lower, str.upper, lambda h: h.swapcase()])
def test_header_names_match_in_any_case(case: Any) -> None:
    headers = {case(name): value for name, value in signed_headers().items()}

    verify_fal_signature(headers, BODY, JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache(), now=NOW)


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("X-Fal-Webhook-Timestamp", "17800000.5", "Unix time"),
        ("X-Fal-Webhook-Timestamp", "+1780000000", "Unix time"),
        ("X-Fal-Webhook-Timestamp", "1_780_000_000", "Unix time"),
        ("X-Fal-Webhook-Signature", "not-hex", "not hex"),
    ],
)
def test_malformed_headers_are_rejected(header: str, value: str, reason: str) -> None:
    headers = {**signed_headers(), header: value}

    with pytest.raises(InvalidSignatureError, match=reason):
        verify_fal_signature(headers, BODY, JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache(), now=NOW)


def test_jwks_is_cached_and_refetched_after_its_max_age() -> None:
    host = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}})
    clock = [float(NOW)]
    jwks = host.cache(clock=clock, max_age_s=3600)

    for _ in range(5):
        jwks.keys()
    clock[0] += 3599
    jwks.keys()
    assert len(host.fetches) == 1

    clock[0] += 1
    jwks.keys()
    assert len(host.fetches) == 2


def test_jwks_max_age_is_capped_at_24_hours() -> None:
    host = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}})
    clock = [float(NOW)]
    jwks = host.cache(clock=clock, max_age_s=7 * 24 * 3600)

    assert jwks.max_age_s == MAX_JWKS_AGE_S == 24 * 3600
    jwks.keys()
    clock[0] += 24 * 3600
    jwks.keys()
    assert len(host.fetches) == 2


@pytest.mark.parametrize("failure", [500, 404, "connect-error", {"no": "keys"}, {"keys": []}])
def test_falls_back_to_the_next_jwks_url(failure: Any) -> None:
    host = JwksHost({JWKS_URL: failure, FALLBACK_URL: {"keys": [jwk(KEY)]}})

    verify_fal_signature(signed_headers(), BODY, host.cache(JWKS_URL, FALLBACK_URL), now=NOW)

    assert host.fetches == [JWKS_URL, FALLBACK_URL]


def test_no_usable_jwks_is_unavailable_not_invalid() -> None:
    # The webhook answers 5xx for this so fal redelivers, instead of 401 for a real delivery.
    host = JwksHost({JWKS_URL: 503, FALLBACK_URL: "connect-error"})
    clock = [float(NOW)]
    jwks = host.cache(JWKS_URL, FALLBACK_URL, clock=clock)

    with pytest.raises(JwksUnavailableError, match="no usable fal JWKS"):
        verify_fal_signature(signed_headers(), BODY, jwks, now=NOW)
    # Straight after a failed fetch the cache fails fast instead of hammering the hosts...
    with pytest.raises(JwksUnavailableError, match="moments ago"):
        jwks.keys()
    clock[0] += FETCH_RETRY_S - 0.1
    with pytest.raises(JwksUnavailableError, match="moments ago"):
        jwks.keys()
    assert len(host.fetches) == 2

    # ...but tries again seconds later, not a minute: until then every delivery is turned away.
    clock[0] += 0.1
    host.documents[JWKS_URL] = {"keys": [jwk(KEY)]}
    assert len(jwks.keys()) == 1
    assert FETCH_RETRY_S < MIN_REFETCH_INTERVAL_S


def test_refresh_fetches_now() -> None:
    host = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}})
    jwks = host.cache()
    jwks.keys()

    jwks.refresh()

    assert len(host.fetches) == 2


def test_a_cache_needs_a_url() -> None:
    with pytest.raises(ValueError, match="at least one"):
        JwksCache([], httpx.Client())


_cache = JwksHost({JWKS_URL: {"keys": [jwk(KEY)]}}).cache()


@given(body=st.binary(max_size=2048), flip=st.integers(min_value=0))
def test_signature_holds_for_any_body_and_breaks_on_any_changed_byte(body: bytes, flip: int) -> None:
    headers = signed_headers(body)

    assert verify_fal_signature(headers, body, _cache, now=NOW).request_id == "r-1"

    if body:
        index = flip % len(body)
        tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
        with pytest.raises(InvalidSignatureError):
            verify_fal_signature(headers, tampered, _cache, now=NOW)
    with pytest.raises(InvalidSignatureError):
        verify_fal_signature(headers, body + b"\n", _cache, now=NOW)
