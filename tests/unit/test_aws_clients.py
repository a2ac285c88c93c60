"""`aws_client`: one boto3 Session per container, each service's client built on first use and
shared; `cache_clear` forgets the Session with its clients (a test that changes the environment)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from falflow.aws.clients import aws_client


@pytest.fixture(autouse=True)
def _fresh_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws_client.cache_clear()


def test_every_client_is_built_on_the_one_session_and_only_once() -> None:
    session = aws_client.session()
    s3, sqs = aws_client("s3"), aws_client("sqs")

    assert aws_client("s3") is s3
    assert aws_client.session() is session
    # Two clients of one Session: they share what it loaded (service models, endpoint rules).
    loader = session._session.get_component("data_loader")
    assert s3._loader is sqs._loader is loader  # type: ignore[attr-defined]


def test_a_client_is_built_once_when_threads_ask_for_it_first_at_the_same_time() -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        clients = list(pool.map(lambda _: aws_client("dynamodb"), range(16)))
    assert len({id(client) for client in clients}) == 1


def test_clearing_forgets_the_session_and_its_clients() -> None:
    session, s3 = aws_client.session(), aws_client("s3")
    aws_client.cache_clear()
    assert aws_client.session() is not session
    assert aws_client("s3") is not s3
