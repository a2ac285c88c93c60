"""The output bucket as the store function sees it; the boto3 adapter is `falflow.aws.outputs` and
unit tests pass in-memory fakes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class MultipartUpload(Protocol):
    def upload_part(self, number: int, data: bytes) -> None:
        """Upload part ``number`` (1-based); thread-safe, parts may arrive out of order."""
        ...

    def complete(self) -> None:
        """Make the object visible; until then nothing of it can be read."""
        ...

    def abort(self) -> None: ...


class StoredObject(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def metadata(self) -> Mapping[str, str]: ...


class OutputBucket(Protocol):
    """The output bucket."""

    @property
    def bucket(self) -> str: ...

    def head(self, key: str) -> StoredObject | None: ...

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str]) -> None: ...

    def start_upload(
        self, key: str, *, content_type: str, metadata: Mapping[str, str]
    ) -> MultipartUpload: ...
