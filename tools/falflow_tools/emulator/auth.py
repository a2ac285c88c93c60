"""Who is calling, from an ``Authorization`` header: fal keys (``Key id:secret``, API or ADMIN
scope) and the short-lived CDN upload tokens handed out by ``POST /storage/auth/token``."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from falflow_tools.emulator.config import EmulatorConfig
from falflow_tools.emulator.state import KeyKind

CDN_TOKEN_TYPE = "Bearer"  # noqa: S105 - an auth scheme, not a secret  # nosec B105


@dataclass(frozen=True)
class Principal:
    kind: KeyKind
    # The public half of the key ("id" of "id:secret"), as usage records name it.
    key_id: str | None = None

    @property
    def is_key(self) -> bool:
        return self.kind in ("api", "admin")


def _key_id(key: str) -> str:
    return key.split(":", 1)[0]


class Auth:
    def __init__(self, config: EmulatorConfig) -> None:
        self._admin_keys = set(config.admin_keys)
        self._api_keys = set(config.api_keys)
        self._token_ttl_s = config.cdn_token_ttl_s
        self._cdn_tokens: dict[str, float] = {}

    def identify(self, authorization: str | None) -> Principal:
        if not authorization:
            return Principal("none")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() == "key":
            if credential in self._admin_keys:
                return Principal("admin", _key_id(credential))
            if credential in self._api_keys:
                return Principal("api", _key_id(credential))
        elif scheme == CDN_TOKEN_TYPE and self._cdn_tokens.get(credential, 0) > time.time():
            return Principal("cdn_token")
        return Principal("invalid")

    def issue_cdn_token(self) -> tuple[str, float]:
        token = secrets.token_urlsafe(24)
        expires_at = time.time() + self._token_ttl_s
        self._cdn_tokens[token] = expires_at
        return token, expires_at

    def reset(self) -> None:
        self._cdn_tokens.clear()
