"""Alarms that can reach a person and a dashboard that shows the pipeline, read off template.yaml."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from falflow_tools.template import REPO_ROOT, Resolver, function_specs, load_template, resources_of_type

TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
ALARMS = resources_of_type(TEMPLATE, "AWS::CloudWatch::Alarm")
FUNCTIONS = sorted(function_specs(TEMPLATE))
README = (REPO_ROOT / "README.md").read_text()
LAYER_SOURCE = "\n".join(path.read_text() for path in (REPO_ROOT / "layers/falflow/falflow").rglob("*.py"))

ALARM_ACTIONS = ("AlarmActions", "OKActions", "InsufficientDataActions")
CLOUDWATCH = "cloudwatch.amazonaws.com"


def _logical(ref: Any) -> str | None:
    if isinstance(ref, dict) and "Ref" in ref:
        return str(ref["Ref"])
    if isinstance(ref, dict) and "Fn::GetAtt" in ref:
        return str(ref["Fn::GetAtt"][0])
    return None


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _admits(statement: dict[str, Any], service: str, actions: set[str]) -> bool:
    principal = statement.get("Principal", {})
    services = _as_list(principal.get("Service", [])) if isinstance(principal, dict) else []
    return (
        statement.get("Effect") == "Allow"
        and service in services
        and actions <= set(_as_list(statement.get("Action", [])))
    )


def undeliverable_alarm_actions(template: dict[str, Any]) -> list[str]:
    """Why each alarm action could not publish: CloudWatch may use an encrypted topic only through a
    customer-managed key whose policy admits cloudwatch.amazonaws.com (never alias/aws/sns)."""
    resources = template["Resources"]
    problems = []
    for name, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        actions = [ref for key in ALARM_ACTIONS for ref in alarm["Properties"].get(key, [])]
        if not actions:
            problems.append(f"{name}: no action, nobody is told")
        for action in actions:
            topic = _logical(action)
            if topic is None or resources[topic]["Type"] != "AWS::SNS::Topic":
                problems.append(f"{name}: {action!r} is not a topic of this template")
                continue
            key = _logical(resources[topic]["Properties"].get("KmsMasterKeyId"))
            if key is None or resources[key]["Type"] != "AWS::KMS::Key":
                problems.append(
                    f"{name}: {topic} is not encrypted with a customer-managed key of this template"
                )
                continue
            properties = resources[key]["Properties"]
            if not any(
                _admits(s, CLOUDWATCH, {"kms:Decrypt", "kms:GenerateDataKey*"})
                for s in properties["KeyPolicy"]["Statement"]
            ):
                problems.append(f"{name}: the policy of {key} does not let CloudWatch use it")
            if properties.get("EnableKeyRotation") is not True:
                problems.append(f"{name}: {key} is not rotated")
    return problems


def test_every_alarm_can_publish_to_its_topic() -> None:
    assert undeliverable_alarm_actions(TEMPLATE) == []


def test_the_aws_managed_sns_key_would_be_caught() -> None:
    broken = copy.deepcopy(TEMPLATE)
    broken["Resources"]["AlarmTopic"]["Properties"]["KmsMasterKeyId"] = "alias/aws/sns"
    problems = undeliverable_alarm_actions(broken)
    assert {problem.split(":", 1)[0] for problem in problems} == set(ALARMS)
    assert all("customer-managed key" in problem for problem in problems)


def test_a_key_policy_without_cloudwatch_would_be_caught() -> None:
    broken = copy.deepcopy(TEMPLATE)
    statements = broken["Resources"]["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    statements[:] = [s for s in statements if not _admits(s, CLOUDWATCH, {"kms:Decrypt"})]
    assert undeliverable_alarm_actions(broken)


def test_the_alarm_topic_admits_cloudwatch_of_this_account_only() -> None:
    (policy,) = resources_of_type(TEMPLATE, "AWS::SNS::TopicPolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert _admits(statement, CLOUDWATCH, {"sns:Publish"})
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def _metric_stats(alarm: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(namespace, metric name, dimensions) of every metric the alarm reads."""
    props = alarm["Properties"]
    if "MetricName" in props:
        metrics = [{"Namespace": props["Namespace"], "MetricName": props["MetricName"], **props}]
    else:
        metrics = [m["MetricStat"]["Metric"] for m in props["Metrics"] if "MetricStat" in m]
    return [
        (m["Namespace"], m["MetricName"], {d["Name"]: d["Value"] for d in m.get("Dimensions", [])})
        for m in metrics
    ]


def _alarmed(namespace: str, metric: str, dimension: str) -> set[str]:
    return {
        _logical(dimensions[dimension]) or str(dimensions[dimension])
        for alarm in ALARMS.values()
        for ns, name, dimensions in _metric_stats(alarm)
        if ns == namespace and name == metric and dimension in dimensions
    }


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_every_function_has_an_errors_and_a_throttles_alarm(metric: str) -> None:
    assert _alarmed("AWS/Lambda", metric, "FunctionName") == set(FUNCTIONS)


def test_the_intake_and_outputs_queues_alarm_on_their_oldest_message() -> None:
    assert _alarmed("AWS/SQS", "ApproximateAgeOfOldestMessage", "QueueName") == {
        "IntakeQueue",
        "OutputsQueue",
    }


