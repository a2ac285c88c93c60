"""bench/submit_batch.py keeps working: its measurement at a small scale, against the test stack.

Not a timed assertion — the ratio is the benchmark's to judge (``python bench/submit_batch.py``).
"""

from __future__ import annotations

import os
from unittest import mock

from bench.services import RemoteFal, slow_fal
from bench.submit_batch import run
from falflow_tools.local.resources import ProvisionedStack


def test_the_benchmark_measures_a_batch_and_a_loop_and_submits_every_job_once(
    moto_server: ProvisionedStack,
) -> None:
    with mock.patch.dict(os.environ), slow_fal(0.02) as emulator:
        fal = RemoteFal(emulator.urls, emulator.control, emulator.api_key)
        result = run(jobs=3, latency_s=0.02, repeat=2, stack=moto_server, fal=fal)

    assert result.all_submitted_once
    assert (result.submitted, result.batch_fal_submits) == (6, 6)
    assert result.batch_s > 0
    assert result.sequential_s > 0
