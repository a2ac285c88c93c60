"""The reliability and security contracts of the design, read off template.yaml."""

from __future__ import annotations

from typing import Any

import pytest

from falflow.jobs.store import REQUEST_CLAIM_PREFIX
from falflow_tools.template import condition_branches, function_specs, load_template, resources_of_type

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
FUNCTIONS = function_specs(TEMPLATE)


def _logical(ref: Any) -> str:
    """The logical id behind a !Ref or !GetAtt."""
    if isinstance(ref, dict) and "Ref" in ref:
        return str(ref["Ref"])
    if isinstance(ref, dict) and "Fn::GetAtt" in ref:
        return str(ref["Fn::GetAtt"][0])
    raise AssertionError(f"not a reference: {ref!r}")


SQS_SOURCES = [
    (logical, name, event["Properties"])
    for logical, spec in FUNCTIONS.items()
    for name, event in spec.events.items()
    if event["Type"] == "SQS"
]


def test_every_function_is_a_thin_python313_arm64_handler() -> None:
    globals_ = TEMPLATE["Globals"]["Function"]
    assert globals_["Runtime"] == "python3.13"
    assert globals_["Architectures"] == ["arm64"]
    assert globals_["Tracing"] == "Active"
    for spec in FUNCTIONS.values():
        assert (spec.code_dir / "app.py").is_file(), spec.logical_id
        assert spec.handler == "app.handler"


@pytest.mark.parametrize(("function", "event", "props"), SQS_SOURCES, ids=[s[0] for s in SQS_SOURCES])
def test_sqs_sources_retry_safely_and_dead_letter(function: str, event: str, props: dict[str, Any]) -> None:
    assert props.get("FunctionResponseTypes") == ["ReportBatchItemFailures"]
    queue = RESOURCES[_logical(props["Queue"])]["Properties"]
    # AWS: visibility timeout at least six times the consumer's timeout.
    assert queue["VisibilityTimeout"] >= 6 * FUNCTIONS[function].timeout
    redrive = queue["RedrivePolicy"]
    assert redrive["maxReceiveCount"] >= 5
    dlq = RESOURCES[_logical(redrive["deadLetterTargetArn"])]["Properties"]
    assert dlq["MessageRetentionPeriod"] >= queue["MessageRetentionPeriod"]
    # The function's own dead-lettering (with a reason) agrees with the queue's redrive.
    env = FUNCTIONS[function].environment
    assert int(env["MAX_RECEIVES"]) == redrive["maxReceiveCount"]
    assert _logical(env["DLQ_URL"]) == _logical(redrive["deadLetterTargetArn"])


