"""An httpx transport for output downloads that reads the body in large blocks.

httpx's own transport (httpcore and h11) reads a response 64 KiB at a time and passes every
piece through several layers of Python, ~16,000 times per GiB; with multipart parts going up on
other threads at the same time, that per-piece work is what held the copy to about half of
boto3's speed. This transport sends the one GET with the standard library's ``http.client`` and
hands the body on in ``BLOCK_BYTES`` reads (a buffered socket filling each block in a few large
``recv_into`` calls), and httpx still does the rest (status, headers, decoding, errors).

It keeps what `falflow.store.media` asks of a request: the connection goes to the URL's host
(the address the policy checked), TLS names the server by the ``sni_hostname`` extension and
verifies its certificate for that name, and nothing is followed or retried here. One connection
per download, closed with the response. Why: docs/adr/0009-outputs-are-streamed-with-bounded-memory.md.
"""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator

import httpx

BLOCK_BYTES = 2**20


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TCP to the checked address, TLS for the host's name (SNI and certificate check)."""

    def __init__(
        self, address: str, port: int, *, server_name: str, context: ssl.SSLContext, timeout: float | None
    ) -> None:
        super().__init__(address, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class _Body(httpx.SyncByteStream):
    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        self._connection = connection
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        try:
            while block := self._response.read(BLOCK_BYTES):
                yield block
            # http.client's read(amt) ends quietly when the connection closes early.
            if self._response.length:
                raise http.client.IncompleteRead(b"", self._response.length)
        except TimeoutError as error:
            raise httpx.ReadTimeout(str(error)) from error
        except (OSError, http.client.HTTPException) as error:
            raise httpx.ReadError(f"{type(error).__name__}: {error}") from error

    def close(self) -> None:
        self._response.close()
        self._connection.close()


class BlockReadTransport(httpx.BaseTransport):
    def __init__(self, tls: ssl.SSLContext) -> None:
        self._tls = tls

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        timeouts = request.extensions.get("timeout", {})
        connect_timeout, read_timeout = timeouts.get("connect"), timeouts.get("read")
        port = url.port or (443 if url.scheme == "https" else 80)
        connection: http.client.HTTPConnection
        if url.scheme == "https":
            server_name = request.extensions.get("sni_hostname") or url.host
            connection = _PinnedHTTPSConnection(
                url.host, port, server_name=server_name, context=self._tls, timeout=connect_timeout
            )
        else:
            connection = http.client.HTTPConnection(url.host, port, timeout=connect_timeout)
        try:
            connection.connect()
        except TimeoutError as error:
            connection.close()
            raise httpx.ConnectTimeout(str(error)) from error
        except OSError as error:
            connection.close()
            raise httpx.ConnectError(f"{type(error).__name__}: {error}") from error
        try:
            if connection.sock is not None:
                connection.sock.settimeout(read_timeout)
            target = url.raw_path.decode("ascii")
            connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers.multi_items():
                connection.putheader(name, value)
            connection.endheaders()
            response = connection.getresponse()
        except TimeoutError as error:
            connection.close()
            raise httpx.ReadTimeout(str(error)) from error
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            raise httpx.ReadError(f"{type(error).__name__}: {error}") from error
        return httpx.Response(
            response.status,
            headers=response.getheaders(),
            stream=_Body(connection, response),
            extensions={"http_version": b"HTTP/1.1"},
        )
