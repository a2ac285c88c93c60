"""Every operator command against the running local stack (through its state file)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from falflow.fal import CancelOutcome
from falflow.jobs import JobState
from falflow_tools.cli import main
from falflow_tools.emulator.config import EmulatorConfig
from falflow_tools.emulator.media import render_png
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.jobs import cancel_job
from falflow_tools.ops.submit import job_message, send_message
from falflow_tools.ops.target import Target
from tests.e2e.conftest import state_file, wait_for_job

pytestmark = pytest.mark.e2e
EMULATOR_USER_ID = EmulatorConfig().user_id


@pytest.fixture
def falflow(stack: LocalStack) -> Any:
    """Run `falflow …` in-process against the package's local stack."""

    def run(*args: str, input: str | None = None) -> Result:
        # A wide terminal: at 80 columns, and even at 200, the long reasons of other jobs fold the
        # table's header and rows, and which jobs are listed depends on the order tests ran in.
        args = (*args, "--local-state", str(state_file(stack)))
        return CliRunner().invoke(main, args, input=input, env={"COLUMNS": "400"})

    return run


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -------------------------------------------------------------------------------------- submit


def test_submit_a_message_and_wait_for_it(falflow: Any) -> None:
    result = falflow(
        "submit",
        "fal-ai/flux/dev",
        "--input",
        '{"prompt": "cli"}',
        "--metadata",
        '{"via": "cli"}',
        "--wait",
        "--json",
    )

    submitted = as_json(result)
    assert submitted["via"] == "sqs"
    assert submitted["job"]["state"] == "COMPLETED"
    assert submitted["job"]["metadata"] == {"via": "cli"}
    assert submitted["job"]["job_id"] == submitted["job_id"]
    # The completion came by a verified webhook: the account it was signed for is what to pin.
    signed_for = as_json(falflow("fal-user-id", "--json"))
    assert [user["user_id"] for user in signed_for] == [EMULATOR_USER_ID]


def test_submit_a_file_drop_predicts_the_job_id(falflow: Any, target: Target, tmp_path: Path) -> None:
    picture = tmp_path / "small.png"
    picture.write_bytes(render_png(64, 64, 3))

    submitted = as_json(falflow("submit", "--drop", str(picture), "--prefix", "upscale/cli/", "--json"))

    assert submitted["via"] == "s3"
    assert "/upscale/cli/small.png?versionId=" in submitted["reference"]
    assert wait_for_job(target, submitted["job_id"]).state == JobState.COMPLETED


def test_submit_a_whole_message_from_a_file(falflow: Any, target: Target, tmp_path: Path) -> None:
    message = tmp_path / "job.json"
    message.write_text(
        json.dumps({"model": "fal-ai/stable-audio", "input": {"prompt": "a"}, "job_id": "cli-msg"})
    )

    result = falflow("submit", "--message", str(message))

    assert result.exit_code == 0, result.output
    assert "job cli-msg" in result.stdout
    assert wait_for_job(target, "cli-msg").state == JobState.COMPLETED


def test_submit_refuses_what_the_submit_function_would_reject(falflow: Any) -> None:
    bad_field = falflow(
        "submit", "fal-ai/flux/dev", "--input", "{}", "--file", "image_url=s3://b/k", "--priority", "low"
    )
    unknown = falflow(
        "submit", "--message", "-", input='{"model": "fal-ai/flux/dev", "input": {}, "colour": 1}'
    )
    no_route = falflow("submit", "--drop", __file__, "--prefix", "nowhere/")
    two_ways = falflow("submit", "fal-ai/flux/dev", "--drop", __file__, "--prefix", "upscale/")

    assert bad_field.exit_code == 0  # a valid message: fal will judge the input
    assert unknown.exit_code == 1
    assert "colour" in unknown.stderr
    assert no_route.exit_code == 1
    assert "no route for 'nowhere/" in no_route.stderr
    assert two_ways.exit_code == 2


# ---------------------------------------------------------------------------------------- jobs


