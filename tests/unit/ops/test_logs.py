"""Log lines for people, and function names as people type them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from falflow_tools.ops.logs import cloudwatch_lines, function_logical_id, readable
from falflow_tools.ops.target import OpsError


def test_a_powertools_line_reads_as_time_level_message_and_its_own_keys() -> None:
    line = json.dumps(
        {
            "level": "WARNING",
            "location": "x:1",
            "message": "record failed",
            "timestamp": "2026-12-01 20:26:47,588+0000",
            "service": "falflow-store",
            "cold_start": True,
            "function_request_id": "r-1",
            "job_id": "msg-1",
            "error": {"type": "ValueError"},
        }
    )

    assert readable(line) == (
        '2026-12-01 20:26:47,588+0000 WARNING record failed  job_id=msg-1 error={"type": "ValueError"}'
    )


def test_other_lines_are_left_as_they_are() -> None:
    assert readable("Traceback (most recent call last):") == "Traceback (most recent call last):"
    assert readable("[1, 2]") == "[1, 2]"


@pytest.mark.parametrize("name", ["submit", "Submit", "SubmitFunction", "submitfunction"])
def test_a_function_is_found_by_its_short_or_logical_name(name: str) -> None:
    assert function_logical_id(name) == "SubmitFunction"


def test_an_unknown_function_names_the_known_ones() -> None:
    with pytest.raises(OpsError, match=r"no function 'billing'.*collect, reconcile, store, submit, webhook"):
        function_logical_id("billing")


class FakeCloudWatch:
    """A log group whose events arrive poll by poll (each poll sees everything so far)."""

    def __init__(self, arrivals: list[list[dict[str, Any]]]) -> None:
        self._arrivals = arrivals
        self.polls = 0
        self.start_times: list[int] = []

    def filter_log_events(self, *, logGroupName: str, startTime: int, **_: Any) -> dict[str, Any]:
        assert logGroupName == "/aws/lambda/prod-Store-1"
        self.start_times.append(startTime)
        visible = [
            e for batch in self._arrivals[: self.polls + 1] for e in batch if e["timestamp"] >= startTime
        ]
        self.polls += 1
        return {"events": visible}


class FakeStack:
    name = "stack prod"
    stack_name = "prod"

    def __init__(self, logs: FakeCloudWatch) -> None:
        self._logs = logs

    def logs(self) -> FakeCloudWatch:
        return self._logs

    def cloudformation(self) -> Any:
        class Resources:
            def describe_stack_resource(self, **_: Any) -> dict[str, Any]:
                return {"StackResourceDetail": {"PhysicalResourceId": "prod-Store-1"}}

        return Resources()


class Stop(Exception):
    pass


def test_following_cloudwatch_prints_each_event_once_also_when_it_arrives_late() -> None:
    def event(n: int, at: int) -> dict[str, Any]:
        return {"eventId": f"e{n}", "timestamp": at, "message": f"line {n}\n"}

    base = 1_800_000_000_000
    logs = FakeCloudWatch(
        [
            [event(1, base), event(2, base + 1000)],
            [event(3, base + 2000)],
            [event(4, base + 1500)],  # arrives late, with an older timestamp
        ]
    )
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise Stop

    following = cloudwatch_lines(
        FakeStack(logs),  # type: ignore[arg-type]
        "StoreFunction",
        since=datetime.fromtimestamp(base / 1000, UTC),
        lines=50,
        follow=True,
        sleep=sleep,
    )
    shown: list[str] = []
    with pytest.raises(Stop):
        shown.extend(following)

    assert shown == ["line 1", "line 2", "line 3", "line 4"]
    assert logs.start_times[0] == base
    assert logs.start_times[-1] == base  # the look-back window never starts before --since


def test_without_follow_only_the_last_lines_are_printed() -> None:
    logs = FakeCloudWatch([[{"eventId": f"e{n}", "timestamp": n, "message": f"line {n}"} for n in range(5)]])

    shown = list(
        cloudwatch_lines(
            FakeStack(logs),  # type: ignore[arg-type]
            "StoreFunction",
            since=datetime.fromtimestamp(0, UTC),
            lines=2,
            follow=False,
        )
    )

    assert shown == ["line 3", "line 4"]
    assert logs.polls == 1


def test_a_metrics_document_reads_as_its_names_and_values() -> None:
    line = json.dumps(
        {
            "_aws": {
                "Timestamp": 1_796_166_650_723,
                "CloudWatchMetrics": [
                    {
                        "Namespace": "falflow",
                        "Metrics": [{"Name": "JobsCompleted"}, {"Name": "OutputBytesStored"}],
                    }
                ],
            },
            "service": "falflow-store",
            "JobsCompleted": [1.0],
            "OutputBytesStored": [441044.0],
        }
    )

    assert (
        readable(line)
        == "2026-12-01T23:10:50.723+00:00 METRICS JobsCompleted=[1.0] OutputBytesStored=[441044.0]"
    )
