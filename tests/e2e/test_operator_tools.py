"""The commands that follow and fetch: jobs watch, jobs download, logs, local run, and what
submit and models show tell a person — each against the running local stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from falflow.jobs import JobState
from falflow_tools.cli import main
from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.submit import job_message, send_message
from falflow_tools.ops.target import Target
from tests.e2e.conftest import RECONCILE_AFTER_S, state_file, wait_for_job

pytestmark = pytest.mark.e2e

FALFLOW = [sys.executable, "-m", "falflow_tools.cli"]
# A model no other test sends, and active in the emulator's catalogue: once a collect run has
# loaded it, submit rejects deprecated models (fal-ai/fast-sdxl), whichever test runs first.
WORKFLOW = "workflows/falflow/text-to-image"


@pytest.fixture
def falflow(stack: LocalStack) -> Any:
    def run(*args: str) -> Result:
        return CliRunner().invoke(main, [*args, "--local-state", str(state_file(stack))])

    return run


def start(stack: LocalStack, *args: str) -> subprocess.Popen[str]:
    """`falflow …` as its own process (for commands that keep running)."""
    return subprocess.Popen(
        [*FALFLOW, *args, "--local-state", str(state_file(stack))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Output:
    """Every line a process prints, read as it comes; `wait_for` looks at all of them so far."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._process = process
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, needle: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if needle in line:
                    return line
            time.sleep(0.1)
        raise AssertionError(f"no line with {needle!r} in:\n" + "\n".join(self.lines))


