"""boto3 clients, created once per container and shared by every adapter.

One boto3 Session serves the container: a Session caches what botocore loads to build a client
(endpoint rules, service models, credentials), so a client on the shared Session costs a fraction
of one on a new Session (each new Session reloads all of it; four of them cost ~160 ms more at
cold start). A client is built on its first use, so a function pays only for the services it calls.

boto3 honours AWS_ENDPOINT_URL (and AWS_ENDPOINT_URL_<SERVICE>), so the same code talks to AWS or
to moto's server on loopback.
"""

from __future__ import annotations

import threading
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
    # A Session is not thread-safe while it builds clients; the lock covers a first use on a worker thread.
    with _BUILDING:
        return aws_session().client(service, config=_CONFIG)  # type: ignore[call-overload]


@cache
def aws_session() -> boto3.session.Session:
    """The container's one Session; every falflow client is built on it."""
    return boto3.session.Session()


_BUILDING = threading.Lock()


def reset_clients() -> None:
    """Forget the Session and its clients (tests and benchmarks that change the AWS environment)."""
    aws_client.cache_clear()  # type: ignore[attr-defined]  # functools.cache over overloads
    aws_session.cache_clear()
