"""`falflow budget show|set|reset`, `falflow jobs release` and `falflow costs --variance` on moto
with the template's tables and queues, spend charged through the JobStore's own transitions."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result

from falflow.jobs import Job, JobCost, JobState, isoformat, utcnow
from falflow.settings import FalSettings
from falflow.spend.caps import Window
from falflow.spend.gate import SpendAnnouncer, SpendGate
from falflow_tools.cli import main
from falflow_tools.local.resources import ProvisionedStack, template_outputs
from falflow_tools.ops.target import Target

FLUX = "fal-ai/flux/dev"
UPSCALER = "fal-ai/clarity-upscaler"


@pytest.fixture
def target(aws: ProvisionedStack) -> Target:
    """The stack as `--stack` reads it: the template's outputs, its parameters with daily caps of
    $1 for all jobs and $0.5 for the upscale/ route."""
    parameters = {k: str(v) for k, v in aws.resolver.parameters.items()}
    routes = json.loads(parameters["Routes"])
    routes["upscale/"]["daily_budget_usd"] = 0.5
    return Target(
        name="stack test",
        region="us-east-1",
        outputs=template_outputs(aws),
        parameters={**parameters, "DailyBudgetUsd": "1", "Routes": json.dumps(routes)},
        fal=FalSettings(),
    )


@pytest.fixture
def falflow(target: Target, monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(*args: str) -> Result:
        monkeypatch.setattr("falflow_tools.commands.common.resolve_target", lambda *a, **k: target)
        return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})

    return run


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def admitted(
    target: Target, job_id: str, amount: float, *, model: str = FLUX, route: str | None = None
) -> Job:
    """A job through the spend gate as submit sends it: its estimate reserved, or the job HELD."""
    now = utcnow()
    job, _ = target.job_store().create(
        Job.new(
            job_id,
            source=f"sqs://{job_id}",
            source_kind="sqs",
            now=now,
            model=model,
            route=route,
            input={"prompt": job_id},
            submit_lease_until=isoformat(now + timedelta(minutes=2)),
            estimate=JobCost(amount=amount, source="estimate"),
        )
    )
    ledger = target.spend_ledger()
    gate = SpendGate(ledger=ledger, store=target.job_store(), announcer=SpendAnnouncer(ledger, None))
    gate.admit(job, now)
    stored = target.job_store().get(job_id)
    assert stored is not None
    return stored


def caps_of(status: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {line["cap"]: (line["limit_usd"], line["spent_usd"]) for line in status["caps"]}


def test_the_local_stack_names_the_spend_table_among_its_outputs(aws: ProvisionedStack) -> None:
    assert template_outputs(aws)["SpendTableName"] == aws.tables["SpendTable"]


def test_show_without_caps_says_so(target: Target, falflow: Any) -> None:
    target.parameters = {k: v for k, v in target.parameters.items() if k not in ("DailyBudgetUsd", "Routes")}

    shown = falflow("budget", "show")

    assert shown.exit_code == 0, shown.output
    assert "no budgets set" in shown.output
    assert "the template's caps are in force" in shown.output
    assert ok_json(falflow("budget", "show", "--json"))["caps"] == []


def test_show_lists_the_template_caps_with_what_their_window_spent(target: Target, falflow: Any) -> None:
    admitted(target, "a", 0.25, model=UPSCALER, route="upscale/")
    admitted(target, "b", 0.5)
    assert admitted(target, "c", 0.5).state is JobState.HELD  # $0.75 spent of $1

    status = ok_json(falflow("budget", "show", "--json"))

    assert caps_of(status) == {"daily#all": (1.0, 0.75), "daily#route:upscale/": (0.5, 0.25)}
    stack = status["caps"][0]
    today = Window.containing("daily", utcnow())
    assert (stack["window"], stack["resets_at"]) == (today.id, isoformat(today.resets_at))
    assert (stack["left_usd"], stack["used_percent"]) == (0.25, 75.0)
    assert (status["in_force"], status["unpriced"], status["held"]) == ("template", "allow", {"budget": 1})
    shown = falflow("budget", "show")
    assert "daily#route:upscale/" in shown.output
    assert "75.0" in shown.output
    assert "held jobs: budget 1" in shown.output


def test_set_changes_the_stack_route_and_model_caps_and_reset_goes_back(target: Target, falflow: Any) -> None:
    admitted(target, "a", 0.25, model=UPSCALER, route="upscale/")

    assert falflow("budget", "set", "--daily", "3", "--monthly", "20").exit_code == 0
    assert falflow("budget", "set", "--route", "upscale/", "--monthly", "5").exit_code == 0
    model_set = falflow("budget", "set", "--model", UPSCALER, "--daily", "0.4", "--unpriced", "hold")
    assert model_set.exit_code == 0, model_set.output
    assert "re-checked" in model_set.output
    assert "ReconcileSchedule rate(5 minutes)" in model_set.output

    status = ok_json(falflow("budget", "show", "--json"))
    assert caps_of(status) == {
        "daily#all": (3.0, 0.25),
        "monthly#all": (20.0, 0.0),  # charged before the cap existed: the counter starts now
        "daily#route:upscale/": (0.5, 0.25),  # the route table's cap, kept
        "monthly#route:upscale/": (5.0, 0.0),
        "daily#model:fal-ai/clarity-upscaler": (0.4, 0.0),
    }
    assert status["caps"][1]["window"] == Window.containing("monthly", utcnow()).id
    assert (status["in_force"], status["unpriced"]) == ("runtime", "hold")
    assert status["updated_at"] is not None

    # 0 removes a cap; a route left with none is dropped.
    falflow("budget", "set", "--route", "upscale/", "--daily", "0", "--monthly", "0")
    assert "daily#route:upscale/" not in caps_of(ok_json(falflow("budget", "show", "--json")))

    reset = ok_json(falflow("budget", "reset", "--json"))
    assert caps_of(reset) == {"daily#all": (1.0, 0.25), "daily#route:upscale/": (0.5, 0.25)}
    assert (reset["in_force"], reset["unpriced"]) == ("template", "allow")


def test_set_refuses_nothing_to_change_and_an_unknown_route(falflow: Any) -> None:
    assert falflow("budget", "set").exit_code == 2
    assert falflow("budget", "set", "--route", "upscale/").exit_code == 2
    unknown = falflow("budget", "set", "--route", "nope/", "--daily", "1")
    assert unknown.exit_code == 1
    assert "no route 'nope/'" in unknown.output
    assert "upscale/" in unknown.output


def test_release_sends_a_held_job_on_and_charges_its_estimate(
    target: Target, aws: ProvisionedStack, falflow: Any
) -> None:
    admitted(target, "a", 0.75)
    assert admitted(target, "b", 0.5).state is JobState.HELD

    released = falflow("jobs", "release", "b")

    assert released.exit_code == 0, released.output
    assert released.output.startswith("b: released")
    job = target.job_store().get("b")
    assert job is not None
    assert (job.state, job.hold) == (JobState.ACCEPTED, None)
    assert job.reservation is not None
    assert job.trail[-1].action == "released"
    messages = target.sqs().receive_message(QueueUrl=aws.queues["IntakeQueue"].url, MaxNumberOfMessages=10)
    # (S3 put its test event of the bucket notification on the queue too.)
    bodies = [json.loads(m["Body"]) for m in messages["Messages"]]
    assert [(b["job_id"], b["model"]) for b in bodies if "job_id" in b] == [("b", FLUX)]
    # By hand the cap is not checked, but the estimate is charged all the same.
    assert caps_of(ok_json(falflow("budget", "show", "--json")))["daily#all"] == (1.0, 1.25)


def test_release_all_takes_every_held_job_oldest_first(target: Target, falflow: Any) -> None:
    admitted(target, "a", 1.0)
    for job_id in ("c", "b"):
        assert admitted(target, job_id, 0.25).state is JobState.HELD
        time.sleep(0.005)  # held a few milliseconds apart: c is the older

    results = ok_json(falflow("jobs", "release", "--all", "--json"))

    assert [(r["job_id"], r["outcome"]) for r in results] == [("c", "released"), ("b", "released")]
    assert ok_json(falflow("budget", "show", "--json"))["held"] == {}
    assert falflow("jobs", "release", "--all").output.strip() == "no held jobs"


def test_release_of_a_job_that_is_not_held_fails_clearly(target: Target, falflow: Any) -> None:
    admitted(target, "a", 0.25)
    assert admitted(target, "b", 1.0).state is JobState.HELD

    refused = falflow("jobs", "release", "a", "b", "missing")

    assert refused.exit_code == 1
    assert refused.output.splitlines() == [
        "a: not_held (it is ACCEPTED, not HELD)",
        "b: released (now ACCEPTED, its message sent to the intake queue)",
        "missing: not_held (no job 'missing' in stack test)",
    ]
    assert falflow("jobs", "release").exit_code == 2


def finished(target: Target, job_id: str, model: str, estimate: float, cost: JobCost | None) -> None:
    target.job_store().create(
        Job.new(
            job_id,
            source=f"sqs://{job_id}",
            source_kind="sqs",
            now=utcnow(),
            state=JobState.COMPLETED,
            model=model,
            estimate=JobCost(amount=estimate, source="estimate"),
            cost=cost,
        )
    )


def test_costs_variance_compares_estimates_with_billed_costs_per_model(target: Target, falflow: Any) -> None:
    finished(target, "f1", FLUX, 0.10, JobCost(amount=0.12, source="billing_event"))
    finished(target, "f2", FLUX, 0.10, JobCost(amount=0.13, source="billing_event"))
    finished(target, "f3", FLUX, 0.10, JobCost(amount=0.10, source="estimate"))  # not billed yet
    finished(target, "u1", UPSCALER, 0.50, None)

    lines = {line["model"]: line for line in ok_json(falflow("costs", "--variance", "--json"))}

    flux = lines[FLUX]
    assert (flux["compared"], flux["estimate_only"]) == (2, 1)
    assert (flux["estimated"], flux["billed"]) == (pytest.approx(0.20), pytest.approx(0.25))
    assert (flux["difference"], flux["ratio"]) == (pytest.approx(0.05), pytest.approx(1.25))
    assert (lines[UPSCALER]["compared"], lines[UPSCALER]["estimate_only"], lines[UPSCALER]["ratio"]) == (
        0,
        1,
        None,
    )
    shown = falflow("costs", "--variance")
    assert "1.25" in shown.output
    assert "+$0.05" in shown.output
    # Without the flag, costs is what it was.
    assert "WITH COST" in falflow("costs").output


def test_cancelling_a_job_fal_never_had_gives_its_reservation_back(target: Target, falflow: Any) -> None:
    admitted(target, "kept", 0.25)
    locked = admitted(target, "locked", 0.5)
    assert locked.reservation is not None
    ledger = target.spend_ledger()
    gate = SpendGate(ledger=ledger, store=target.job_store(), announcer=SpendAnnouncer(ledger, None))
    assert gate.hold_for_lock(locked, "Admin lock.", utcnow()).admission.value == "held"
    held = target.job_store().get("locked")
    assert held is not None
    assert held.state is JobState.HELD

    cancelled = falflow("jobs", "cancel", "locked")

    assert cancelled.exit_code == 0, cancelled.output
    job = target.job_store().get("locked")
    assert job is not None
    assert job.state is JobState.CANCELLED
    assert job.reservation is not None
    assert job.reservation.settled_amount == 0.0
    assert caps_of(ok_json(falflow("budget", "show", "--json")))["daily#all"] == (1.0, 0.25)


def test_jobs_show_says_where_a_job_s_cost_comes_from(target: Target, falflow: Any) -> None:
    finished(target, "billed", FLUX, 0.10, JobCost(amount=0.12, source="billing_event"))
    finished(target, "estimated", FLUX, 0.10, None)

    assert ok_json(falflow("jobs", "show", "billed", "--json"))["job"]["cost_source"] == "billed"
    assert ok_json(falflow("jobs", "show", "estimated", "--json"))["job"]["cost_source"] == "estimate"
    assert "cost_source" in falflow("jobs", "show", "billed").output
