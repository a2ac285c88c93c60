"""fal endpoint ids and the URL paths they map to (docs/fal-contract.md §2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Ids under these namespaces carry one extra leading segment, kept as a URL prefix.
NAMESPACES = frozenset({"workflows", "comfy"})
_LEGACY_ID = re.compile(r"(?P<owner>[0-9]+)-(?P<alias>[A-Za-z0-9-]+)")
# A path segment: URL-unreserved characters only, so it needs no escaping and cannot change the
# URL's meaning; "." and ".." are excluded separately because they would walk the path.
_SEGMENT = re.compile(r"[A-Za-z0-9_.~-]+")
_DOT_SEGMENTS = frozenset({".", ".."})


@dataclass(frozen=True, slots=True)
class EndpointId:
    """A parsed endpoint id such as ``fal-ai/flux/dev`` (owner ``fal-ai``, alias ``flux``, path ``dev``)."""

    owner: str
    alias: str
    path: str | None = None
    namespace: str | None = None

    @classmethod
    def parse(cls, endpoint_id: str) -> EndpointId:
        """Split an id the way fal's clients do; raise ValueError for anything else."""
        parts = endpoint_id.split("/")
        if len(parts) == 1:
            legacy = _LEGACY_ID.fullmatch(endpoint_id)
            if legacy is None:
                raise ValueError(
                    f"invalid fal endpoint id {endpoint_id!r}: expected <owner>/<alias>[/<path>] "
                    "(or the legacy <number>-<alias>)"
                )
            return cls(owner=legacy["owner"], alias=legacy["alias"])

        namespace = parts[0] if parts[0] in NAMESPACES else None
        rest = parts[1:] if namespace else parts
        if len(rest) < 2:
            raise ValueError(
                f"invalid fal endpoint id {endpoint_id!r}: namespace {namespace!r} must be followed "
                "by <owner>/<alias>"
            )
        bad = [s for s in rest if not _SEGMENT.fullmatch(s) or s in _DOT_SEGMENTS]
        if bad:
            raise ValueError(
                f"invalid fal endpoint id {endpoint_id!r}: segment {bad[0]!r} is empty or has "
                "characters not allowed in an endpoint id"
            )
        return cls(owner=rest[0], alias=rest[1], path="/".join(rest[2:]) or None, namespace=namespace)

    @classmethod
    def of(cls, endpoint_id: str | EndpointId) -> EndpointId:
        """Accept either form at API boundaries."""
        return endpoint_id if isinstance(endpoint_id, EndpointId) else cls.parse(endpoint_id)

    @property
    def app_path(self) -> str:
        """``[namespace/]owner/alias``: the prefix of the status, result and cancel URLs."""
        return "/".join(p for p in (self.namespace, self.owner, self.alias) if p)

    @property
    def submit_path(self) -> str:
        """The full id as a URL path: what a submit POSTs to."""
        return f"{self.app_path}/{self.path}" if self.path else self.app_path

    def __str__(self) -> str:
        return self.submit_path
