"""The download policy (no SSRF) and the fetcher that enforces it on every hop."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from falflow.fal.errors import FalAuthError, FalNotFoundError, FalServerError
from falflow.store.media import (
    MediaFetcher,
    MediaPolicy,
    MediaTransientError,
    OutputRefusedError,
    OutputTooLargeError,
    OutputUnavailableError,
)

PUBLIC = "93.184.215.14"
DNS = {
    "v3.fal.media": [PUBLIC],
    "v3b.fal.media": ["93.184.215.15"],
    "metadata.fal.media": ["169.254.169.254"],
    "internal.fal.media": ["10.0.0.7"],
    "mixed.fal.media": [PUBLIC, "192.168.1.9"],
    "v6.fal.media": ["::ffff:127.0.0.1"],
    "cdn.example.com": [PUBLIC],
    "localhost": ["127.0.0.1"],
}


def resolve(host: str, port: int) -> Sequence[str]:
    return DNS[host]


POLICY = MediaPolicy.build(["*.fal.media"], [], max_bytes=1000)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://v3.fal.media/files/a.png", "https"),
        ("https://169.254.169.254/latest/meta-data/", "not an allowed media host"),
        ("https://10.0.0.1/a.png", "not an allowed media host"),
        ("https://[::1]/a.png", "not an allowed media host"),
        ("https://metadata.fal.media/latest/meta-data/", "non-public address 169.254.169.254"),
        ("https://internal.fal.media/a.png", "non-public address 10.0.0.7"),
        ("https://mixed.fal.media/a.png", "non-public address 192.168.1.9"),
        ("https://v6.fal.media/a.png", "non-public address"),
        ("https://cdn.example.com/a.png", "not an allowed media host"),
        ("https://fal.media.evil.com/a.png", "not an allowed media host"),
        ("https://user:pw@v3.fal.media/a.png", "credentials"),
        ("https://v3.fal.media:8443/a.png", "port 8443"),
        ("file:///etc/passwd", "scheme"),
        ("ftp://v3.fal.media/a", "scheme"),
        ("https://localhost/a.png", "not an allowed media host"),
    ],
)
def test_the_policy_refuses(url: str, why: str) -> None:
    with pytest.raises(OutputRefusedError, match=why):
        POLICY.check(url, resolve)


def test_the_policy_allows_fal_media_hosts_and_configured_ones() -> None:
    assert POLICY.check("https://v3.fal.media/files/a.png", resolve).address == PUBLIC
    assert POLICY.check("https://V3B.FAL.MEDIA./files/a.png", resolve).host == "v3b.fal.media"
    configured = MediaPolicy.build(["*.fal.media", "cdn.example.com"], [], max_bytes=1)
    assert configured.check("https://cdn.example.com/x", resolve).host == "cdn.example.com"


def test_a_trusted_local_origin_is_allowed_exactly_and_nothing_else() -> None:
    local = MediaPolicy.build(["*.fal.media"], ["http://127.0.0.1:8123"], max_bytes=1)
    checked = local.check("http://127.0.0.1:8123/cdn/files/r/a.png", lambda h, p: [h])
    assert checked.address == "127.0.0.1"
    for other in ("http://127.0.0.1:8124/cdn/a.png", "https://127.0.0.1:8123/a", "http://127.0.0.2:8123/a"):
        with pytest.raises(OutputRefusedError):
            local.check(other, lambda h, p: [h])


class Cdn:
    """A mock transport standing in for every host: records what was asked of which host."""

    def __init__(self, routes: dict[str, httpx.Response]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.headers["host"]
        self.requests.append((request.url.host, host, request.url.path))
        return self.routes.get(f"{host}{request.url.path}", httpx.Response(404))


def fetcher(cdn: Cdn, policy: MediaPolicy = POLICY) -> MediaFetcher:
    return MediaFetcher(policy, httpx.Client(transport=httpx.MockTransport(cdn)), resolve)


def test_downloads_go_to_the_checked_address_with_the_real_host_name() -> None:
    cdn = Cdn(
        {"v3.fal.media/a.png": httpx.Response(200, content=b"png!", headers={"content-type": "image/png"})}
    )
    with fetcher(cdn).open("https://v3.fal.media/a.png") as response:
        assert b"".join(response.iter_bytes(2)) == b"png!"
        assert response.content_type == "image/png"
    assert cdn.requests == [(PUBLIC, "v3.fal.media", "/a.png")]  # pinned IP, Host kept


def test_a_redirect_to_another_host_is_refused_and_that_host_never_asked() -> None:
    cdn = Cdn(
        {
            "v3.fal.media/a.png": httpx.Response(302, headers={"location": "https://v3b.fal.media/a.png"}),
            "v3b.fal.media/a.png": httpx.Response(200, content=b"x"),
        }
    )
    with (
        pytest.raises(OutputRefusedError, match="another host"),
        fetcher(cdn).open("https://v3.fal.media/a.png"),
    ):
        pass
    assert [r[1] for r in cdn.requests] == ["v3.fal.media"]


def test_a_redirect_to_instance_metadata_is_refused_before_it_is_followed() -> None:
    cdn = Cdn(
        {"v3.fal.media/a.png": httpx.Response(301, headers={"location": "http://169.254.169.254/latest/"})}
    )
    with pytest.raises(OutputRefusedError), fetcher(cdn).open("https://v3.fal.media/a.png"):
        pass
    assert len(cdn.requests) == 1


def test_same_host_redirects_are_followed_a_few_times_only() -> None:
    cdn = Cdn(
        {
            "v3.fal.media/a.png": httpx.Response(302, headers={"location": "/b.png"}),
            "v3.fal.media/b.png": httpx.Response(200, content=b"b"),
            "v3.fal.media/loop": httpx.Response(302, headers={"location": "/loop"}),
        }
    )
    with fetcher(cdn).open("https://v3.fal.media/a.png") as response:
        assert b"".join(response.iter_bytes(10)) == b"b"
    with pytest.raises(OutputRefusedError, match="redirects"), fetcher(cdn).open("https://v3.fal.media/loop"):
        pass


def test_status_and_size_answers() -> None:
    cdn = Cdn(
        {
            "v3.fal.media/gone": httpx.Response(404),
            "v3.fal.media/busy": httpx.Response(503),
            "v3.fal.media/big": httpx.Response(200, content=b"x" * 1001),
        }
    )
    with pytest.raises(OutputUnavailableError), fetcher(cdn).open("https://v3.fal.media/gone"):
        pass
    with pytest.raises(MediaTransientError), fetcher(cdn).open("https://v3.fal.media/busy"):
        pass
    with pytest.raises(OutputTooLargeError), fetcher(cdn).open("https://v3.fal.media/big"):
        pass


# --------------------------------------------------------------------- output hosts, private files

DNS["storage.googleapis.com"] = [PUBLIC]


def test_fals_bucket_on_a_shared_host_is_allowed_by_host_and_path_only() -> None:
    default = MediaPolicy()  # the default MediaHosts
    example = "https://storage.googleapis.com/falserverless/example_outputs/flux2_flex_t2i_output.png"
    assert default.check(example, resolve).host == "storage.googleapis.com"
    for other in (
        "https://storage.googleapis.com/someone-elses-bucket/a.png",
        "https://storage.googleapis.com/falserverless-not/a.png",
        "https://storage.googleapis.com/a.png",
    ):
        with pytest.raises(OutputRefusedError, match="not an allowed media host"):
            default.check(other, resolve)


class PrivateCdn:
    """A fal CDN file that answers ``status`` to an anonymous read and its bytes to a signed one."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[httpx.URL] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url)
        if request.url.params.get("identity") == "sig-1":
            return httpx.Response(200, content=b"private png", headers={"content-type": "image/png"})
        return httpx.Response(self.status)


