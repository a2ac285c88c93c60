"""The one place where falflow talks HTTP to fal: shared client, auth header, retries.

Every fal client (queue, platform, storage) sends through ``FalHttp.request``, so timeouts, the
``Authorization: Key`` header and the retry rules are the same everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from random import random as _uniform
from typing import Any

import httpx

from falflow import __version__
from falflow.fal.errors import (
    FalError,
    FalServerError,
    FalTransportError,
    error_from_response,
    transport_error,
)
from falflow.settings import FalSettings

ApiKeyProvider = Callable[[], str]

USER_AGENT = f"falflow/{__version__}"


def request_timeout(settings: FalSettings) -> httpx.Timeout:
    return httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)


def build_http_client(settings: FalSettings) -> httpx.Client:
    """A client meant to live for the whole container, so connections to fal are reused."""
    return httpx.Client(
        timeout=request_timeout(settings),
        headers={"User-Agent": USER_AGENT},
        # Redirects would carry the Authorization header to wherever fal points; none are expected.
        follow_redirects=False,
    )


def key_header(api_key: ApiKeyProvider) -> dict[str, str]:
    return {"Authorization": f"Key {api_key()}"}


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**(n-1)))."""

    max_attempts: int
    base_s: float
    cap_s: float
    sleep: Callable[[float], None] = time.sleep
    random: Callable[[], float] = _uniform  # uniform in [0, 1); injectable for tests

    @classmethod
    def from_settings(
        cls,
        settings: FalSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _uniform,
    ) -> RetryPolicy:
        return cls(
            max_attempts=max(1, settings.max_attempts),
            base_s=settings.backoff_base_s,
            cap_s=settings.backoff_cap_s,
            sleep=sleep,
            random=random,
        )

    def delay(self, attempt: int) -> float:
        return self.random() * min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))


def certainly_not_accepted(error: FalError, response: httpx.Response | None) -> bool:
    """True only when fal certainly did not take the request in, so resending cannot duplicate it.

    That is: the connection never carried it, fal said 429 (nothing queued), or the reply carries
    fal's own evidence that the ingress never passed it on (`falflow.fal.errors.is_ingress_error`).
    """
    if isinstance(error, FalTransportError):
        return not error.ambiguous
    if response is None:
        return False
    if response.status_code == 429:
        return True
    return isinstance(error, FalServerError) and error.not_received


class FalHttp:
    """Sends one logical fal call, retrying it while a retry can help and cannot do harm."""

    def __init__(
        self,
        settings: FalSettings,
        api_key: ApiKeyProvider,
        http: httpx.Client | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._api_key = api_key
        self._http = http if http is not None else build_http_client(settings)
        self._timeout = request_timeout(settings)
        self.retry = retry if retry is not None else RetryPolicy.from_settings(settings)

    def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        idempotent: bool,
        authorized: bool = True,
        expected: Collection[int] = (),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str | list[str]] | None = None,
        json: Any = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send, retry, and return a 2xx reply (or one whose status is in ``expected``).

        ``idempotent=False`` is for submits: a failure is retried only when fal certainly did not
        accept the request; an ambiguous one raises ``FalTransportError(ambiguous=True)`` so the
        caller can reconcile instead of queueing the job twice. Raises the mapped ``FalError``.
        """
        all_headers = {**(headers or {}), **(key_header(self._api_key) if authorized else {})}
        if content is not None:
            all_headers["Content-Length"] = str(len(content))
        for attempt in range(1, self.retry.max_attempts + 1):
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    method,
                    url,
                    headers=all_headers,
                    params=params,
                    json=json,
                    # A one-shot iterator per attempt: httpx keeps each request alive in a
                    # response<->stream reference cycle until the cyclic GC runs, and a bytes
                    # body would stay alive with it (10 MB per upload part, piling up).
                    content=iter((content,)) if content is not None else None,
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                error: FalError = transport_error(exc)
            else:
                if response.is_success or response.status_code in expected:
                    return response
                error = error_from_response(response)

            may_retry = error.retryable and (idempotent or certainly_not_accepted(error, response))
            if not may_retry or attempt == self.retry.max_attempts:
                raise error
            self.retry.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover
