"""The small interfaces the completion path depends on; boto3 adapters live in ``completion.aws``
and unit tests pass in-memory fakes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from falflow.completion.messages import OutputsMessage


class Inbox(Protocol):
    """Where a completion (fal's raw delivery) is kept durably before the job record points at it."""

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> None: ...

    def get(self, key: str) -> bytes: ...


class OutputsQueue(Protocol):
    """Hands a recorded completion to the store function."""

    def send(self, message: OutputsMessage) -> None: ...


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


class OutputStore(Protocol):
    """The output bucket."""

    @property
    def bucket(self) -> str: ...

    def head(self, key: str) -> StoredObject | None: ...

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str]) -> None: ...

    def start_upload(
        self, key: str, *, content_type: str, metadata: Mapping[str, str]
    ) -> MultipartUpload: ...


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...
