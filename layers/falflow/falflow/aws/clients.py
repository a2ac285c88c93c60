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


class _ContainerClients:
    """``aws_client(service)``: the client of ``service``, built on the container's Session at its
    first use and shared afterwards (boto3 clients are thread-safe). ``aws_client.session()`` is
    that Session, for a client of another configuration; ``aws_client.cache_clear()`` forgets both
    (tests and benchmarks that change the AWS environment)."""

    def __init__(self) -> None:
        self._session: boto3.session.Session | None = None
        self._clients: dict[str, Any] = {}
        # A Session is not thread-safe while it builds clients; a first use may be on a worker thread.
        self._lock = threading.RLock()

    @overload
    def __call__(self, service: Literal["dynamodb"]) -> DynamoDBClient: ...
    @overload
    def __call__(self, service: Literal["s3"]) -> S3Client: ...
    @overload
    def __call__(self, service: Literal["sqs"]) -> SQSClient: ...
    @overload
    def __call__(self, service: Literal["events"]) -> EventBridgeClient: ...
    @overload
    def __call__(self, service: Literal["secretsmanager"]) -> SecretsManagerClient: ...
    def __call__(self, service: str) -> Any:
        client = self._clients.get(service)
        if client is None:
            with self._lock:
                client = self._clients.get(service)
                if client is None:
                    client = self.session().client(service, config=_CONFIG)  # type: ignore[call-overload]
                    self._clients[service] = client
        return client

    def session(self) -> boto3.session.Session:
        with self._lock:
            if self._session is None:
                self._session = boto3.session.Session()
            return self._session

    def cache_clear(self) -> None:
        with self._lock:
            self._session = None
            self._clients.clear()


aws_client = _ContainerClients()