def wait_until_open(pid: int, path: Path, timeout_s: float = 60) -> None:
    """Until process `pid` holds `path` open (a follower that has not opened it would miss lines)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if Path(os.readlink(fd)) == path.resolve():
                    return
            except OSError:
                continue
        time.sleep(0.1)
    raise AssertionError(f"process {pid} never opened {path}")


# ------------------------------------------------------------------------------- jobs watch


def test_jobs_watch_prints_each_state_until_final(falflow: Any, target: Target) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "watched"}, job_id="cli-watched"))

    result = falflow("jobs", "watch", sent.job_id, "--every", "0.1", "--timeout", "60")

    assert result.exit_code == 0, result.output
    lines = [line.split(maxsplit=2) for line in result.stdout.splitlines()]
    assert lines[-1][1:] == ["cli-watched", "COMPLETED"]
    recorded = [line for line in lines if line[2] != "NOT RECORDED"]  # before submit has recorded it
    assert all(elapsed.endswith("s") for elapsed, _, _ in recorded)  # the elapsed time leads
    states = [state for _, _, state in lines]
    assert len(states) == len(set(states))  # one line per change


def test_jobs_watch_exits_1_for_a_job_that_did_not_complete(falflow: Any, target: Target) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "x", "num_images": 9}))

    result = falflow("jobs", "watch", sent.job_id, "--every", "0.1", "--timeout", "60")

    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1].split()[-1] in ("FAILED", "REJECTED")


def test_watch_all_follows_unfinished_jobs_and_local_run_reconcile_finishes_them(
    stack: LocalStack, target: Target, fal_faults: Any, falflow: Any
) -> None:
    fal_faults(webhook={"drop_rate": 1.0})  # nobody calls back: the jobs wait for the reconciler
    ids = [f"cli-watch-all-{n}" for n in range(2)]
    for job_id in ids:
        send_message(target, job_message(WORKFLOW, {"prompt": job_id}, job_id=job_id))
    for job_id in ids:
        wait_for_job(target, job_id, {JobState.SUBMITTED, JobState.IN_PROGRESS})
    watching = start(stack, "jobs", "watch", "--all", "--model", WORKFLOW, "--every", "0.2")
    output = Output(watching)
    for job_id in ids:
        output.wait_for(job_id)
    time.sleep(RECONCILE_AFTER_S)  # until the jobs count as silent

    reconciled = falflow("local", "run", "reconcile", "--json")

    assert reconciled.exit_code == 0, reconciled.output
    run = json.loads(reconciled.stdout)
    assert run["function"] == "ReconcileFunction"
    assert run["error"] is None
    for job_id in ids:
        output.wait_for(f"{job_id}  COMPLETED")
    assert watching.wait(30) == 0
    assert run["payload"]["examined"] >= len(ids)


def test_watch_all_with_nothing_unfinished_says_so(falflow: Any) -> None:
    result = falflow("jobs", "watch", "--all", "--model", "fal-ai/no-jobs-of-this")

    assert result.exit_code == 0
    assert result.stdout.strip() == "no unfinished jobs"


# ---------------------------------------------------------------------------- jobs download


def test_jobs_download_writes_every_output_and_the_result(
    falflow: Any, stack: LocalStack, target: Target, tmp_path: Path
) -> None:
    sent = send_message(
        target, job_message("fal-ai/flux/dev", {"prompt": "two", "num_images": 2}, job_id="cli-download")
    )
    job = wait_for_job(target, sent.job_id)
    assert job.state == JobState.COMPLETED

    result = falflow("jobs", "download", "cli-download", str(tmp_path))

    assert result.exit_code == 0, result.output
    written = {Path(line) for line in result.stdout.splitlines()}
    folder = tmp_path / "cli-download"
    assert written == {folder / "image-0.png", folder / "image-1.png", folder / "result.json"}
    bucket = target.output("OutputBucketName")
    for key in [*job.outputs, job.result_key]:
        assert key is not None
        stored = stack.s3().get_object(Bucket=bucket, Key=key)["Body"].read()
        assert (folder / Path(key).name).read_bytes() == stored
    assert json.loads((folder / "result.json").read_text())["job_id"] == "cli-download"


def test_jobs_download_of_a_job_without_outputs_says_why(
    falflow: Any, target: Target, tmp_path: Path
) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "x", "num_images": 9}))
    job = wait_for_job(target, sent.job_id)

    result = falflow("jobs", "download", sent.job_id, str(tmp_path))

    assert result.exit_code == 1
    assert f"has no stored outputs (it is {job.state.value})" in result.stderr
    assert not (tmp_path / sent.job_id).exists()


# ------------------------------------------------------------------------------------- logs


def test_logs_show_a_functions_lines_for_people_or_raw(falflow: Any, target: Target) -> None:
    sent = send_message(target, job_message("fal-ai/flux/dev", {"prompt": "logged"}, job_id="cli-logged"))
    wait_for_job(target, sent.job_id)

    readable = falflow("logs", "submit", "--lines", "500")
    raw = falflow("logs", "SubmitFunction", "--lines", "3", "--raw")
    unknown = falflow("logs", "billing")

    assert readable.exit_code == 0, readable.output
    accepted = [line for line in readable.stdout.splitlines() if "job_id=cli-logged" in line]
    assert any(" INFO    job accepted " in line for line in accepted)
    assert len(raw.stdout.splitlines()) == 3
    assert all(isinstance(json.loads(line), dict) for line in raw.stdout.splitlines())
    assert unknown.exit_code == 1
    assert "no function 'billing'" in unknown.stderr


def test_logs_follow_prints_new_lines_as_they_come(stack: LocalStack, target: Target) -> None:
    following = start(stack, "logs", "store", "--follow", "--lines", "0")
    try:
        output = Output(following)
        wait_until_open(following.pid, stack.config.log_dir / "StoreFunction.log")  # type: ignore[operator]
        send_message(target, job_message("fal-ai/flux/dev", {"prompt": "followed"}, job_id="cli-followed"))

        line = output.wait_for("job_id=cli-followed")
    finally:
        following.terminate()
        following.wait(10)

    assert line.split()[2] in ("INFO", "DEBUG", "WARNING")


# -------------------------------------------------------------------------------- local run


def test_local_run_collect_prices_finished_jobs_now(falflow: Any, target: Target) -> None:
    sent = send_message(
        target, job_message("fal-ai/stable-audio", {"prompt": "priced now"}, job_id="cli-run")
    )
    assert wait_for_job(target, sent.job_id).cost is None

    result = falflow("local", "run", "collect")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("CollectFunction ran in ")
    job = target.job_store().get("cli-run")
    assert job is not None
    assert job.cost is not None
    assert job.cost.amount > 0


def test_local_run_without_a_stack_says_how_to_start_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["local", "run", "collect", "--local-state", str(tmp_path / "x.json")])

    assert result.exit_code == 3
    assert "falflow local up" in result.stderr


# ---------------------------------------------------------------------- submit, models show


def test_submit_without_input_names_the_models_required_fields(falflow: Any) -> None:
    result = falflow("submit", "fal-ai/flux/dev")

    assert result.exit_code == 2
    assert "--input is required: fal-ai/flux/dev needs prompt (string)" in result.stderr


def test_submitting_the_same_job_twice_says_it_already_exists(falflow: Any, target: Target) -> None:
    args = ("submit", "fal-ai/flux/dev", "--input", '{"prompt": "twice"}', "--job-id", "cli-twice")
    first = falflow(*args)
    wait_for_job(target, "cli-twice")

    second = falflow(*args)

    assert first.exit_code == 0, first.output
    assert second.exit_code == 1
    assert "job cli-twice already exists (COMPLETED); nothing was sent" in second.stderr


def test_models_show_lists_the_input_fields(falflow: Any) -> None:
    human = falflow("models", "show", "fal-ai/flux/dev")
    shown = json.loads(falflow("models", "show", "fal-ai/flux/dev", "--json").stdout)

    rows = {
        line.split()[0]: line.split()[1:] for line in human.stdout.split("input fields:")[1].splitlines()[3:]
    }
    assert rows["prompt"] == ["string", "yes"]
    assert rows["num_images"] == ["integer", "1"]
    assert "paths" not in human.stdout  # not the OpenAPI document
    fields = {field["name"]: field for field in shown["input_fields"]}
    assert fields["prompt"] == {"name": "prompt", "type": "string", "required": True}
    assert fields["num_inference_steps"]["default"] == 28
    assert "paths" in shown["openapi"]
