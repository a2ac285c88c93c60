"""A tiny Lambda handler for testing the local runtime (workers, SQS polling, the front door).

SQS records carry JSON commands: {"fail": true} is reported in batchItemFailures, {"crash": true}
kills the process, {"sleep": s} waits. Other events are answered with what the function saw.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

COLD_START_PID = os.getpid()
# What the environment held when the module was imported (Powertools reads it at this moment).
ENV_AT_IMPORT = dict(os.environ)


def handler(event: dict[str, Any], context: Any) -> Any:
    if "Records" in event:
        failures = []
        for record in event["Records"]:
            command = json.loads(record["body"])
            if command.get("crash"):
                os._exit(3)
            time.sleep(float(command.get("sleep", 0)))
            if command.get("fail"):
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}
    if event.get("crash"):
        os._exit(3)
    if event.get("raise"):
        raise ValueError(event["raise"])
    time.sleep(float(event.get("sleep", 0)))
    if event.get("unserialisable"):
        return {"not json": {1, 2}}
    if "reply" in event:
        return event["reply"]
    return {
        "pid": os.getpid(),
        "cold_start_pid": COLD_START_PID,
        "env_at_import": ENV_AT_IMPORT,
        "function_name": context.function_name,
        "request_id": context.aws_request_id,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
