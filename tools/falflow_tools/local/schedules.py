"""The template's `ScheduleV2` events, run locally: invoke a function every so often.

EventBridge Scheduler invokes its Lambda target with the schedule's `Input`, or without one with
its default notification (a "Scheduled Event" from `aws.scheduler`, as in events/*/schedule.json).
Locally the interval comes from the `rate(...)` expression unless the stack shortens it (the demo
and the tests do not wait five minutes for a reconcile).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from falflow_tools.local.workers import InvocationResult

log = logging.getLogger("falflow.local")

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> float | None:
    """Seconds between runs of a `rate(...)` expression; None for cron and one-off schedules."""
    found = _RATE.match(expression.strip())
    if not found:
        return None
    return int(found.group(1)) * _UNIT_SECONDS[found.group(2).rstrip("s")]


@dataclass(frozen=True)
class ScheduleSpec:
    function: str
    name: str  # as SAM names the schedule: <function logical id><event name>
    expression: str
    input: Any = None  # the schedule's Input; None: Scheduler's default notification
    region: str = "us-east-1"
    account: str = "123456789012"
    stack: str = "falflow"

    @classmethod
    def from_event(
        cls, function: str, event_name: str, properties: Mapping[str, Any], **where: str
    ) -> ScheduleSpec:
        raw = properties.get("Input")
        return cls(
            function=function,
            name=f"{function}{event_name}",
            expression=str(properties.get("ScheduleExpression", "")),
            input=json.loads(raw) if raw else None,
            **where,
        )

    def event(self, now: datetime | None = None) -> Any:
        """What one run of the schedule delivers to the function."""
        if self.input is not None:
            return self.input
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.scheduler",
            "account": self.account,
            "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [
                f"arn:aws:scheduler:{self.region}:{self.account}:schedule/default/{self.stack}-{self.name}"
            ],
            "detail": {},
        }


class ScheduleRunner:
    """Runs one schedule on its own thread until stopped; `run_now` is for tests and the demo."""

    def __init__(
        self,
        spec: ScheduleSpec,
        invoke: Callable[[Any], InvocationResult],
        *,
        interval_s: float | None,
        first_run_after_s: float | None = None,
    ) -> None:
        self.spec = spec
        self._invoke = invoke
        self.interval_s = interval_s
        self._first_after = interval_s if first_run_after_s is None else first_run_after_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_lock = threading.Lock()
        self.runs = 0
        self.last_result: InvocationResult | None = None

    def start(self) -> None:
        if self.interval_s is None or self.interval_s <= 0:
            log.info("schedule %s of %s is off", self.spec.name, self.spec.function)
            return
        self._thread = threading.Thread(target=self._loop, name=f"schedule-{self.spec.function}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        wait = self._first_after or 0.0
        while not self._stop.wait(wait):
            self.run_now()
            wait = self.interval_s or 0.0

    def run_now(self) -> InvocationResult:
        # One run at a time, like a schedule whose previous invocation is still running locally.
        with self._run_lock:
            result = self._invoke(self.spec.event())
            self.runs += 1
            self.last_result = result
        if not result.ok and result.error:
            log.warning(
                "%s (%s) failed: %s: %s",
                self.spec.function,
                self.spec.name,
                result.error["errorType"],
                result.error["errorMessage"],
            )
        return result
