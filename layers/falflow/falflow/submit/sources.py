"""Where a job comes from, free of any Lambda event shape, and the job id each source maps to.

A job id is chosen before fal hears of the job and is deterministic from the source, so every
duplicate delivery lands on the same job record:

- an S3 object (media drop, or job document without its own ``job_id``): bucket, key and version
  id — or the ETag where the bucket has no versions — never the SQS message id, because a
  duplicate S3 notification arrives as a new message;
- a job message or document with ``job_id``: that id, the caller's idempotency key;
- a job message without one: a hash of its content (of the raw body when it is not JSON).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from falflow.submit.request import S3ObjectRef

OBJECT_JOB_PREFIX = "s3-"
MESSAGE_JOB_PREFIX = "msg-"
_HASH_CHARS = 32  # 128 bits


@dataclass(frozen=True)
class ObjectCreated:
    """An S3 ObjectCreated notification (key already URL-decoded)."""

    object: S3ObjectRef
    etag: str | None = None
    size: int | None = None


@dataclass(frozen=True)
class JobMessage:
    """A message sent to the intake queue by another service."""

    body: str
    message_id: str


JobSource = ObjectCreated | JobMessage


def _digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two part lists collide
        hasher.update(part)
    return hasher.hexdigest()[:_HASH_CHARS]


def object_job_id(created: ObjectCreated) -> str:
    ref = created.object
    # "null" is S3's version id of an object written before versioning was enabled.
    version = ref.version_id if ref.version_id not in (None, "null") else None
    etag = (created.etag or "").strip('"')
    identity = f"v:{version}" if version else f"e:{etag}"
    return OBJECT_JOB_PREFIX + _digest(ref.bucket.encode(), ref.key.encode(), identity.encode())


def message_job_id(body: str, parsed: Any = None) -> str:
    """From the JSON content when the body parsed (whitespace and key order do not matter),
    from the raw bytes otherwise."""
    if parsed is not None:
        canonical = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return MESSAGE_JOB_PREFIX + _digest(b"json", canonical.encode())
    return MESSAGE_JOB_PREFIX + _digest(b"raw", body.encode("utf-8", "surrogatepass"))
