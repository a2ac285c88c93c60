"""The small interfaces the completion hand-off and the finaliser depend on; boto3 adapters live in
`falflow.aws.clients` and unit tests pass in-memory fakes."""

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


class EventPublisher(Protocol):
    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None: ...
