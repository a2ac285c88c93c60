"""`falflow local run`: a scheduled function of the running local stack, run now and waited for.

The stack runs it in its own worker (its log file, its environment), through the front door's
control path; nothing runs in the calling process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from falflow_tools.local.front_door import CONTROL_PREFIX
from falflow_tools.local.state import LocalState
from falflow_tools.ops.target import EXIT_UNREACHABLE, OpsError, local_state

SCHEDULED = {"reconcile": "ReconcileFunction", "collect": "CollectFunction"}
# Longer than either function's timeout: the reply comes when the run ends.
_RUN_TIMEOUT_S = 960.0


@dataclass(frozen=True)
class RunResult:
    function: str
    request_id: str
    payload: Any
    error: dict[str, str] | None
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.error is None


def run_scheduled(name: str, state_file: Path | None = None) -> RunResult:
    state: LocalState = local_state(state_file)
    function = SCHEDULED[name]
    url = f"{state.front_door_url}{CONTROL_PREFIX}schedules/{function}/run"
    try:
        reply = httpx.post(url, timeout=_RUN_TIMEOUT_S)
    except httpx.HTTPError as error:
        raise OpsError(f"cannot reach the local stack at {url}: {error}", EXIT_UNREACHABLE) from error
    if reply.status_code != 200:
        raise OpsError(f"the local stack could not run {function}: {reply.status_code} {reply.text}")
    return RunResult(**reply.json())
