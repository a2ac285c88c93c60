"""`--stack NAME`: the operator commands read a deployed stack's outputs and parameters from
CloudFormation (moto here) and act on its resources."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import boto3
import pytest
from click.testing import CliRunner

from falflow.jobs import Job, JobState, RequestUrls, utcnow
from falflow.jobs.store import (
    CLAIMED_BY,
    JOB_KEY,
    REQUEST_CLAIM_PREFIX,
    STATE_SHARD_ATTRIBUTE,
    job_to_item,
)
from falflow_tools.cli import main
from falflow_tools.local.resources import ProvisionedStack, template_outputs
from falflow_tools.ops.submit import job_message, send_message
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


def test_jobs_list_by_state_says_what_each_job_waits_for(deployed: ProvisionedStack) -> None:
    store = deployed_target(STACK, region="us-east-1").job_store()
    long_ago = utcnow() - timedelta(hours=1)
    for job_id in ("stored-by-a-dead-run", "being-stored"):
        store.create(
            Job.new(job_id, source="sqs:m", source_kind="sqs", now=long_ago, model="fal-ai/flux/dev")
        )
        store.record_submission(job_id, f"r-{job_id}", RequestUrls(), now=long_ago)
        store.record_completion(
            job_id, f"r-{job_id}", completion_key="inbox/k", source="webhook", now=long_ago
        )
        store.mark_handed_over(job_id, "inbox/k", now=long_ago)
    store.take_store_lease("stored-by-a-dead-run", seen_until=None, now=long_ago, lease=timedelta(minutes=16))
    store.take_store_lease("being-stored", seen_until=None, now=utcnow(), lease=timedelta(minutes=16))

    args = ["jobs", "list", "--state", "STORING", "--stack", STACK, "--region", "us-east-1"]
    listed = CliRunner().invoke(main, [*args, "--json"])
    assert listed.exit_code == 0, listed.output
    why = {job["job_id"]: job["why"] for job in json.loads(listed.stdout)}
    assert "store run stopped unfinished" in why["stored-by-a-dead-run"]
    assert "reconcile hands it to the store again" in why["stored-by-a-dead-run"]
    assert why["being-stored"].startswith("outputs being stored (store lease until")
    shown = CliRunner().invoke(main, args, env={"COLUMNS": "400"})  # a wide terminal
    assert shown.exit_code == 0, shown.output
    assert "WHY / WAITING FOR" in shown.stdout
    assert "store run stopped unfinished" in shown.stdout


def test_backfill_shards_makes_jobs_from_before_the_sharded_index_visible(deployed: ProvisionedStack) -> None:
    table = deployed.tables["JobsTable"]
    client = boto3.client("dynamodb", region_name="us-east-1")
    for n in range(3):  # as the ByState release wrote them: no state_shard
        item = job_to_item(Job.new(f"old-{n}", source="sqs:m", source_kind="sqs", now=utcnow(), model="m"))
        del item[STATE_SHARD_ATTRIBUTE]
        client.put_item(TableName=table, Item=item)
    # a fal request's claim lives in the same table and is no job: the backfill leaves it alone
    claim = {JOB_KEY: {"S": f"{REQUEST_CLAIM_PREFIX}r-1"}, CLAIMED_BY: {"S": "old-0"}}
    client.put_item(TableName=table, Item=claim)
    args = ["--stack", STACK, "--region", "us-east-1", "--json"]
    before = CliRunner().invoke(main, ["jobs", "list", "--state", "ACCEPTED", *args])
    assert json.loads(before.stdout) == []  # invisible to the reconciler and the CLI

    backfilled = CliRunner().invoke(main, ["jobs", "backfill-shards", *args])
    assert backfilled.exit_code == 0, backfilled.output
    assert json.loads(backfilled.stdout) == {"updated": 3}
    after = CliRunner().invoke(main, ["jobs", "list", "--state", "ACCEPTED", *args])
    assert sorted(job["job_id"] for job in json.loads(after.stdout)) == ["old-0", "old-1", "old-2"]
    again = CliRunner().invoke(main, ["jobs", "backfill-shards", *args])
    assert json.loads(again.stdout) == {"updated": 0}
    assert client.get_item(TableName=table, Key={JOB_KEY: claim[JOB_KEY]})["Item"] == claim


def test_a_missing_stack_or_secret_is_a_clear_error(deployed: ProvisionedStack) -> None:
    result = CliRunner().invoke(main, ["jobs", "list", "--stack", "no-such-stack", "--region", "us-east-1"])
    assert result.exit_code == 3
    assert "cannot read stack 'no-such-stack'" in result.stderr

    with pytest.raises(OpsError, match="prod/fal-key"):
        deployed_target(STACK, region="us-east-1").fal_api_key()


def test_cancel_of_a_job_whose_message_is_still_queued_explains_it(deployed: ProvisionedStack) -> None:
    target = deployed_target(STACK, region="us-east-1")
    send_message(target, job_message("fal-ai/flux/dev", {"prompt": "queued"}, job_id="still-queued"))

    result = CliRunner().invoke(
        main, ["jobs", "cancel", "still-queued", "--stack", STACK, "--region", "us-east-1"]
    )

    assert result.exit_code == 1
    assert "no job 'still-queued' in stack falflow-prod" in result.stderr
    assert re.search(r"\d+ message\(s\) are still in the intake queue", result.stderr)
    assert "falflow jobs watch still-queued" in result.stderr


def test_logs_of_a_deployed_function_come_from_its_log_group(aws: ProvisionedStack) -> None:
    """The function's log group is /aws/lambda/<its physical name>, found through CloudFormation."""
    template = {
        "Resources": {
            # Any resource stands in for the function here: only its physical id is read.
            "StoreFunction": {"Type": "AWS::Logs::LogGroup", "Properties": {"LogGroupName": "prod-Store-1"}}
        },
    }
    boto3.client("cloudformation", region_name="us-east-1").create_stack(
        StackName="falflow-logs", TemplateBody=json.dumps(template)
    )
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(logGroupName="/aws/lambda/prod-Store-1")
    logs.create_log_stream(logGroupName="/aws/lambda/prod-Store-1", logStreamName="s")
    now_ms = int(time.time() * 1000)
    lines = [
        json.dumps({"level": "WARNING", "message": "record failed", "timestamp": "t1", "job_id": "j-1"}),
        "Traceback (most recent call last):",
        json.dumps({"level": "INFO", "message": "stored", "timestamp": "t2", "job_id": "j-2"}),
    ]
    logs.put_log_events(
        logGroupName="/aws/lambda/prod-Store-1",
        logStreamName="s",
        logEvents=[{"timestamp": now_ms + i, "message": line} for i, line in enumerate(lines)],
    )

    shown = CliRunner().invoke(main, ["logs", "store", "--stack", "falflow-logs", "--region", "us-east-1"])
    last = CliRunner().invoke(
        main, ["logs", "store", "-n", "1", "--raw", "--stack", "falflow-logs", "--region", "us-east-1"]
    )
    missing = CliRunner().invoke(main, ["logs", "submit", "--stack", "falflow-logs", "--region", "us-east-1"])

    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines() == [
        "t1 WARNING record failed  job_id=j-1",
        "Traceback (most recent call last):",
        "t2 INFO    stored  job_id=j-2",
    ]
    assert last.stdout.splitlines() == [lines[2]]
    assert missing.exit_code == 1
    assert "cannot find SubmitFunction in stack falflow-logs" in missing.stderr


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


