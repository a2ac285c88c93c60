"""CDN file access control, as fal's Platform OpenAPI describes it (docs/fal-contract.md §4).

A file's ACL is a default decision (``allow``, ``forbid``: the file answers 403, ``hide``: it
answers as if missing) plus per-user rules; rules naming unknown users are dropped. New files take
the request's ``initial_acl`` (``X-Fal-Object-Lifecycle-Preference``), else the account's
(``PUT /v1/storage/settings``), else public. ``POST /v1/storage/files/sign`` mints a URL that reads
a file whatever its ACL, for at most 7 days. An anonymous download matches no rule.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Decision = Literal["allow", "forbid", "hide"]
FileKey = tuple[str, str]  # (file id, name) of a CDN URL .../files/{file id}/{name}
MAX_SIGNATURE_S = 7 * 86400
SIGNATURE_PARAMETER = "identity"  # fal's signed URLs carry ?identity=... (OpenAPI example)


class AclRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1)
    decision: Decision


class Acl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: Decision
    rules: list[AclRule] = Field(default_factory=list)


class StorageSettingsBody(BaseModel):
    """``PUT /v1/storage/settings``: omitted or null fields reset to the system default."""

    model_config = ConfigDict(extra="forbid")
    expiration_duration_seconds: int | None = Field(default=None, ge=1)
    initial_acl: Acl | None = None


class SignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    expiration_seconds: int = Field(ge=1, le=MAX_SIGNATURE_S)


class Lifecycle(BaseModel):
    """The ``X-Fal-Object-Lifecycle-Preference`` header of one request (fal's Python client
    builds it as ``{"expiration_duration_seconds": N, "initial_acl": {"default", "rules"}}``)."""

    model_config = ConfigDict(extra="ignore")
    expiration_duration_seconds: int | None = Field(default=None, ge=1)
    initial_acl: Acl | None = None

    @classmethod
    def from_header(cls, value: str | None) -> Lifecycle | None:
        """None without the header; ``ValueError`` for one that is not this JSON."""
        if value is None:
            return None
        try:
            return cls.model_validate(json.loads(value))
        except (ValueError, ValidationError) as exc:
            raise ValueError(f"X-Fal-Object-Lifecycle-Preference is not valid: {exc}") from None


@dataclass(frozen=True)
class FileAccess:
    """What a new file is given: its ACL and when it expires (None: never)."""

    acl: Acl
    expires_at: float | None = None


PUBLIC = Acl(default="allow")


@dataclass
class AccountStorage:
    """The account's storage settings, the ACLs of its files and the signatures it minted."""

    known_users: frozenset[str]
    settings: StorageSettingsBody = field(default_factory=StorageSettingsBody)
    files: dict[FileKey, FileAccess] = field(default_factory=dict)
    _signatures: dict[str, tuple[FileKey, float]] = field(default_factory=dict)

    def applied(self, acl: Acl) -> Acl:
        """The ACL as fal keeps it: rules for users it does not know are dropped."""
        return Acl(default=acl.default, rules=[r for r in acl.rules if r.user in self.known_users])

    def save_settings(self, body: StorageSettingsBody) -> StorageSettingsBody:
        acl = self.applied(body.initial_acl) if body.initial_acl is not None else None
        self.settings = StorageSettingsBody(
            expiration_duration_seconds=body.expiration_duration_seconds, initial_acl=acl
        )
        return self.settings

    def for_new_file(self, lifecycle: Lifecycle | None) -> Lifecycle:
        """What a file created now gets: the request's preference where it gives one, else the
        account's settings (as they are now: later changes apply to later files only)."""
        acl = (lifecycle.initial_acl if lifecycle else None) or self.settings.initial_acl or PUBLIC
        seconds = (
            lifecycle.expiration_duration_seconds if lifecycle else None
        ) or self.settings.expiration_duration_seconds
        return Lifecycle(initial_acl=self.applied(acl), expiration_duration_seconds=seconds)

    def register(self, key: FileKey, resolved: Lifecycle, created_at: float) -> None:
        seconds = resolved.expiration_duration_seconds
        self.files[key] = FileAccess(
            acl=resolved.initial_acl or PUBLIC, expires_at=created_at + seconds if seconds else None
        )

    def access(self, key: FileKey) -> FileAccess:
        return self.files.get(key) or FileAccess(acl=PUBLIC)

    def set_acl(self, key: FileKey, acl: Acl) -> Acl:
        current = self.access(key)
        self.files[key] = FileAccess(acl=self.applied(acl), expires_at=current.expires_at)
        return self.files[key].acl

    def sign(self, key: FileKey, seconds: int) -> str:
        token = secrets.token_urlsafe(24)
        self._signatures[token] = (key, time.time() + seconds)
        return token

    def decide(self, key: FileKey, signature: str | None, now: float) -> Decision | Literal["expired"]:
        """What an anonymous download of ``key`` gets (with ``?identity=`` when signed)."""
        access = self.access(key)
        if access.expires_at is not None and now >= access.expires_at:
            return "expired"
        if signature is not None:
            signed = self._signatures.get(signature)
            if signed is not None and signed[0] == key and now < signed[1]:
                return "allow"
        return access.acl.default

    def clear(self) -> None:
        self.settings = StorageSettingsBody()
        self.files.clear()
        self._signatures.clear()
