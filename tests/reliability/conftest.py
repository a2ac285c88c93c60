"""The reliability tier: one local stack per run, started by the test that runs the workload.

`./scripts/reliability --jobs N [--kills]` sets the size of the run through the environment; CI
runs the defaults (a few hundred jobs, no kills) as part of `./scripts/test`.
"""

from __future__ import annotations

import os

import pytest

from tests.reliability.harness import RunPlan

DEFAULT_JOBS = 200


@pytest.fixture(scope="session")
def plan() -> RunPlan:
    return RunPlan(
        jobs=int(os.environ.get("FALFLOW_RELIABILITY_JOBS", DEFAULT_JOBS)),
        kills=os.environ.get("FALFLOW_RELIABILITY_KILLS", "0") == "1",
        seed=int(os.environ.get("FALFLOW_RELIABILITY_SEED", "10")),
    )
