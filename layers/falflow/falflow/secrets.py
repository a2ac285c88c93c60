"""fal keys, read from Secrets Manager through Powertools' cache; never logged, never in env vars.

`FalKeys` is built once per cold start from the function's `SecretIds` and handed to the fal
clients as their key source (``keys.api_key``, ``keys.admin_key``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_lambda_powertools.utilities import parameters

from falflow.settings import SecretIds


class MissingSecretError(RuntimeError):
    """The secret is not configured or holds no usable key."""


@dataclass(frozen=True)
class FalKeys:
    """The fal keys the function's `SecretIds` name, each read when a fal call needs it."""

    ids: SecretIds

    @property
    def has_admin_key(self) -> bool:
        return bool(self.ids.fal_admin_key_secret_id)

    def api_key(self) -> str:
        return self._read(self.ids.fal_key_secret_id, "API")

    def admin_key(self) -> str:
        return self._read(self.ids.fal_admin_key_secret_id, "ADMIN")

    def _read(self, secret_id: str, what: str) -> str:
        if not secret_id:
            raise MissingSecretError(f"no Secrets Manager id configured for the fal {what} key")
        # Cached on purpose: a warm container reads Secrets Manager once per TTL, sees a rotation after.
        raw = parameters.get_secret(secret_id, max_age=self.ids.secret_cache_seconds)
        return key_from_secret(raw, secret_id, what)


def key_from_secret(raw: str | bytes, secret_id: str, what: str) -> str:
    """The fal key in a secret's value (also used by the operator CLI, which reads secrets itself)."""
    value = raw.decode() if isinstance(raw, bytes) else str(raw)
    # Accept a bare key, or a JSON object as the console's key/value editor writes it.
    if value.lstrip().startswith("{"):
        data = json.loads(value)
        value = str(data.get("FAL_KEY") or data.get("key") or "")
    value = value.strip()
    if not value:
        raise MissingSecretError(f"the fal {what} key secret {secret_id!r} is empty")
    return value
