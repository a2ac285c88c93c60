"""S3 adapters of a batch: the manifest read as a stream from any offset (its version pinned), and
the results written to the output bucket."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Final, Protocol

from botocore.exceptions import ClientError

from falflow.aws.s3 import S3ObjectRef

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_CHUNK_BYTES: Final = 256 * 1024


class ManifestObjects(Protocol):
    def pin(self, ref: S3ObjectRef) -> tuple[S3ObjectRef, str | None, int]:
        """The object's current version (its ref with the version id), ETag and size."""
        ...

    def read(self, ref: S3ObjectRef, start: int = 0) -> Iterable[bytes]:
        """The object's bytes from offset `start`, as a stream of chunks."""
        ...


class S3Manifests:
    def __init__(self, s3: S3Client) -> None:
        self._s3 = s3

    def pin(self, ref: S3ObjectRef) -> tuple[S3ObjectRef, str | None, int]:
        kwargs = {"VersionId": ref.version_id} if ref.version_id else {}
        head = self._s3.head_object(Bucket=ref.bucket, Key=ref.key, **kwargs)  # type: ignore[arg-type]
        found = ref.version_id or head.get("VersionId")
        version = None if found in (None, "null") else found
        pinned = S3ObjectRef(bucket=ref.bucket, key=ref.key, version_id=version)
        return pinned, head.get("ETag"), int(head.get("ContentLength", 0))

    def read(self, ref: S3ObjectRef, start: int = 0) -> Iterator[bytes]:
        kwargs: dict[str, str] = {}
        if ref.version_id:
            kwargs["VersionId"] = ref.version_id
        if start:
            kwargs["Range"] = f"bytes={start}-"
        try:
            response = self._s3.get_object(Bucket=ref.bucket, Key=ref.key, **kwargs)  # type: ignore[arg-type]
        except ClientError as error:
            if start and error.response.get("Error", {}).get("Code") == "InvalidRange":
                return  # the offset is the object's end: nothing after it
            raise
        body = response["Body"]
        try:
            yield from body.iter_chunks(_CHUNK_BYTES)
        finally:
            body.close()


class S3ResultObjects:
    def __init__(self, s3: S3Client, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    def put(self, key: str, body: IO[bytes], content_type: str) -> None:
        # upload_fileobj: a multipart upload past its threshold, so no file is whole in memory.
        self._s3.upload_fileobj(body, self._bucket, key, ExtraArgs={"ContentType": content_type})
