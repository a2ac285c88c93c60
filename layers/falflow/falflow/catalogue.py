"""fal's model catalogue as the collect function last saw it, for the submit path to read.

Collect writes a snapshot of ``GET /v1/models`` into the usage table (pk ``CATALOGUE``, one item per
endpoint, then a ``#snapshot`` marker with ``taken_at``). Submit refuses unknown or deprecated models
only once a snapshot is loaded; an unlisted sub-path takes the status of its nearest listed parent
within the same app. Why: docs/adr/0014-submit-reads-the-model-catalogue-collect-keeps.md.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, Protocol

from falflow.fal.endpoints import EndpointId
from falflow.jobs import utcnow

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

CatalogueStatus = Literal["active", "deprecated"]

# Key layout in the usage table; the collect function's writer uses the same names.
CATALOGUE_PK: Final = "CATALOGUE"
# fal's unit prices, one item per endpoint (sk): collect writes them, submit's estimates read them.
PRICE_PK: Final = "PRICE"
SNAPSHOT_SK: Final = "#snapshot"
STATUS_ATTRIBUTE: Final = "status"
TAKEN_AT_ATTRIBUTE: Final = "taken_at"

# Older than this, a snapshot is not trusted to know about new models (collect runs hourly).
DEFAULT_MAX_AGE: Final = timedelta(hours=48)
# How long one container remembers an answer; a snapshot changes at most once per collect run.
DEFAULT_CACHE_TTL: Final = timedelta(minutes=5)


def catalogue_status(fal_status: str | None) -> CatalogueStatus:
    """fal's ``metadata.status`` as the catalogue keeps it: listed and not deprecated is active."""
    return "deprecated" if (fal_status or "").strip().lower() == "deprecated" else "active"


def lookup_ids(endpoint_id: str) -> list[str]:
    """The ids whose catalogue entry decides ``endpoint_id``, most specific first.

    ``fal-ai/flux/dev/image-to-image`` → itself, ``fal-ai/flux/dev``, ``fal-ai/flux``. An id fal's
    clients would not accept gets no candidates (it is unknown).
    """
    try:
        parsed = EndpointId.parse(endpoint_id)
    except ValueError:
        return []
    if parsed.path is None:
        return [endpoint_id]
    segments = parsed.path.split("/")
    parents = [f"{parsed.app_path}/{'/'.join(segments[:n])}" for n in range(len(segments) - 1, 0, -1)]
    return [endpoint_id, *parents, parsed.app_path]


def owner_prefix(endpoint_id: str) -> str | None:
    """``fal-ai/flux/dev`` → ``fal-ai/``; ``workflows/me/flow`` → ``workflows/me/``; None if invalid."""
    try:
        parsed = EndpointId.parse(endpoint_id)
    except ValueError:
        return None
    return f"{parsed.namespace}/{parsed.owner}/" if parsed.namespace else f"{parsed.owner}/"


class ModelCatalogue(Protocol):
    def status(self, endpoint_id: str) -> CatalogueStatus | None:
        """``active`` or ``deprecated``; None when fal's catalogue does not list the model."""
        ...

    def is_loaded(self) -> bool:
        """True when a recent enough snapshot exists to judge models by."""
        ...

    def lists_owner_of(self, endpoint_id: str) -> bool:
        """True when the catalogue lists any model of the same owner (and namespace).

        fal's catalogue lists public models only: an account's private apps are absent from it,
        so a model is "unknown" only where the catalogue knows its owner.
        """
        ...


class DynamoModelCatalogue:
    """`ModelCatalogue` on the usage table, with a short per-container cache."""

    def __init__(
        self,
        client: DynamoDBClient,
        usage_table: str,
        *,
        max_age: timedelta | None = DEFAULT_MAX_AGE,
        cache_ttl: timedelta = DEFAULT_CACHE_TTL,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._client = client
        self._table = usage_table
        self._max_age = max_age
        self._cache_ttl = cache_ttl
        self._clock = clock
        self._entries: dict[str, tuple[datetime, str | None]] = {}
        self._owners: dict[str, tuple[datetime, bool]] = {}

    def snapshot_taken_at(self) -> datetime | None:
        """When the current snapshot was taken; None when none was ever written."""
        raw = self._cached(SNAPSHOT_SK, TAKEN_AT_ATTRIBUTE)
        return datetime.fromisoformat(raw) if raw else None

    def is_loaded(self) -> bool:
        taken_at = self.snapshot_taken_at()
        if taken_at is None:
            return False
        return self._max_age is None or self._clock() - taken_at <= self._max_age

    def status(self, endpoint_id: str) -> CatalogueStatus | None:
        for candidate in lookup_ids(endpoint_id):
            stored = self._cached(candidate, STATUS_ATTRIBUTE)
            if stored is not None:
                return catalogue_status(stored)
        return None

    def lists_owner_of(self, endpoint_id: str) -> bool:
        prefix = owner_prefix(endpoint_id)
        if prefix is None:
            return False
        now = self._clock()
        hit = self._owners.get(prefix)
        if hit is not None and now - hit[0] < self._cache_ttl:
            return hit[1]
        response = self._client.query(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": CATALOGUE_PK}, ":prefix": {"S": prefix}},
            ProjectionExpression="sk",
            Limit=1,
        )
        listed = bool(response.get("Items"))
        self._owners[prefix] = (now, listed)
        return listed

    def _cached(self, sort_key: str, attribute: str) -> str | None:
        now = self._clock()
        hit = self._entries.get(sort_key)
        if hit is not None and now - hit[0] < self._cache_ttl:
            return hit[1]
        response = self._client.get_item(
            TableName=self._table,
            Key={"pk": {"S": CATALOGUE_PK}, "sk": {"S": sort_key}},
            ProjectionExpression="#a",
            ExpressionAttributeNames={"#a": attribute},
        )
        value = response.get("Item", {}).get(attribute, {}).get("S")
        self._entries[sort_key] = (now, value)
        return value
