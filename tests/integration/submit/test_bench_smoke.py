"""bench/submit_batch.py and bench/batch_fanout.py keep working: their measurements at a small
scale, against the test stack.

Not timed assertions — the ratios are the benchmarks' to judge (``python -m bench``).
"""

from __future__ import annotations

import os
from unittest import mock

from bench.batch_fanout import run as fan_out
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


def test_the_fan_out_benchmark_sends_every_good_line_once_on_both_sides(
    moto_server: ProvisionedStack,
) -> None:
    with mock.patch.dict(os.environ), slow_fal(0.0) as emulator:
        fal = RemoteFal(emulator.urls, emulator.control, emulator.api_key)
        result = fan_out(60, chunk_lines=25, stack=moto_server, fal=fal)

    for side in (result.ours, result.ours_small, result.floor):
        assert side.sent_once, side
    assert (result.ours.lines, result.ours.expected, result.ours.steps) == (60, 57, 3)
    assert result.ours_small.lines == 10
    assert result.within_limits
