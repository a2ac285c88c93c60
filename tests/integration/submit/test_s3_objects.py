"""The S3 adapters of the submit path against moto: versions, missing objects, bounded reads,
SigV4 presigned URLs, the large-input archive."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config

from falflow.aws.clients import aws_client
from falflow.aws.s3 import S3ObjectRef
from falflow.submit.objects import S3InputArchive, S3InputObjects
from falflow_tools.local.resources import ProvisionedStack


def _objects() -> S3InputObjects:
    presigner = boto3.client("s3", config=Config(signature_version="s3v4"))
    return S3InputObjects(aws_client("s3"), presigner)


def test_head_read_and_open_follow_the_version_asked_for(aws: ProvisionedStack) -> None:
    s3, bucket = aws_client("s3"), aws.buckets["InputBucket"]
    v1 = s3.put_object(Bucket=bucket, Key="a/b c.txt", Body=b"first", ContentType="text/plain")["VersionId"]
    s3.put_object(Bucket=bucket, Key="a/b c.txt", Body=b"second version")
    objects = _objects()

    old, latest = S3ObjectRef(bucket, "a/b c.txt", v1), S3ObjectRef(bucket, "a/b c.txt")

    assert objects.head(old) is not None
    assert objects.head(old).size == 5  # type: ignore[union-attr]
    assert objects.head(latest).size == 14  # type: ignore[union-attr]
    assert objects.read(old, max_bytes=100) == b"first"
    assert objects.read(latest, max_bytes=5) == b"second"  # max_bytes + 1: enough to see it is longer
    stream = objects.open(old)
    assert stream is not None
    assert (stream.body.read(), stream.size, stream.content_type) == (b"first", 5, "text/plain")


def test_missing_objects_and_versions_are_none(aws: ProvisionedStack) -> None:
    s3, bucket = aws_client("s3"), aws.buckets["InputBucket"]
    s3.put_object(Bucket=bucket, Key="here.png", Body=b"x")
    objects = _objects()

    for ref in (S3ObjectRef(bucket, "nowhere.png"), S3ObjectRef(bucket, "here.png", "no-such-version")):
        assert objects.head(ref) is None
        assert objects.read(ref, max_bytes=10) is None
        assert objects.open(ref) is None


def test_an_empty_object_reads_as_empty(aws: ProvisionedStack) -> None:
    s3, bucket = aws_client("s3"), aws.buckets["InputBucket"]
    s3.put_object(Bucket=bucket, Key="empty.txt", Body=b"")
    assert _objects().read(S3ObjectRef(bucket, "empty.txt"), max_bytes=10) == b""


def test_presigned_urls_are_sigv4_with_the_expiry_and_version(aws: ProvisionedStack) -> None:
    bucket = aws.buckets["InputBucket"]
    url = _objects().presign_get(S3ObjectRef(bucket, "up/a b+c.png", "v7"), expires_in=21600)

    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["21600"]
    assert query["versionId"] == ["v7"]
    assert "X-Amz-Security-Token" in query  # temporary credentials: the URL dies with them
    assert urlsplit(url).path.endswith("/up/a%20b%2Bc.png")


def test_the_archive_keeps_a_large_input_under_inputs(aws: ProvisionedStack) -> None:
    bucket = aws.buckets["OutputBucket"]
    uri = S3InputArchive(aws_client("s3"), bucket).keep("job-1", {"prompt": "p" * 10})

    assert uri == f"s3://{bucket}/inputs/job-1/input.json"
    stored = aws_client("s3").get_object(Bucket=bucket, Key="inputs/job-1/input.json")
    assert stored["ContentType"] == "application/json"
    assert json.loads(stored["Body"].read()) == {"prompt": "p" * 10}
