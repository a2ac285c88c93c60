"""Least privilege, read off template.yaml: no data-plane permission on `*`, including what SAM adds.

SAM turns a function's `Policies` into a generated role and adds policies of its own: for an SQS
event source, AWSLambdaSQSQueueExecutionRole (sqs:ReceiveMessage and friends on every queue). A
function with an SQS event therefore has a role of its own whose queue permissions name its queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from falflow_tools.template import condition_branches, load_template, resources_of_type

TEMPLATE = load_template()
FUNCTIONS: dict[str, Any] = {
    logical: resource["Properties"]
    for logical, resource in resources_of_type(TEMPLATE, "AWS::Serverless::Function").items()
}
ROLES: dict[str, Any] = resources_of_type(TEMPLATE, "AWS::IAM::Role")

# SAM policy templates whose expansion names the resource it is given and no wildcard action
# (SQSSendMessagePolicy is not among them: it grants sqs:SendMessage*).
SCOPED_POLICY_TEMPLATES = {
    "DynamoDBReadPolicy",
    "S3ReadPolicy",
    "EventBridgePutEventsPolicy",
    "AWSSecretsManagerGetSecretValuePolicy",
}
# Telemetry, not data: CloudWatch Logs for the function's own log group and X-Ray segments, which
# have no resource-level permissions. What SAM attaches to every generated role, and no more.
TELEMETRY_MANAGED_POLICIES = {
    "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:${AWS::Partition}:iam::aws:policy/AWSXrayWriteOnlyAccess",
}
SQS_POLLING = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every inline statement of a function or a role."""
    for logical, spec in FUNCTIONS.items():
        for entry in spec.get("Policies", []):
            for policy in condition_branches(entry):
                if isinstance(policy, dict) and "Statement" in policy:
                    for statement in policy["Statement"]:
                        yield logical, statement
    for logical, role in ROLES.items():
        for policy in role["Properties"].get("Policies", []):
            for entry in policy["PolicyDocument"]["Statement"]:
                for statement in condition_branches(entry):
                    yield logical, statement


def _text(value: Any) -> str:
    """A resource as written: a string, or the template string of a !Sub; a !GetAtt/!Ref names one."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return str(sub if isinstance(sub, str) else sub[0])
    if isinstance(value, dict) and ("Fn::GetAtt" in value or "Ref" in value):
        return "<one resource>"
    raise AssertionError(f"unexpected resource form: {value!r}")


STATEMENTS = list(_statements())


def test_the_template_has_statements_to_check() -> None:
    assert {owner for owner, _ in STATEMENTS} >= {"SubmitRole", "StoreRole", "WebhookFunction"}


STATEMENT_IDS = [
    f"{owner}:{statement.get('Sid', index)}" for index, (owner, statement) in enumerate(STATEMENTS)
]


@pytest.mark.parametrize(("owner", "statement"), STATEMENTS, ids=STATEMENT_IDS)
def test_no_permission_has_a_wildcard_action_or_resource(owner: str, statement: dict[str, Any]) -> None:
    if statement.get("Effect") != "Allow":
        return
    actions = _as_list(statement["Action"])
    assert not [a for a in actions if "*" in a], f"{owner}: wildcard action {actions}"
    for resource in _as_list(statement["Resource"]):
        text = _text(resource)
        # A wildcard may only end a path under a named resource (bucket/prefix/*, index/*) or
        # stand for the random suffix Secrets Manager appends to a named secret (name-*).
        assert text != "*", f"{owner}: Resource '*'"
        if "*" in text:
            assert text.count("*") == 1, f"{owner}: {text}"
            assert text.endswith(("/*", "-*")), f"{owner}: {text}"
            assert "${" in text.rsplit(":", 1)[-1] or "/" in text, f"{owner}: {text}"


def test_functions_use_only_policy_templates_that_name_their_resource() -> None:
    used = {
        name
        for spec in FUNCTIONS.values()
        for entry in spec.get("Policies", [])
        for policy in condition_branches(entry)
        for name in (policy if isinstance(policy, dict) else {policy: None})
        if name != "Statement"
    }
    assert used <= SCOPED_POLICY_TEMPLATES


@pytest.mark.parametrize("logical", sorted(ROLES))
def test_roles_attach_only_telemetry_managed_policies(logical: str) -> None:
    attached = {_text(arn) for arn in ROLES[logical]["Properties"].get("ManagedPolicyArns", [])}
    assert attached <= TELEMETRY_MANAGED_POLICIES


SQS_FUNCTIONS = sorted(
    (logical, event["Properties"]["Queue"])
    for logical, spec in FUNCTIONS.items()
    for event in spec.get("Events", {}).values()
    if event["Type"] == "SQS"
)


def test_every_sqs_consumer_is_checked() -> None:
    assert {logical for logical, _ in SQS_FUNCTIONS} == {"SubmitFunction", "StoreFunction"}


@pytest.mark.parametrize(("logical", "queue"), SQS_FUNCTIONS)
def test_an_sqs_consumer_has_its_own_role_whose_queue_permissions_name_its_queue(
    logical: str, queue: Any
) -> None:
    properties = FUNCTIONS[logical]
    # With Policies, SAM would generate the role and add AWSLambdaSQSQueueExecutionRole ("*"); a
    # policy added here next to Role would be ignored, so there must be none.
    assert "Policies" not in properties, f"{logical}: put its permissions in its role"
    role_ref = properties["Role"]
    assert role_ref["Fn::GetAtt"][1] == "Arn"
    role = ROLES[role_ref["Fn::GetAtt"][0]]
    polling = [
        statement
        for policy in role["Properties"]["Policies"]
        for entry in policy["PolicyDocument"]["Statement"]
        for statement in condition_branches(entry)
        if SQS_POLLING & set(_as_list(statement["Action"]))
    ]
    assert polling, f"{logical}: its role cannot poll its queue"
    for statement in polling:
        assert set(_as_list(statement["Action"])) >= SQS_POLLING
        assert _as_list(statement["Resource"]) == [queue]
