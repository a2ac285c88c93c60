"""The collect function's block of template.yaml agrees with what the code does."""

from __future__ import annotations

from typing import Any

from falflow.collect.settings import CollectSettings
from falflow.jobs.store import BY_STATE_INDEX
from falflow_tools.template import function_specs, load_template

TEMPLATE = load_template()
COLLECT = TEMPLATE["Resources"]["CollectFunction"]["Properties"]
SPEC = function_specs(TEMPLATE)["CollectFunction"]


def _statements() -> list[dict[str, Any]]:
    return [
        s for policy in COLLECT["Policies"] if isinstance(policy, dict) for s in policy.get("Statement", [])
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return actions if isinstance(actions, list) else [actions]


def test_snapshots_may_be_written_only_under_the_configured_prefix() -> None:
    prefix = SPEC.environment["SNAPSHOT_PREFIX"]
    assert prefix.endswith("/")
    s3 = [s for s in _statements() if any(a.startswith("s3:") for a in _actions(s))]
    assert [(s["Action"], s["Resource"]) for s in s3] == [
        ("s3:PutObject", {"Fn::Sub": f"${{OutputBucket.Arn}}/{prefix}*"})
    ]


def test_jobs_are_queried_through_the_state_index_and_only_updated() -> None:
    jobs = {str(s["Resource"]): _actions(s) for s in _statements() if "JobsTable" in str(s["Resource"])}
    assert jobs == {
        str({"Fn::Sub": f"${{JobsTable.Arn}}/index/{BY_STATE_INDEX}"}): ["dynamodb:Query"],
        str({"Fn::GetAtt": ["JobsTable", "Arn"]}): ["dynamodb:UpdateItem"],
    }
    assert not any(
        "CrudPolicy" in key for policy in COLLECT["Policies"] if isinstance(policy, dict) for key in policy
    )
    assert not any(a in ("dynamodb:Scan", "dynamodb:*") for s in _statements() for a in _actions(s))


def test_the_schedule_and_the_optional_admin_key_are_parameters() -> None:
    (event,) = SPEC.events.values()
    assert event["Type"] == "ScheduleV2"
    assert event["Properties"]["ScheduleExpression"] == {"Ref": "CollectSchedule"}
    assert SPEC.environment["FAL_ADMIN_KEY_SECRET_ID"] == {"Ref": "FalAdminKeySecretName"}
    assert TEMPLATE["Parameters"]["FalAdminKeySecretName"]["Default"] == ""


def test_every_setting_the_template_passes_is_one_the_code_reads() -> None:
    fields = {name.upper() for name in CollectSettings.model_fields}
    own = {"USAGE_TABLE", "OUTPUT_BUCKET", "SNAPSHOT_PREFIX", "COST_LOOKBACK_HOURS"}
    assert own <= set(SPEC.environment)
    assert own | {"JOBS_TABLE", "JOB_RETENTION_DAYS"} <= fields


def test_a_failed_run_raises_an_alarm() -> None:
    alarms = [
        r["Properties"]
        for r in TEMPLATE["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm" and r["Properties"].get("MetricName") == "Errors"
    ]
    assert any(
        a["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "CollectFunction"}}] for a in alarms
    )