def test_webhook_4xx_and_5xx_rates_and_failed_jobs_are_alarmed() -> None:
    assert (
        {"HttpApi"}
        == _alarmed("AWS/ApiGateway", "4xx", "ApiId")
        == _alarmed("AWS/ApiGateway", "5xx", "ApiId")
    )
    # Every function that can make a job FAILED counts it under its own service dimension.
    assert _alarmed("falflow", "JobsFailed", "service") == {
        "falflow-submit",
        "falflow-store",
        "falflow-reconcile",
    }
    threshold = ALARMS["FailedJobsAlarm"]["Properties"]["Threshold"]
    assert threshold == {"Ref": "FailedJobsPerHourThreshold"}


def test_every_alarm_says_what_to_do_and_the_readme_lists_it() -> None:
    operations = README.split("## Operations", 1)[1].split("\n## ", 1)[0]
    for name, alarm in ALARMS.items():
        description = alarm["Properties"]["AlarmDescription"]
        # A cause and an action: at least two sentences, one naming a command, a log or a setting.
        assert description.count(". ") + description.count("; ") >= 1, name
        assert f"`{name}`" in operations, f"README's Operations section does not list {name}"


def _dashboard() -> dict[str, Any]:
    """The dashboard body with every ${…} resolved to a stand-in, as CloudFormation would."""
    (dashboard,) = resources_of_type(TEMPLATE, "AWS::CloudWatch::Dashboard").values()
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    resolver = Resolver(
        TEMPLATE,
        parameters={},
        refs={name: f"ref-{name}" for name in RESOURCES},
        attributes={(logical, "QueueName"): f"queue-{logical}" for logical in RESOURCES},
        pseudo={"AWS::Region": "eu-west-1", "AWS::StackName": "falflow"},
    )
    assert all(n in RESOURCES or n.startswith("AWS::") or n.split(".")[0] in RESOURCES for n in names)
    parsed: dict[str, Any] = json.loads(resolver.resolve({"Fn::Sub": body}))
    return parsed


DASHBOARD = _dashboard()
WIDGETS = [w["properties"] for w in DASHBOARD["widgets"] if w["type"] == "metric"]


def _shown(metric: str) -> list[dict[str, Any]]:
    """The widgets that plot ``metric`` (directly or in a SEARCH expression)."""
    return [
        widget
        for widget in WIDGETS
        if any(
            (isinstance(row, list) and metric in row)
            or (isinstance(row, dict) and f'MetricName="{metric}"' in row.get("expression", ""))
            for row in widget["metrics"]
        )
    ]


def _rows(metric: str) -> list[Any]:
    return [row for widget in _shown(metric) for row in widget["metrics"]]


@pytest.mark.parametrize("metric", ["JobsAccepted", "JobsCompleted", "JobsFailed"])
def test_the_dashboard_shows_jobs_started_completed_and_failed_per_hour(metric: str) -> None:
    assert any(w["period"] == 3600 and w.get("stat") == "Sum" for w in _shown(metric))


def test_the_dashboard_shows_job_duration_p50_p95_and_per_model() -> None:
    assert {row[-1]["stat"] for row in _rows("JobDuration") if isinstance(row, list)} == {"p50", "p95"}
    assert any("model" in row.get("expression", "") for row in _rows("JobDuration") if isinstance(row, dict))


def test_the_dashboard_shows_cost_per_day_and_per_model() -> None:
    assert {w["period"] for w in _shown("JobCost")} == {86400}
    assert any("model" in row.get("expression", "") for row in _rows("JobCost") if isinstance(row, dict))


@pytest.mark.parametrize(
    ("metric", "queues"),
    [
        ("ApproximateAgeOfOldestMessage", {"IntakeQueue", "OutputsQueue"}),
        (
            "ApproximateNumberOfMessagesVisible",
            {"IntakeQueue", "OutputsQueue", "IntakeDLQ", "OutputsDLQ", "SchedulesDLQ"},
        ),
    ],
)
def test_the_dashboard_shows_queue_age_and_depth_and_dlq_depth(metric: str, queues: set[str]) -> None:
    assert {row[3] for row in _rows(metric) if isinstance(row, list)} == {f"queue-{q}" for q in queues}


@pytest.mark.parametrize("metric", ["Count", "4xx", "5xx", "Errors", "Throttles", "Duration"])
def test_the_dashboard_shows_webhook_outcomes_and_every_functions_health(metric: str) -> None:
    plotted = {row[3] for row in _rows(metric) if isinstance(row, list)}
    expected = {"ref-HttpApi"} if metric in {"Count", "4xx", "5xx"} else {f"ref-{f}" for f in FUNCTIONS}
    assert plotted == expected


def test_the_dashboard_shows_spend_against_the_caps_held_jobs_and_fal_s_balance() -> None:
    assert _shown("BudgetUsed")
    assert _shown("JobsHeld") == _shown("JobsReleased")
    assert [w["stat"] for w in _shown("FalCreditBalance")] == ["Minimum"]


@pytest.mark.parametrize(
    "metric",
    [
        "JobsAccepted",
        "JobsCompleted",
        "JobsFailed",
        "JobDuration",
        "JobCost",
        "RecordsFailed",
        "MessagesDeadLettered",
        "BudgetUsed",
        "JobsHeld",
        "JobsReleased",
    ],
)
def test_every_falflow_metric_the_template_reads_is_emitted_by_the_code(metric: str) -> None:
    assert f'"{metric}"' in LAYER_SOURCE