def test_every_queue_is_encrypted_and_every_dlq_has_an_alarm() -> None:
    queues = resources_of_type(TEMPLATE, "AWS::SQS::Queue")
    dead_letter_queues = {
        _logical(spec["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
        for spec in queues.values()
        if "RedrivePolicy" in spec["Properties"]
    }
    alarmed = {
        _logical(dimension["Value"])
        for spec in resources_of_type(TEMPLATE, "AWS::CloudWatch::Alarm").values()
        for dimension in spec["Properties"].get("Dimensions", [])
        if dimension["Name"] == "QueueName"
    }
    for logical, spec in queues.items():
        assert spec["Properties"].get("SqsManagedSseEnabled") is True, logical
    assert dead_letter_queues <= alarmed


def test_scheduled_functions_have_a_dead_letter_queue() -> None:
    for spec in FUNCTIONS.values():
        for event in spec.events.values():
            if event["Type"] in {"Schedule", "ScheduleV2"}:
                assert "DeadLetterConfig" in event["Properties"], spec.logical_id


def test_buckets_block_public_access_encrypt_and_refuse_plain_http() -> None:
    policies = {
        _logical(spec["Properties"]["Bucket"]): spec["Properties"]["PolicyDocument"]["Statement"]
        for spec in resources_of_type(TEMPLATE, "AWS::S3::BucketPolicy").values()
    }
    for logical, spec in resources_of_type(TEMPLATE, "AWS::S3::Bucket").items():
        props = spec["Properties"]
        assert all(props["PublicAccessBlockConfiguration"].values()), logical
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"], logical
        denies_http = [
            statement
            for statement in policies[logical]
            if statement["Effect"] == "Deny"
            and statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert denies_http, f"{logical} accepts plain HTTP"


def test_tables_are_encrypted_and_recoverable() -> None:
    for logical, spec in resources_of_type(TEMPLATE, "AWS::DynamoDB::Table").items():
        props = spec["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True, logical
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, logical


def test_every_function_has_a_log_group_with_retention() -> None:
    groups = {
        spec["Properties"]["LogGroupName"]["Fn::Sub"]: spec["Properties"]
        for spec in resources_of_type(TEMPLATE, "AWS::Logs::LogGroup").values()
        if "LogGroupName" in spec["Properties"]
    }
    for logical in FUNCTIONS:
        group = groups.get(f"/aws/lambda/${{{logical}}}")
        assert group is not None, f"{logical} has no explicit log group"
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_no_secret_values_in_the_environment() -> None:
    for spec in FUNCTIONS.values():
        for name in spec.environment:
            assert name not in {"FAL_KEY", "FAL_ADMIN_KEY", "FAL_KEY_SECRET"}, name
            if "KEY" in name:
                assert name.endswith("_SECRET_ID"), f"{spec.logical_id}.{name} looks like a secret value"


def _secret_policies(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        found = (
            [node["AWSSecretsManagerGetSecretValuePolicy"]]
            if "AWSSecretsManagerGetSecretValuePolicy" in node
            else []
        )
        return found + [p for value in node.values() for p in _secret_policies(value)]
    if isinstance(node, list):
        return [p for value in node for p in _secret_policies(value)]
    return []


def test_secret_access_is_scoped_to_the_named_secrets() -> None:
    allowed = {
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${FalKeySecretName}-*",
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${FalAdminKeySecretName}-*",
        "WebhookTokenSecret",  # the template's own secret, by its ARN (!Ref)
    }

    def named(arn: Any) -> str:
        return str(arn["Fn::Sub"] if "Fn::Sub" in arn else arn["Ref"])

    granted = {
        logical: {
            named(policy["SecretArn"])
            for policy in _secret_policies(RESOURCES[logical]["Properties"].get("Policies", []))
        }
        for logical in FUNCTIONS
    }
    # The functions with a role of their own (tests/unit/test_iam.py) grant it there.
    for logical in FUNCTIONS:
        role = RESOURCES[logical]["Properties"].get("Role")
        if role is None:
            continue
        for policy in RESOURCES[role["Fn::GetAtt"][0]]["Properties"]["Policies"]:
            for entry in policy["PolicyDocument"]["Statement"]:
                for statement in condition_branches(entry):
                    if statement["Action"] != "secretsmanager:GetSecretValue":
                        continue
                    resources = statement["Resource"]
                    for arn in resources if isinstance(resources, list) else [resources]:
                        granted[logical].add(named(arn))
    assert any(granted.values()), "no function may read the fal key"
    assert set().union(*granted.values()) <= allowed
    # Submit signs webhook tokens and the webhook checks them; no other function may read the key.
    assert {logical for logical, arns in granted.items() if "WebhookTokenSecret" in arns} == {
        "SubmitFunction",
        "WebhookFunction",
    }


@pytest.mark.parametrize("function", ["WebhookFunction", "ReconcileFunction"])
def test_functions_that_bind_fal_requests_may_put_only_request_claims(function: str) -> None:
    policies = load_template()["Resources"][function]["Properties"]["Policies"]
    statements = [s for p in policies if "Statement" in p for s in p["Statement"]]
    puts = [s for s in statements if "dynamodb:PutItem" in _actions(s)]
    # bind_request claims the request id first (falflow/jobs/store.py); no job record is ever put.
    (claims,) = puts
    assert _actions(claims) == ["dynamodb:PutItem"]
    assert claims["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{REQUEST_CLAIM_PREFIX}*"]}
    }


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)