def test_jobs_list_filters_by_state_model_and_time(falflow: Any, target: Target) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "listed"}, job_id="cli-listed"))
    wait_for_job(target, sent.job_id)

    listed = as_json(falflow("jobs", "list", "--state", "COMPLETED", "--model", "fal-ai/flux/dev", "--json"))
    later = as_json(falflow("jobs", "list", "--since", "2099-01-01", "--json"))
    table = falflow("jobs", "list", "--limit", "3")
    # Up to three: the jobs of the tests that ran before this one on the same stack, and its own.
    rows = min(3, len(as_json(falflow("jobs", "list", "--json"))))

    assert "cli-listed" in [job["job_id"] for job in listed]
    assert {job["state"] for job in listed} == {"COMPLETED"}
    assert {job["model"] for job in listed} == {"fal-ai/flux/dev"}
    assert later == []
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["JOB", "STATE", "MODEL"]
    # The rows under the header and its rule; a row may fold over several lines, never an id.
    assert (
        len(
            re.findall(
                r"^\S+\s+(?:ACCEPTED|SUBMITTED|IN_PROGRESS|STORING|COMPLETED|FAILED|CANCELLED|REJECTED)\s",
                table.stdout,
                re.MULTILINE,
            )
        )
        == rows
    ), table.stdout


def test_jobs_show_gives_the_record_and_working_links(
    falflow: Any, stack: LocalStack, target: Target
) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "shown"}, job_id="cli-shown"))
    job = wait_for_job(target, sent.job_id)

    details = as_json(falflow("jobs", "show", "cli-shown", "--json"))
    human = falflow("jobs", "show", "cli-shown")
    missing = falflow("jobs", "show", "no-such-job")

    assert details["job"]["state"] == "COMPLETED"
    assert set(details["links"]) == {*job.outputs, job.result_key}
    for key, url in details["links"].items():
        fetched = httpx.get(url)
        assert fetched.status_code == 200
        stored = stack.s3().get_object(Bucket=details["output_bucket"], Key=key)["Body"].read()
        assert fetched.content == stored
    assert "state" in human.stdout
    assert re.search(r'^input +\{"prompt": "shown"\}$', human.stdout, re.MULTILINE)  # JSON, not a repr
    assert "{'" not in human.stdout
    assert f"outputs in s3://{details['output_bucket']}/" in human.stdout
    assert missing.exit_code == 1
    assert "no job 'no-such-job'" in missing.stderr


def test_jobs_cancel_before_fal_has_the_job(falflow: Any, target: Target, fal_faults: Any) -> None:
    fal_faults(submit={"rate_503": 1.0})
    send_message(target, job_message("fal-ai/flux/dev", {"prompt": "cancel me"}, job_id="cli-cancel-early"))
    wait_for_job(target, "cli-cancel-early", {JobState.ACCEPTED})

    cancelled = falflow("jobs", "cancel", "cli-cancel-early")
    again = falflow("jobs", "cancel", "cli-cancel-early")

    assert cancelled.exit_code == 0, cancelled.output
    assert "CANCELLED" in cancelled.stdout
    job = target.job_store().get("cli-cancel-early")
    assert job is not None
    assert job.state == JobState.CANCELLED
    assert job.trail[-1].action == "cancel"
    assert again.exit_code == 1
    assert "already CANCELLED" in again.stderr


def test_jobs_cancel_a_job_fal_already_finished_changes_nothing(
    falflow: Any, stack: LocalStack, target: Target, fal_faults: Any
) -> None:
    assert stack.emulator is not None
    fal_faults(webhook={"drop_rate": 1.0})
    send_message(target, job_message("fal-ai/flux/dev", {"prompt": "too late"}, job_id="cli-cancel-late"))
    job = wait_for_job(target, "cli-cancel-late", {JobState.SUBMITTED, JobState.IN_PROGRESS})
    assert job.request_id is not None
    deadline = time.monotonic() + 10
    while stack.emulator.control.job(job.request_id).status != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.05)

    result = falflow("jobs", "cancel", "cli-cancel-late", "--json")

    assert result.exit_code == 1
    assert json.loads(result.stdout)["outcome"] == "ALREADY_COMPLETED"
    after = target.job_store().get("cli-cancel-late")
    assert after is not None
    assert after.state == job.state


