"""fal keys, read from Secrets Manager through Powertools' cache; never logged, never in env vars."""

from __future__ import annotations

import json

from aws_lambda_powertools.utilities import parameters

from falflow.settings import secret_ids


class MissingSecretError(RuntimeError):
    """The secret is not configured or holds no usable key."""


def _read_key(secret_id: str, what: str) -> str:
    if not secret_id:
        raise MissingSecretError(f"no Secrets Manager id configured for the fal {what} key")
    raw = parameters.get_secret(secret_id, max_age=secret_ids().secret_cache_seconds)
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


def fal_api_key() -> str:
    return _read_key(secret_ids().fal_key_secret_id, "API")


def fal_admin_key() -> str:
    return _read_key(secret_ids().fal_admin_key_secret_id, "ADMIN")
