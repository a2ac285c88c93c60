"""The reliability tier: one local stack per run, started by the test that runs the workload.

`./scripts/reliability --jobs N [--kills]` sets the size of the run through the environment; CI
runs the defaults (a few hundred jobs, no kills) as part of `./scripts/test`.
"""

from __future__ import annotations

import os

import pytest

from tests.reliability.harness import RunPlan

DEFAULT_JOBS = 200


def run_plan() -> RunPlan:
    return RunPlan(
        jobs=int(os.environ.get("FALFLOW_RELIABILITY_JOBS", DEFAULT_JOBS)),
        kills=os.environ.get("FALFLOW_RELIABILITY_KILLS", "0") == "1",
        seed=int(os.environ.get("FALFLOW_RELIABILITY_SEED", "10")),
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The suite's 300 s ceiling is for one test of the other tiers; a run's time grows with its jobs.
    ceiling = 600 + 3 * run_plan().jobs
    for item in items:
        if item.get_closest_marker("reliability"):
            item.add_marker(pytest.mark.timeout(ceiling))


@pytest.fixture(scope="session")
def plan() -> RunPlan:
    return run_plan()
