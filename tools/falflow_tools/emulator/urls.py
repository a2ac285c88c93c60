"""The emulator's stand-ins for fal's hosts: one port, one path prefix per host; and, where it
listens on a second port, that port as fal's backup origin of the queue and sync hosts
(``queue.falrun.com``, ``falrun.com``: the same paths on another origin)."""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class FalUrls:
    base: str
    backup_base: str | None = None

    @property
    def queue_url(self) -> str:  # https://queue.fal.run
        return f"{self.base}/queue"

    @property
    def run_url(self) -> str:  # https://fal.run
        return f"{self.base}/run"

    @property
    def queue_backup_url(self) -> str:  # https://queue.falrun.com ("" without a backup origin)
        return f"{self.backup_base}/queue" if self.backup_base else ""

    @property
    def run_backup_url(self) -> str:  # https://falrun.com
        return f"{self.backup_base}/run" if self.backup_base else ""

    @property
    def rest_url(self) -> str:  # https://rest.fal.ai
        return f"{self.base}/rest"

    @property
    def cdn_url(self) -> str:  # https://v3.fal.media
        return f"{self.base}/cdn"

    @property
    def api_url(self) -> str:  # https://api.fal.ai/v1
        return f"{self.base}/api/v1"

    @property
    def jwks_url(self) -> str:
        return f"{self.rest_url}/.well-known/jwks.json"

    @property
    def control_url(self) -> str:  # not fal: inspection and fault control
        return f"{self.base}/_emulator"

    def env(self) -> dict[str, str]:
        """Environment that points ``falflow.settings.FalSettings`` (prefix FAL_) at the emulator."""
        return {
            "FAL_QUEUE_URL": self.queue_url,
            "FAL_RUN_URL": self.run_url,
            # Empty without a backup origin: never fall back from the emulator to fal itself.
            "FAL_QUEUE_BACKUP_URL": self.queue_backup_url,
            "FAL_RUN_BACKUP_URL": self.run_backup_url,
            "FAL_REST_URL": self.rest_url,
            "FAL_API_URL": self.api_url,
            "FAL_CDN_URL": self.cdn_url,
            "FAL_JWKS_URLS": json.dumps([self.jwks_url]),
        }
