"""bench/local_throughput.py keeps working: its measurement at a tiny scale, on the e2e stack.

Not a timed assertion — jobs/s is the benchmark's to report (``python -m bench.local_throughput``).
"""

from __future__ import annotations

import pytest

from bench.local_throughput import measure
from falflow_tools.local.stack import LocalStack

pytestmark = pytest.mark.e2e


def test_the_throughput_benchmark_counts_every_job_of_its_run_until_final(stack: LocalStack) -> None:
    run = measure(stack, jobs=3, workers=1, timeout_s=60)

    assert run.all_completed
    assert run.states == {"COMPLETED": 3}
    assert run.seconds > 0
