"""boto3 adapters of the completion and store ports: S3 (inbox, output bucket) and SQS (outputs queue)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient


def _ascii_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    # S3 user metadata travels as HTTP headers: keep it printable ASCII.
    return {k: v.encode("ascii", "replace").decode() for k, v in metadata.items()}


class S3Inbox:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    def put(self, key: str, body: bytes, metadata: Mapping[str, str]) -> None:
        self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            Metadata=_ascii_metadata(metadata),
        )

    def get(self, key: str) -> bytes:
        return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()


@dataclass(frozen=True)
class HeadResult:
    size: int
    metadata: Mapping[str, str]


@dataclass
class S3MultipartUpload:
    client: S3Client
    bucket: str
    key: str
    upload_id: str
    _parts: dict[int, dict[str, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def upload_part(self, number: int, data: bytes) -> None:
        response = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data
        )
        part: dict[str, Any] = {"PartNumber": number, "ETag": response["ETag"]}
        for checksum in (
            "ChecksumCRC32",
            "ChecksumCRC32C",
            "ChecksumCRC64NVME",
            "ChecksumSHA1",
            "ChecksumSHA256",
        ):
            if checksum in response:
                part[checksum] = response[checksum]
        with self._lock:
            self._parts[number] = part

    def complete(self) -> None:
        parts = [self._parts[n] for n in sorted(self._parts)]
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )

    def abort(self) -> None:
        # Best effort: the bucket's lifecycle rule aborts whatever is left after a day.
        with contextlib.suppress(ClientError):
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


class S3OutputBucket:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @property
    def bucket(self) -> str:
        return self._bucket

    def head(self, key: str) -> HeadResult | None:
        try:
            response = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise
        return HeadResult(size=response["ContentLength"], metadata=response.get("Metadata", {}))

    def put(self, key: str, body: bytes, *, content_type: str, metadata: Mapping[str, str]) -> None:
        self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            Metadata=_ascii_metadata(metadata),
        )

    def start_upload(self, key: str, *, content_type: str, metadata: Mapping[str, str]) -> S3MultipartUpload:
        # CRC32, as boto3's managed transfer asks: botocore already sends each part's CRC32, so S3
        # checks every part and keeps a composite checksum of the object at no extra cost here.
        response = self._client.create_multipart_upload(
            Bucket=self._bucket,
            Key=key,
            ContentType=content_type,
            Metadata=_ascii_metadata(metadata),
            ChecksumAlgorithm="CRC32",
        )
        return S3MultipartUpload(self._client, self._bucket, key, response["UploadId"])


class SqsOutputsQueue:
    def __init__(self, client: SQSClient, queue_url: str) -> None:
        self._client = client
        self._queue_url = queue_url

    def send(self, message: BaseModel) -> None:
        # Any message model: the adapter carries the outputs queue's messages without knowing them.
        self._client.send_message(QueueUrl=self._queue_url, MessageBody=message.model_dump_json())
