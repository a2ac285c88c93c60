"""bench/webhook_overhead.py and bench/store_copy.py keep working: each measured at a small scale.

No timed assertions — the ratios are the benchmarks' to print. The store's memory bound holds at
any size, so it is asserted here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from unittest import mock

import pytest

from bench import store_copy, webhook_overhead
from falflow_tools.local.handlers import forget_cached_configuration
from falflow_tools.local.resources import ProvisionedStack


@pytest.fixture
def isolated_environment() -> Iterator[None]:
    """The benchmarks set a function's environment as Lambda would; keep it out of other tests."""
    with mock.patch.dict(os.environ):
        yield
    forget_cached_configuration()


def test_the_webhook_benchmark_measures_both_sides_and_records_every_delivery(
    moto_server: ProvisionedStack, isolated_environment: None
) -> None:
    result = webhook_overhead.run(deliveries=6, warmup=2, stack=moto_server)

    assert result.statuses == {200: 6}
    assert result.recorded == 6
    assert len(result.handler.samples_s) == len(result.floor.samples_s) == 6
    assert result.ratio > 0
    assert "overhead ratio" in result.report()


def test_the_store_copy_benchmark_copies_within_the_memory_bound(isolated_environment: None) -> None:
    # A parent far over the bound: the copy's peak must be its own process's, not inherited.
    ballast = b"x" * (300 * 2**20)
    result = store_copy.run(size_mib=12, part_mib=5, concurrency=2, rounds=1)
    del ballast

    assert result.complete, result.report()
    assert result.within_memory_limit, result.report()
    assert result.ours.peak_rss_mb < store_copy.MEMORY_LIMIT_MB
    assert "throughput ours/baseline" in result.report()
