"""boto3 clients, created once per container and shared by every adapter.

boto3 honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>), so the same code talks to AWS or
to moto's server on loopback.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, Literal, overload

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sqs import SQSClient

# Adaptive retries absorb AWS throttling with backoff and jitter before a record is failed.
_CONFIG = Config(retries={"mode": "adaptive", "max_attempts": 6}, connect_timeout=5, read_timeout=30)


@overload
def aws_client(service: Literal["dynamodb"]) -> DynamoDBClient: ...
@overload
def aws_client(service: Literal["s3"]) -> S3Client: ...
@overload
def aws_client(service: Literal["sqs"]) -> SQSClient: ...
@overload
def aws_client(service: Literal["events"]) -> EventBridgeClient: ...
@overload
def aws_client(service: Literal["secretsmanager"]) -> SecretsManagerClient: ...
# Cached on purpose: boto3 clients are costly to build and thread-safe, so one per service serves all.
@cache
def aws_client(service: str) -> Any:
    return boto3.session.Session().client(service, config=_CONFIG)  # type: ignore[call-overload]
