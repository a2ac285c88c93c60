"""Secrets, read from Secrets Manager through Powertools' cache; never logged, never in env vars.

`FalKeys` is built once per cold start from the function's `SecretIds` and handed to the fal
clients as their key source (``keys.api_key``, ``keys.admin_key``). `WebhookTokenKeys` is the stack
secret the per-job webhook tokens are signed with (`falflow.webhook.token`), current and previous.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Final

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from falflow.aws.clients import aws_client
from falflow.settings import SecretIds

CURRENT_STAGE: Final = "AWSCURRENT"
PREVIOUS_STAGE: Final = "AWSPREVIOUS"


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


@dataclass
class WebhookTokenKeys:
    """The webhook-token secret's AWSCURRENT and AWSPREVIOUS versions (`falflow.webhook.token`).

    Both are cached for ``cache_seconds``. Powertools keys its cache by name alone, so the previous
    version has a provider (and cache) of its own; a secret never rotated has no AWSPREVIOUS, and
    that absence is remembered as long, so a flood of wrong tokens is no flood of reads.
    """

    secret_id: str
    cache_seconds: int
    _previous: parameters.SecretsProvider | None = field(default=None, init=False, repr=False)
    _no_previous_until: float = field(default=0.0, init=False, repr=False)

    def current(self) -> bytes:
        raw = parameters.get_secret(self.secret_id, max_age=self.cache_seconds)
        return _key_bytes(raw, self.secret_id)

    def previous(self) -> bytes | None:
        if time.monotonic() < self._no_previous_until:
            return None
        if self._previous is None:
            self._previous = parameters.SecretsProvider(boto3_client=aws_client("secretsmanager"))
        try:
            raw = self._previous.get(self.secret_id, max_age=self.cache_seconds, VersionStage=PREVIOUS_STAGE)
        except GetParameterError as error:
            if not _is_missing_version(error):
                raise
            self._no_previous_until = time.monotonic() + self.cache_seconds
            return None
        return _key_bytes(raw, self.secret_id)


def _key_bytes(raw: object, secret_id: str) -> bytes:
    value = raw if isinstance(raw, bytes) else str(raw or "").encode()
    if not value.strip():
        raise MissingSecretError(f"the webhook token secret {secret_id!r} is empty")
    return value


def _is_missing_version(error: GetParameterError) -> bool:
    # Powertools raises its error while handling boto3's, without `from`: the cause is the context.
    cause = error.__cause__ or error.__context__
    return isinstance(cause, ClientError) and cause.response.get("Error", {}).get("Code") in {
        "ResourceNotFoundException",
        "InvalidRequestException",
    }
