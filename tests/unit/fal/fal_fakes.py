"""Scripted fal replies over httpx.MockTransport: no network, every request recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

Reply = httpx.Response | type[httpx.TransportError] | Callable[[httpx.Request], httpx.Response]

API_KEY = "test-key-id:test-key-secret"


@dataclass
class ScriptedFal:
    """Answers requests with ``replies`` in order (the last one repeats) and records them.

    A reply is a response, an httpx transport error class (raised), or a function of the request.
    """

    replies: list[Reply]
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, type):
            raise reply("scripted failure", request=request)
        return reply if isinstance(reply, httpx.Response) else reply(request)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))


@dataclass
class Sleeps:
    """Records the backoff delays instead of sleeping."""

    delays: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
