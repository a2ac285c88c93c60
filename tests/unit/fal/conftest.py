"""Fixtures for the fal client unit tests (fakes live in fal_fakes.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from falflow.fal.http import RetryPolicy
from falflow.settings import FalSettings
from tests.unit.fal.fal_fakes import API_KEY, Sleeps


@pytest.fixture
def settings() -> FalSettings:
    return FalSettings(
        queue_url="https://queue.fal.test",
        run_url="https://fal.test",
        # No backup origins: the retry tests see every failure (test_fal_backup_hosts sets them).
        queue_backup_url="",
        run_backup_url="",
        rest_url="https://rest.fal.test",
        api_url="https://api.fal.test/v1",
        cdn_url="https://v3.fal.test",
        jwks_urls=["https://rest.fal.test/.well-known/jwks.json"],
        max_attempts=4,
        backoff_base_s=0.2,
        backoff_cap_s=5.0,
    )


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def retry(settings: FalSettings, sleeps: Sleeps) -> RetryPolicy:
    # random() at its upper end makes every jittered delay equal to its ceiling, so tests can
    # assert the exponential schedule exactly.
    return RetryPolicy.from_settings(settings, sleep=sleeps, random=lambda: 1.0)


@pytest.fixture
def api_key() -> Callable[[], str]:
    return lambda: API_KEY
