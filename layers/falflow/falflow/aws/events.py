"""EventBridge adapter of the completion path's `EventPublisher`: one event per finished job."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

EVENT_SOURCE = "falflow"


class EventPublishError(RuntimeError):
    pass


class EventBridgePublisher:
    def __init__(self, client: EventBridgeClient, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, detail_type: str, detail: Mapping[str, Any]) -> None:
        response = self._client.put_events(
            Entries=[
                {
                    "Source": EVENT_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, separators=(",", ":"), default=str),
                    "EventBusName": self._bus_name,
                }
            ]
        )
        if response.get("FailedEntryCount"):
            entry = response["Entries"][0]
            raise EventPublishError(
                f"EventBridge refused the event: {entry.get('ErrorCode')} {entry.get('ErrorMessage')}"
            )
