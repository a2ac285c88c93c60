"""The store's download transport (falflow/store/transport.py) against a real HTTP server on
loopback: the body arrives whole in large blocks, the request goes out as MediaFetcher built it
(pinned address, Host header, identity encoding), nothing is followed, and every broken
connection is an httpx transport error, which MediaFetcher turns into a transient failure."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from falflow.fal.http import tls_context
from falflow.store.media import MediaFetcher, MediaPolicy, MediaTransientError
from falflow.store.transport import BLOCK_BYTES, BlockReadTransport

BODY = bytes(range(256)) * (3 * BLOCK_BYTES // 256 + 7)  # three blocks and a bit


class _Cdn(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Cdn.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "/file.mp4")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        if self.path.startswith("/truncated"):
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cdn() -> Iterator[str]:
    _Cdn.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Cdn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fetcher(origin: str) -> MediaFetcher:
    # The fetcher's own default client, with this transport: what the store function builds.
    return MediaFetcher(MediaPolicy.build(["*.fal.media"], [origin], 2**30))


def test_a_download_arrives_whole_in_blocks_as_the_fetcher_asked_for_it(cdn: str) -> None:
    with _fetcher(cdn).open(f"{cdn}/file.mp4?token=abc") as response:
        blocks = list(response.iter_bytes())

    assert b"".join(blocks) == BODY
    assert [len(b) for b in blocks[:3]] == [BLOCK_BYTES] * 3
    assert (response.content_type, response.content_length) == ("video/mp4", len(BODY))
    (request,) = _Cdn.seen
    assert request["path"] == "/file.mp4?token=abc"
    assert request["host"] == cdn.removeprefix("http://")
    assert request["accept-encoding"] == "identity"


def test_a_redirect_is_handed_back_not_followed(cdn: str) -> None:
    client = httpx.Client(transport=BlockReadTransport(tls_context()), follow_redirects=False)
    with client.stream("GET", f"{cdn}/moved") as response:
        assert response.status_code == 302
        assert response.headers["location"] == "/file.mp4"
    assert [r["path"] for r in _Cdn.seen] == ["/moved"]


def test_a_body_cut_short_is_a_transient_failure(cdn: str) -> None:
    with (
        pytest.raises(MediaTransientError, match="download broke off"),
        _fetcher(cdn).open(f"{cdn}/truncated.mp4") as response,
    ):
        b"".join(response.iter_bytes())


def test_a_refused_connection_is_a_transient_failure() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{unused.getsockname()[1]}"  # bound, not listening
        with (
            pytest.raises(MediaTransientError, match="cannot download"),
            _fetcher(origin).open(f"{origin}/x.mp4"),
        ):
            pass
