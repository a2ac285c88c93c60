from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from falflow_tools.emulator import RunningEmulator
from tests.integration.emulator.helpers import http_client, key_client


@pytest.fixture
def fal(fal_emulator: RunningEmulator) -> RunningEmulator:
    return fal_emulator


@pytest.fixture
def client(fal: RunningEmulator) -> Iterator[httpx.Client]:
    with key_client(fal) as api:
        yield api


@pytest.fixture
def admin(fal: RunningEmulator) -> Iterator[httpx.Client]:
    with key_client(fal, fal.admin_key) as api:
        yield api


@pytest.fixture
def anonymous() -> Iterator[httpx.Client]:
    """No Authorization header."""
    with http_client() as api:
        yield api
