"""Input objects in S3: the small ports the submit path reads files through, and their adapters.

Presigned URLs are signed with SigV4 (boto3 still signs SigV2 for us-east-1 by default, which
caps nothing and is deprecated). Signing is local: no request reaches S3 until fal fetches.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Protocol, cast

from botocore.exceptions import ClientError

from falflow.aws.s3 import S3ObjectRef

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# S3 answers these when the object or the asked-for version does not exist (HEAD has no body,
# so only the status code comes back; a malformed version id is a 400 InvalidArgument).
_MISSING_CODES: Final = frozenset({"404", "NoSuchKey", "NoSuchVersion", "NotFound", "InvalidArgument"})
ARCHIVE_PREFIX: Final = "inputs/"


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None = None


@dataclass(frozen=True)
class ObjectStream:
    body: BinaryIO
    size: int
    content_type: str | None


class InputObjects(Protocol):
    """Read access to the input files a job names."""

    def head(self, ref: S3ObjectRef) -> ObjectInfo | None:
        """The object's size and type; None when it (or that version) does not exist."""
        ...

    def read(self, ref: S3ObjectRef, *, max_bytes: int) -> bytes | None:
        """Up to ``max_bytes + 1`` bytes of the object (so a caller can tell it is larger); None
        when it does not exist."""
        ...

    def open(self, ref: S3ObjectRef) -> ObjectStream | None:
        """A stream of the whole object; None when it does not exist."""
        ...

    def presign_get(self, ref: S3ObjectRef, *, expires_in: int) -> str: ...


class InputArchive(Protocol):
    """Keeps a job's input when it is too large for the job record."""

    def keep(self, job_id: str, data: Mapping[str, Any]) -> str:
        """Store ``data`` as JSON and return its ``s3://`` URI (idempotent per job id)."""
        ...


def _is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING_CODES


def _version(ref: S3ObjectRef) -> dict[str, Any]:
    return {"VersionId": ref.version_id} if ref.version_id else {}


class S3InputObjects:
    """`InputObjects` on S3. ``presigner`` is a client configured for SigV4 signing."""

    def __init__(self, s3: S3Client, presigner: S3Client) -> None:
        self._s3 = s3
        self._presigner = presigner

    def head(self, ref: S3ObjectRef) -> ObjectInfo | None:
        try:
            response = self._s3.head_object(Bucket=ref.bucket, Key=ref.key, **_version(ref))
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        return ObjectInfo(size=response["ContentLength"], content_type=response.get("ContentType"))

    def read(self, ref: S3ObjectRef, *, max_bytes: int) -> bytes | None:
        try:
            response = self._s3.get_object(
                Bucket=ref.bucket, Key=ref.key, Range=f"bytes=0-{max_bytes}", **_version(ref)
            )
        except ClientError as error:
            if _is_missing(error):
                return None
            if error.response.get("Error", {}).get("Code") == "InvalidRange":  # an empty object
                return b""
            raise
        with response["Body"] as body:
            return body.read()

    def open(self, ref: S3ObjectRef) -> ObjectStream | None:
        try:
            response = self._s3.get_object(Bucket=ref.bucket, Key=ref.key, **_version(ref))
        except ClientError as error:
            if _is_missing(error):
                return None
            raise
        return ObjectStream(
            body=cast("BinaryIO", response["Body"]),
            size=response["ContentLength"],
            content_type=response.get("ContentType"),
        )

    def presign_get(self, ref: S3ObjectRef, *, expires_in: int) -> str:
        return self._presigner.generate_presigned_url(
            "get_object",
            Params={"Bucket": ref.bucket, "Key": ref.key, **_version(ref)},
            ExpiresIn=expires_in,
        )


class S3InputArchive:
    """`InputArchive` under ``inputs/<job_id>/input.json`` of a bucket the submit function may
    write there (the output bucket: writing into the input bucket would notify the intake queue)."""

    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def keep(self, job_id: str, data: Mapping[str, Any]) -> str:
        key = f"{ARCHIVE_PREFIX}{job_id}/input.json"
        self._s3.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=json.dumps(data, separators=(",", ":")).encode(),
            ContentType="application/json",
        )
        return f"s3://{self._bucket}/{key}"
