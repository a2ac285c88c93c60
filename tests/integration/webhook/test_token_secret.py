"""The webhook token secret as the template generates it (moto): read through the secrets cache,
current and previous version, so a rotation keeps the URLs of jobs in flight valid."""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters

from falflow.aws.clients import aws_client
from falflow.secrets import WebhookTokenKeys
from falflow.webhook.token import WebhookTokens
from falflow_tools.local.resources import ProvisionedStack


def test_the_generated_secret_signs_tokens_and_a_rotation_keeps_old_ones_valid(aws: ProvisionedStack) -> None:
    secret_arn = aws.secrets["WebhookTokenSecret"]
    generated = aws_client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    assert len(generated) == 64  # GenerateSecretString's length, no punctuation
    assert generated.isalnum()
    keys = WebhookTokenKeys(secret_arn, cache_seconds=0)  # no caching: see each rotation at once
    tokens = WebhookTokens(keys)

    assert keys.current() == generated.encode()
    assert keys.previous() is None  # never rotated: no AWSPREVIOUS
    issued = tokens.token_for("job-1")

    aws_client("secretsmanager").put_secret_value(SecretId=secret_arn, SecretString="rotated-" + "x" * 56)
    parameters.clear_caches()

    assert keys.current() == b"rotated-" + b"x" * 56
    assert keys.previous() == generated.encode()
    assert tokens.matches("job-1", issued)  # issued before the rotation, still accepted
    assert tokens.token_for("job-1") != issued
    assert tokens.matches("job-1", tokens.token_for("job-1"))
