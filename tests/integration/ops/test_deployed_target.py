"""`--stack NAME`: the operator commands read a deployed stack's outputs and parameters from
CloudFormation (moto here) and act on its resources."""

from __future__ import annotations

import json

import boto3
import pytest
from click.testing import CliRunner

from falflow.jobs import Job, JobState, utcnow
from falflow_tools.cli import main
from falflow_tools.local.resources import ProvisionedStack, template_outputs
from falflow_tools.ops.target import OpsError, deployed_target

STACK = "falflow-prod"


@pytest.fixture
def deployed(aws: ProvisionedStack) -> ProvisionedStack:
    """A CloudFormation stack whose outputs name the provisioned resources, as `sam deploy` leaves it."""
    outputs = template_outputs(aws)
    template = {
        "Parameters": {
            "FalKeySecretName": {"Type": "String"},
            "JobRetentionDays": {"Type": "String"},
        },
        "Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {name: {"Value": value} for name, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName=STACK,
        TemplateBody=json.dumps(template),
        Parameters=[
            {"ParameterKey": "FalKeySecretName", "ParameterValue": "prod/fal-key"},
            {"ParameterKey": "JobRetentionDays", "ParameterValue": "30"},
        ],
    )
    return aws


def test_a_deployed_stack_is_read_from_cloudformation(deployed: ProvisionedStack) -> None:
    target = deployed_target(STACK, region="us-east-1")

    assert not target.is_local
    assert target.output("JobsTableName") == deployed.tables["JobsTable"]
    assert target.parameters["FalKeySecretName"] == "prod/fal-key"
    assert target.fal.queue_url == "https://queue.fal.run"


def test_operator_commands_work_on_it(deployed: ProvisionedStack) -> None:
    store = deployed_target(STACK, region="us-east-1").job_store()
    store.create(
        Job.new("prod-job", source="sqs:m-1", source_kind="sqs", now=utcnow(), model="fal-ai/flux/dev")
    )

    listed = CliRunner().invoke(main, ["jobs", "list", "--stack", STACK, "--region", "us-east-1", "--json"])
    dlqs = CliRunner().invoke(main, ["dlq", "list", "--stack", STACK, "--region", "us-east-1", "--json"])

    assert listed.exit_code == 0, listed.output
    assert [(j["job_id"], j["state"]) for j in json.loads(listed.stdout)] == [
        ("prod-job", JobState.ACCEPTED.value)
    ]
    assert dlqs.exit_code == 0, dlqs.output
    assert json.loads(dlqs.stdout) == []


def test_a_missing_stack_or_secret_is_a_clear_error(deployed: ProvisionedStack) -> None:
    result = CliRunner().invoke(main, ["jobs", "list", "--stack", "no-such-stack", "--region", "us-east-1"])
    assert result.exit_code == 3
    assert "cannot read stack 'no-such-stack'" in result.stderr

    with pytest.raises(OpsError, match="prod/fal-key"):
        deployed_target(STACK, region="us-east-1").fal_api_key()


def test_fal_user_id_prints_the_account_the_kept_deliveries_were_signed_for(
    deployed: ProvisionedStack,
) -> None:
    s3, bucket = boto3.client("s3", region_name="us-east-1"), deployed.buckets["OutputBucket"]
    empty = CliRunner().invoke(main, ["fal-user-id", "--stack", STACK, "--region", "us-east-1"])
    assert empty.exit_code == 1
    assert "no webhook delivery kept" in empty.stderr

    for key, metadata in (
        ("inbox/job-1/req-1.json", {"fal-user-id": "github|12345", "source": "webhook"}),
        ("inbox/job-2/req-2.json", {"fal-user-id": "github|12345", "source": "webhook"}),
        ("inbox/job-3/req-3.reconcile.json", {"source": "reconcile"}),  # polled: no signed header
    ):
        s3.put_object(Bucket=bucket, Key=key, Body=b"{}", Metadata=metadata)
    result = CliRunner().invoke(main, ["fal-user-id", "--stack", STACK, "--region", "us-east-1", "--json"])

    assert result.exit_code == 0, result.output
    assert [(u["user_id"], u["deliveries"]) for u in json.loads(result.stdout)] == [("github|12345", 2)]
    table = CliRunner().invoke(main, ["fal-user-id", "--stack", STACK, "--region", "us-east-1"])
    assert "FalWebhookUserIds='[\"github|12345\"]'" in table.stdout
