"""Where a job comes from, free of any Lambda event shape, and the job id each source maps to:
bucket, key and version (or ETag) for an S3 object, the caller's ``job_id`` for a job message or
document that has one, else a hash of the message's content. Why:
docs/adr/0001-job-ids-are-deterministic-from-the-source.md.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from falflow.aws.s3 import S3ObjectRef

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
