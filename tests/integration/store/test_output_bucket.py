"""The output bucket adapter (falflow/aws/outputs.py) against moto: a multipart copy asks S3 for
CRC32, as boto3's managed transfer does, so S3 checks each part and keeps the object's checksum."""

from __future__ import annotations

from falflow.aws.clients import aws_client
from falflow.aws.outputs import S3OutputBucket
from falflow_tools.local.resources import ProvisionedStack

MIB = 2**20


def test_a_multipart_copy_is_stored_with_a_crc32_checksum_of_its_parts(aws: ProvisionedStack) -> None:
    bucket = aws.buckets["OutputBucket"]
    s3 = aws_client("s3")
    upload = S3OutputBucket(s3, bucket).start_upload(
        "outputs/job/video.mp4", content_type="video/mp4", metadata={"job-id": "job"}
    )
    upload.upload_part(1, b"a" * (5 * MIB))
    upload.upload_part(2, b"b" * 1024)
    upload.complete()

    head = s3.head_object(Bucket=bucket, Key="outputs/job/video.mp4", ChecksumMode="ENABLED")
    assert head["ContentLength"] == 5 * MIB + 1024
    # S3 answers a checksum of the parts' checksums (moto leaves out its "-2" and ChecksumType);
    # without an algorithm asked for at the start, the object has none.
    assert head.get("ChecksumCRC32")