def test_cancel_marks_a_job_fal_agreed_to_cancel(target: Target, fal_faults: Any) -> None:
    fal_faults(webhook={"drop_rate": 1.0})
    send_message(
        target, job_message("fal-ai/flux/dev", {"prompt": "cancelled at fal"}, job_id="cli-cancel-fal")
    )
    job = wait_for_job(target, "cli-cancel-fal", {JobState.SUBMITTED, JobState.IN_PROGRESS})

    class AgreeingFal:
        def __init__(self) -> None:
            self.asked: list[str] = []

        def cancel(self, cancel_url: str) -> CancelOutcome:
            self.asked.append(cancel_url)
            return CancelOutcome.CANCELLATION_REQUESTED

    fal = AgreeingFal()
    result = cancel_job(target, "cli-cancel-fal", fal=fal)  # type: ignore[arg-type]

    assert fal.asked == [job.cancel_url]
    assert result.outcome == "cancelled"
    assert target.job_store().get("cli-cancel-fal").state == JobState.CANCELLED  # type: ignore[union-attr]


def test_jobs_retry_runs_a_failed_message_job_again(falflow: Any, target: Target, fal_faults: Any) -> None:
    fal_faults(job_error_rate=1.0)
    send_message(target, job_message("fal-ai/flux/dev", {"prompt": "fails once"}, job_id="cli-retry"))
    assert wait_for_job(target, "cli-retry").state == JobState.FAILED
    fal_faults()

    retried = as_json(falflow("jobs", "retry", "cli-retry", "--json"))

    assert retried["via"] == "message"
    assert retried["new_job_id"] == "cli-retry.r1"
    job = wait_for_job(target, "cli-retry.r1")
    assert job.state == JobState.COMPLETED
    assert job.metadata["retry_of"] == "cli-retry"
    refused = falflow("jobs", "retry", "cli-retry.r1")
    assert refused.exit_code == 1
    assert "nothing to retry" in refused.stderr


def test_jobs_retry_drops_a_failed_media_job_again(
    falflow: Any, target: Target, fal_faults: Any, tmp_path: Path
) -> None:
    picture = tmp_path / "retry.png"
    picture.write_bytes(render_png(64, 64, 5))
    fal_faults(job_error_rate=1.0)
    first = as_json(falflow("submit", "--drop", str(picture), "--prefix", "upscale/retry/", "--json"))
    assert wait_for_job(target, first["job_id"]).state == JobState.FAILED
    fal_faults()

    retried = as_json(falflow("jobs", "retry", first["job_id"], "--json"))

    assert retried["via"] == "s3"
    assert retried["new_job_id"] != first["job_id"]
    job = wait_for_job(target, retried["new_job_id"])
    assert job.state == JobState.COMPLETED
    assert job.source.split("?")[0] == first["reference"].split("?")[0]


# ----------------------------------------------------------------------------------------- dlq


def _dead_letter(target: Target, fal_faults: Any, job_id: str) -> None:
    """A job message that fails every submit until it is dead-lettered (MAX_RECEIVES=2 here)."""
    fal_faults(submit={"rate_503": 1.0})
    send_message(target, job_message("fal-ai/flux/dev", {"prompt": "to the dlq"}, job_id=job_id))
    sqs = target.sqs()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = sqs.receive_message(
            QueueUrl=target.output("IntakeDLQUrl"), MaxNumberOfMessages=10, VisibilityTimeout=0
        ).get("Messages", [])
        if any(json.loads(m["Body"]).get("job_id") == job_id for m in found):
            fal_faults()
            return
        time.sleep(0.2)
    raise AssertionError(f"{job_id} never reached the intake DLQ")


def _letter(falflow: Any, job_id: str) -> dict[str, Any]:
    letters = as_json(falflow("dlq", "list", "--queue", "intake", "--json"))
    return next(letter for letter in letters if json.loads(letter["body"]).get("job_id") == job_id)


