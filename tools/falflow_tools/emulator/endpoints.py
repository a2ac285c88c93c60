"""fal endpoint ids and the queue URL paths built from them (docs/fal-contract.md §2).

An endpoint id splits on ``/`` into owner, alias and an optional subpath; the ``workflows`` and
``comfy`` namespaces shift that by one segment and stay as a URL prefix; a legacy ``123-myapp``
means ``123/myapp``. Submit uses the full id; status, result and cancel use the app only
(``[namespace/]owner/alias/requests/{id}...``), so a subpath there is not found.

Deliberately independent of ``falflow.fal.endpoints``: the emulator plays fal's side, and sharing
the client's parser would make a bug in it agree with itself instead of failing a test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

NAMESPACES = ("workflows", "comfy")
_LEGACY_ID = re.compile(r"^([0-9]+)-([a-zA-Z0-9-]+)$")

RequestAction = Literal["result", "status", "stream", "cancel"]
_ACTIONS: dict[tuple[str, ...], RequestAction] = {
    (): "result",
    ("status",): "status",
    ("status", "stream"): "stream",
    ("cancel",): "cancel",
}


@dataclass(frozen=True)
class EndpointId:
    owner: str
    alias: str
    path: str | None = None
    namespace: str | None = None

    @classmethod
    def parse(cls, endpoint_id: str) -> EndpointId:
        parts = endpoint_id.strip("/").split("/")
        if len(parts) == 1:
            legacy = _LEGACY_ID.match(parts[0])
            if legacy is None:
                raise ValueError(f"invalid endpoint id: {endpoint_id!r}")
            parts = list(legacy.groups())
        namespace = None
        if parts[0] in NAMESPACES:
            namespace, parts = parts[0], parts[1:]
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"invalid endpoint id: {endpoint_id!r}")
        return cls(owner=parts[0], alias=parts[1], path="/".join(parts[2:]) or None, namespace=namespace)

    @property
    def app(self) -> str:
        """The part of queue URLs that names the app: ``[namespace/]owner/alias``."""
        prefix = f"{self.namespace}/" if self.namespace else ""
        return f"{prefix}{self.owner}/{self.alias}"

    def __str__(self) -> str:
        return f"{self.app}/{self.path}" if self.path else self.app


@dataclass(frozen=True)
class RequestPath:
    """A parsed ``{app}/requests/{request_id}[/status[/stream]|/cancel]`` queue path."""

    app: str
    request_id: str
    action: RequestAction


def parse_request_path(path: str) -> RequestPath | None:
    """Parse a queue path naming a request; None when it is not one (e.g. it has a subpath)."""
    parts = path.strip("/").split("/")
    prefix: list[str] = []
    if parts and parts[0] in NAMESPACES:
        prefix, parts = parts[:1], parts[1:]
    if len(parts) < 4 or parts[2] != "requests" or not all(parts[:4]):
        return None
    action = _ACTIONS.get(tuple(parts[4:]))
    if action is None:
        return None
    return RequestPath(app="/".join([*prefix, parts[0], parts[1]]), request_id=parts[3], action=action)
