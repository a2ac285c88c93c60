"""``RunningEmulator.env()`` is exactly what ``falflow.settings.FalSettings`` reads."""

from __future__ import annotations

import pytest

from falflow.settings import FalSettings
from falflow_tools.emulator import RunningEmulator


def test_env_points_fal_settings_at_the_emulator(
    fal: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in fal.env().items():
        monkeypatch.setenv(name, value)

    settings = FalSettings()

    assert (settings.queue_url, settings.run_url, settings.rest_url, settings.api_url, settings.cdn_url) == (
        f"{fal.base_url}/queue",
        f"{fal.base_url}/run",
        f"{fal.base_url}/rest",
        f"{fal.base_url}/api/v1",
        f"{fal.base_url}/cdn",
    )
    assert settings.jwks_urls == [fal.jwks_url] == [f"{fal.base_url}/rest/.well-known/jwks.json"]
