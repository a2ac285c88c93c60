"""Fetching output files without letting a payload point the function anywhere else (no SSRF).

A URL from fal's payload is fetched only if it is https on the default port without credentials, its
host matches an allowed pattern (``*.fal.media`` plus ``MEDIA_HOSTS``; never an IP literal), every
address it resolves to is public, the connection goes to the address checked, and redirects stay on
the same origin (at most ``MAX_REDIRECTS``). ``MEDIA_ALLOW_LOCAL`` trusts exact local origins for the
local stack and tests only. Why: docs/adr/0008-output-files-are-fetched-only-from-allowed-public-hosts.md.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatchcase

import httpx

from falflow.fal.http import tls_context
from falflow.store.transport import BlockReadTransport

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}

Resolver = Callable[[str, int], Sequence[str]]


class OutputRefusedError(Exception):
    """The URL may not be fetched (policy); permanent — nothing was fetched from it."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"refused {redact(url)}: {reason}")
        self.url = url
        self.reason = reason


class OutputUnavailableError(Exception):
    """The media host answered that the file is not there (4xx); permanent."""


class OutputTooLargeError(Exception):
    """The file is larger than ``MAX_OUTPUT_BYTES``; permanent."""


class MediaTransientError(Exception):
    """A fault that a later attempt may not meet (5xx, 429, connection trouble)."""


def redact(url: str) -> str:
    """A URL for logs and records: scheme, host and path; no query (it may carry a token)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return f"{parsed.scheme}://{parsed.host}{parsed.path}"


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback)


def normalise_origin(origin: str) -> str:
    parsed = httpx.URL(origin.strip())
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise ValueError(f"not an http(s) origin: {origin!r}")
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    return f"{parsed.scheme}://{parsed.host.lower()}:{port}"


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the policy, with the address to connect to."""

    url: httpx.URL
    host: str
    port: int
    address: str

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.url.scheme, self.host, self.port)

    def pinned(self) -> httpx.URL:
        return self.url.copy_with(host=self.address)

    @property
    def host_header(self) -> str:
        default = _DEFAULT_PORTS[self.url.scheme] == self.port
        return self.host if default else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class MediaPolicy:
    host_patterns: tuple[str, ...] = ("*.fal.media",)
    trusted_origins: frozenset[str] = frozenset()
    max_bytes: int = 5 * 2**30

    @classmethod
    def build(
        cls, host_patterns: Sequence[str], trusted_origins: Sequence[str], max_bytes: int
    ) -> MediaPolicy:
        return cls(
            host_patterns=tuple(p.strip().lower().rstrip(".") for p in host_patterns if p.strip()),
            trusted_origins=frozenset(normalise_origin(o) for o in trusted_origins if o.strip()),
            max_bytes=max_bytes,
        )

    def check(self, url: str, resolve: Resolver = resolve_host) -> CheckedUrl:
        """Return where to connect for ``url``, or raise ``OutputRefusedError`` saying why not."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise OutputRefusedError(url, "not a valid URL") from None
        scheme = parsed.scheme
        if scheme not in _DEFAULT_PORTS:
            raise OutputRefusedError(url, f"scheme {scheme or '(none)'!r} is not https")
        host = parsed.host.lower().rstrip(".")
        if not host:
            raise OutputRefusedError(url, "no host")
        if parsed.userinfo:
            raise OutputRefusedError(url, "credentials in the URL")
        port = parsed.port or _DEFAULT_PORTS[scheme]
        trusted = f"{scheme}://{host}:{port}" in self.trusted_origins
        if not trusted:
            if scheme != "https":
                raise OutputRefusedError(url, "only https downloads are allowed")
            if port != 443:
                raise OutputRefusedError(url, f"port {port} is not allowed")
            if _is_ip_literal(host) or not any(fnmatchcase(host, p) for p in self.host_patterns):
                raise OutputRefusedError(url, f"host {host} is not an allowed media host")
        try:
            addresses = resolve(host, port)
        except OSError:
            raise MediaTransientError(f"cannot resolve {host}") from None
        if not addresses:
            raise MediaTransientError(f"{host} resolves to no address")
        if not trusted:
            private = [a for a in addresses if not is_public_address(a)]
            if private:
                raise OutputRefusedError(url, f"host {host} resolves to a non-public address {private[0]}")
        return CheckedUrl(url=parsed, host=host, port=port, address=addresses[0])


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass
class MediaResponse:
    """An open download: its declared type and length, and its bytes in chunks."""

    url: str
    content_type: str | None
    content_length: int | None
    _response: httpx.Response

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The body as it arrives (``None``: as the connection reads it, with no regrouping; the
        copy gathers parts itself, and regrouping costs a copy of every byte)."""
        try:
            yield from self._response.iter_bytes(chunk_size)
        except httpx.TransportError as error:
            raise MediaTransientError(f"download broke off: {type(error).__name__}") from None


class MediaFetcher:
    """Opens downloads that obey a ``MediaPolicy``; one instance per container (keeps connections)."""

    def __init__(
        self,
        policy: MediaPolicy,
        http: httpx.Client | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        self.policy = policy
        self._http = http or httpx.Client(
            transport=BlockReadTransport(tls_context()),
            timeout=httpx.Timeout(60.0, connect=5.0),
            follow_redirects=False,
            trust_env=False,
        )
        self._resolve = resolve

    def check(self, url: str) -> CheckedUrl:
        return self.policy.check(url, self._resolve)

    @contextmanager
    def open(self, url: str) -> Iterator[MediaResponse]:
        checked = self.check(url)
        first = checked
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(checked)
            if response.status_code not in _REDIRECT_STATUSES:
                break
            location = response.headers.get("location")
            response.close()
            if not location:
                raise MediaTransientError("redirect without a location")
            target = str(checked.url.join(location))
            checked = self.check(target)
            if checked.origin != first.origin:
                raise OutputRefusedError(target, f"redirect from {first.host} to another host {checked.host}")
        else:
            response.close()
            raise OutputRefusedError(url, f"more than {MAX_REDIRECTS} redirects")
        try:
            _raise_for_status(response, url)
            length_header = response.headers.get("content-length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            if length is not None and length > self.policy.max_bytes:
                raise OutputTooLargeError(
                    f"{redact(url)} is {length} bytes, over the {self.policy.max_bytes} cap"
                )
            yield MediaResponse(
                url=url,
                content_type=response.headers.get("content-type"),
                content_length=length,
                _response=response,
            )
        finally:
            response.close()

    def _send(self, checked: CheckedUrl) -> httpx.Response:
        extensions = {"sni_hostname": checked.host} if checked.url.scheme == "https" else {}
        request = self._http.build_request(
            "GET",
            checked.pinned(),
            headers={"Host": checked.host_header, "Accept-Encoding": "identity"},
            extensions=extensions,
        )
        try:
            return self._http.send(request, stream=True, follow_redirects=False)
        except httpx.TransportError as error:
            raise MediaTransientError(
                f"cannot download from {checked.host}: {type(error).__name__}"
            ) from None


def _raise_for_status(response: httpx.Response, url: str) -> None:
    status = response.status_code
    if status == 200:
        return
    if status in (408, 425, 429) or status >= 500:
        raise MediaTransientError(f"{redact(url)} answered {status}")
    raise OutputUnavailableError(f"{redact(url)} answered {status}")