def signing_fetcher(cdn: PrivateCdn, signed: list[str], policy: MediaPolicy = POLICY) -> MediaFetcher:
    def sign(url: str) -> str:
        signed.append(url)
        return f"{url}?identity=sig-1"

    return MediaFetcher(policy, httpx.Client(transport=httpx.MockTransport(cdn)), resolve, signer=sign)


@pytest.mark.parametrize("status", [401, 403, 404])  # forbid answers 403, hide as if missing
def test_a_private_fal_cdn_file_is_read_through_a_signed_url(status: int) -> None:
    cdn, signed = PrivateCdn(status), []

    with signing_fetcher(cdn, signed).open("https://v3.fal.media/files/b/1/out.png") as response:
        assert b"".join(response.iter_bytes(64)) == b"private png"

    assert signed == ["https://v3.fal.media/files/b/1/out.png"]
    assert [url.params.get("identity") for url in cdn.requests] == [None, "sig-1"]


def test_a_file_missing_even_when_signed_is_unavailable() -> None:
    cdn = PrivateCdn(404)

    def sign(url: str) -> str:
        return f"{url}?identity=wrong"

    fetcher_ = MediaFetcher(POLICY, httpx.Client(transport=httpx.MockTransport(cdn)), resolve, signer=sign)
    with (
        pytest.raises(OutputUnavailableError) as raised,
        fetcher_.open("https://v3.fal.media/files/gone.png"),
    ):
        pass
    assert raised.value.status == 404


def test_files_on_a_shared_host_are_never_sent_for_signing() -> None:
    cdn, signed = PrivateCdn(403), []
    url = "https://storage.googleapis.com/falserverless/example_outputs/a.png"

    with pytest.raises(OutputUnavailableError), signing_fetcher(cdn, signed, MediaPolicy()).open(url):
        pass
    assert signed == []


def test_a_signer_that_points_elsewhere_is_refused() -> None:
    cdn = PrivateCdn(403)
    evil = MediaFetcher(
        POLICY,
        httpx.Client(transport=httpx.MockTransport(cdn)),
        resolve,
        signer=lambda url: "https://v3b.fal.media/files/other.png?identity=sig-1",
    )
    with pytest.raises(OutputRefusedError, match="another host"), evil.open("https://v3.fal.media/a.png"):
        pass


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (FalServerError("busy", status=503, retryable=True), MediaTransientError),
        (FalAuthError("key lacks assets:read", status=403), MediaTransientError),
        (FalNotFoundError("File not found", status=404), OutputUnavailableError),
    ],
)
def test_signing_failures_are_transient_or_permanent_like_fals_answer(
    error: Exception, raised: type[Exception]
) -> None:
    cdn = PrivateCdn(403)

    def sign(url: str) -> str:
        raise error

    failing = MediaFetcher(POLICY, httpx.Client(transport=httpx.MockTransport(cdn)), resolve, signer=sign)
    with pytest.raises(raised), failing.open("https://v3.fal.media/a.png"):
        pass