def test_dlq_list_shows_why_and_redrive_sends_it_back(falflow: Any, target: Target, fal_faults: Any) -> None:
    _dead_letter(target, fal_faults, "cli-dlq")

    letter = _letter(falflow, "cli-dlq")
    human = falflow("dlq", "list", "--queue", "intake")
    redriven = as_json(falflow("dlq", "redrive", "intake", "--message-id", letter["message_id"], "--json"))

    assert letter["error_type"]
    assert letter["error_message"]
    assert letter["receive_count"] >= 2
    assert letter["message_id"] in human.stdout
    assert [r["message_id"] for r in redriven] == [letter["message_id"]]
    assert redriven[0]["to_queue_url"] == target.output("IntakeQueueUrl")
    assert wait_for_job(target, "cli-dlq").state == JobState.COMPLETED
    remaining = as_json(falflow("dlq", "list", "--json"))
    assert letter["message_id"] not in [r["message_id"] for r in remaining]
    unknown = falflow("dlq", "redrive", "nowhere")
    assert unknown.exit_code == 1


def test_jobs_retry_takes_a_dlq_message_id_too(falflow: Any, target: Target, fal_faults: Any) -> None:
    _dead_letter(target, fal_faults, "cli-dlq-retry")
    letter = _letter(falflow, "cli-dlq-retry")

    retried = as_json(falflow("jobs", "retry", letter["message_id"], "--json"))

    assert retried["via"] == "dlq"
    assert wait_for_job(target, "cli-dlq-retry").state == JobState.COMPLETED


# ------------------------------------------------------------------------ models, usage, costs


def test_models_search_show_and_pricing(falflow: Any) -> None:
    found = as_json(falflow("models", "search", "flux", "--json"))
    shown = as_json(falflow("models", "show", "fal-ai/flux/dev", "--json"))
    prices = as_json(falflow("models", "pricing", "fal-ai/flux/dev", "fal-ai/stable-audio", "--json"))
    table = falflow("models", "search", "--category", "text-to-image")
    missing = falflow("models", "show", "fal-ai/no-such-model")

    assert "fal-ai/flux/dev" in [m["endpoint_id"] for m in found]
    assert shown["endpoint_id"] == "fal-ai/flux/dev"
    assert "openapi" in shown["openapi"] or "paths" in shown["openapi"]
    assert {p["endpoint_id"] for p in prices} == {"fal-ai/flux/dev", "fal-ai/stable-audio"}
    assert all(p["unit_price"] > 0 for p in prices)
    assert table.stdout.splitlines()[0].split()[:2] == ["ENDPOINT", "NAME"]
    assert missing.exit_code == 1


def test_usage_and_costs_from_the_collected_data(falflow: Any, stack: LocalStack, target: Target) -> None:
    sent = send_message(target, job_message("fal-ai/stable-audio", {"prompt": "costed"}, job_id="cli-costed"))
    wait_for_job(target, sent.job_id)
    assert stack.run_schedule("CollectFunction").ok

    usage = as_json(falflow("usage", "--since", "1d", "--json"))
    costs = as_json(falflow("costs", "--since", "1h", "--model", "fal-ai/stable-audio", "--json"))
    human = falflow("costs", "--since", "1h")

    audio = [line for line in usage["lines"] if line["endpoint_id"] == "fal-ai/stable-audio"]
    assert audio
    assert audio[0]["quantity"] > 0
    assert usage["last_collect_run"]["failed"] is False
    (line,) = costs
    assert line["model"] == "fal-ai/stable-audio"
    assert line["costed"] == line["jobs"] >= 1
    assert line["amount"] > 0
    assert human.stdout.splitlines()[0].split()[:2] == ["MODEL", "JOBS"]


def test_budget_commands_reach_the_local_stack_s_spend_table(falflow: Any) -> None:
    assert as_json(falflow("budget", "show", "--json"))["in_force"] == "template"
    try:
        raised = falflow("budget", "set", "--daily", "1000")
        assert raised.exit_code == 0, raised.output
        assert "daily#all" in raised.stdout
        assert "the local stack runs it every few seconds" in raised.stdout
    finally:
        assert as_json(falflow("budget", "reset", "--json"))["in_force"] == "template"


def test_commands_say_clearly_when_there_is_no_stack(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["jobs", "list", "--local-state", str(tmp_path / "none.json")])

    assert result.exit_code == 3
    assert "no local stack is running" in result.stderr
    assert "falflow local up" in result.stderr