# starlette's test client warns that it will move to httpx2, which is not locked here.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_console_reads_a_deployed_stack(deployed: ProvisionedStack) -> None:
    from starlette.testclient import TestClient  # noqa: PLC0415 - imported where its warning is filtered

    from falflow_tools.console.app import create_app  # noqa: PLC0415

    target = deployed_target(STACK, region="us-east-1")
    store = target.job_store()
    now = utcnow()
    store.create(Job.new("prod-shown", source="sqs:m-2", source_kind="sqs", now=now, model="fal-ai/flux/dev"))
    console = TestClient(create_app(target), base_url="http://127.0.0.1")

    jobs = console.get("/api/jobs", params={"state": "ACCEPTED", "since": "1h"}).json()["jobs"]
    detail = console.get("/api/jobs/prod-shown").json()
    missing = console.get("/api/jobs/no-such-job")
    bad_state = console.get("/api/jobs", params={"state": "SLEEPING"})
    about = console.get("/api/about").json()
    elsewhere = TestClient(create_app(target), base_url="http://falflow.example.com").get("/api/about")

    assert [job["job_id"] for job in jobs] == ["prod-shown"]
    assert detail["job"]["model"] == "fal-ai/flux/dev"
    assert detail["outputs"] == []
    assert missing.status_code == 404
    assert "no job 'no-such-job'" in missing.json()["error"]
    assert bad_state.status_code == 400
    assert about["target"] == f"stack {STACK}"
    assert about["local"] is False
    assert console.get("/api/dlq").json() == {"messages": []}
    assert console.get("/api/costs").json()["per_model"] == []
    assert elsewhere.status_code == 421
