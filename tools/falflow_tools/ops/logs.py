"""A function's log lines: the local stack's log files, or a deployed stack's CloudWatch Logs.

Powertools writes one JSON object a line; `readable` turns it into `time LEVEL message key=value`
with the keys an operator looks for, and leaves any other line (a traceback) as it is.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from falflow_tools.ops.target import OpsError, Target
from falflow_tools.template import function_specs

# Keys every line of a function carries: they say nothing about this line.
_ROUTINE_KEYS = {
    "level",
    "message",
    "timestamp",
    "location",
    "service",
    "cold_start",
    "function_name",
    "function_memory_size",
    "function_arn",
    "function_request_id",
    "xray_trace_id",
    "sampling_rate",
    "correlation_id",
}
_FOLLOW_POLL_S = 0.5
_CLOUDWATCH_POLL_S = 2.0


def function_logical_id(name: str) -> str:
    """`submit`, `Submit` or `SubmitFunction` → `SubmitFunction` (the template's logical id)."""
    logical_ids = list(function_specs())
    wanted = name.lower().removesuffix("function")
    for logical in logical_ids:
        if logical.lower().removesuffix("function") == wanted:
            return logical
    short = ", ".join(sorted(logical.removesuffix("Function").lower() for logical in logical_ids))
    raise OpsError(f"no function {name!r}; the template has: {short}")


def readable(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if isinstance(entry, dict) and isinstance(entry.get("_aws"), dict):
        return _metrics_line(entry)
    if not isinstance(entry, dict) or "message" not in entry:
        return line
    extra = " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, default=str)}"
        for key, value in entry.items()
        if key not in _ROUTINE_KEYS
    )
    head = f"{entry.get('timestamp', '')} {entry.get('level', '')!s:<7} {entry['message']}"
    return f"{head}  {extra}" if extra else head


def _metrics_line(entry: dict[str, Any]) -> str:
    """An EMF metrics document as `time METRICS name=value …`."""
    names = [
        str(metric.get("Name"))
        for directive in entry["_aws"].get("CloudWatchMetrics", [])
        for metric in directive.get("Metrics", [])
    ]
    at = entry["_aws"].get("Timestamp")
    when = datetime.fromtimestamp(at / 1000, UTC).isoformat(timespec="milliseconds") if at else ""
    values = " ".join(f"{name}={json.dumps(entry.get(name), default=str)}" for name in names)
    return f"{when} {'METRICS':<7} {values}"


def local_lines(target: Target, function: str, *, lines: int, follow: bool) -> Iterator[str]:
    """The last `lines` lines of the function's log file, then (with `follow`) each new one."""
    if target.log_dir is None:
        raise OpsError(f"{target.name} keeps no log files (it was started without a log folder)")
    path = target.log_dir / f"{function}.log"
    if not path.exists() and not follow:
        raise OpsError(f"{function} has written no log yet ({path})")
    while not path.exists():
        time.sleep(_FOLLOW_POLL_S)
    with path.open(encoding="utf-8", errors="replace") as handle:
        yield from (line.rstrip("\n") for line in deque(handle, maxlen=lines))
        while follow:
            line = handle.readline()
            if line:
                yield line.rstrip("\n")
            else:
                time.sleep(_FOLLOW_POLL_S)


def log_group(target: Target, function: str) -> str:
    """The function's log group on a deployed stack (the template names it after the function)."""
    try:
        resource = target.cloudformation().describe_stack_resource(
            StackName=target.stack_name, LogicalResourceId=function
        )
    except (ClientError, BotoCoreError) as error:
        raise OpsError(f"cannot find {function} in {target.name}: {error}") from error
    return f"/aws/lambda/{resource['StackResourceDetail']['PhysicalResourceId']}"


def cloudwatch_lines(
    target: Target,
    function: str,
    *,
    since: datetime,
    lines: int,
    follow: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """The last `lines` events since `since`, then (with `follow`) new ones as they arrive."""
    group = log_group(target, function)
    start_ms = int(since.timestamp() * 1000)
    seen: dict[str, int] = {}  # event id → timestamp, of the events inside the look-back window
    first = True
    while True:
        events = _events(target, group, start_ms)
        fresh = [event for event in events if event["eventId"] not in seen]
        for event in fresh[-lines:] if first else fresh:
            yield str(event["message"]).rstrip("\n")
        seen.update((event["eventId"], int(event["timestamp"])) for event in fresh)
        if events:
            # Events can arrive late with an older timestamp: look back a little, dedupe by id.
            start_ms = max(start_ms, int(events[-1]["timestamp"]) - 60_000)
            seen = {event_id: at for event_id, at in seen.items() if at >= start_ms}
        first = False
        if not follow:
            return
        sleep(_CLOUDWATCH_POLL_S)


def _events(target: Target, group: str, start_ms: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "startTime": start_ms}
    try:
        while True:
            page = target.logs().filter_log_events(**kwargs)
            found.extend(page.get("events", []))
            if not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
    except (ClientError, BotoCoreError) as error:
        raise OpsError(f"cannot read {group}: {error}") from error
    return sorted(found, key=lambda event: (event["timestamp"], event["eventId"]))


def function_lines(target: Target, name: str, *, since: datetime, lines: int, follow: bool) -> Iterator[str]:
    function = function_logical_id(name)
    if target.is_local:
        return local_lines(target, function, lines=lines, follow=follow)
    return cloudwatch_lines(target, function, since=since, lines=lines, follow=follow)
