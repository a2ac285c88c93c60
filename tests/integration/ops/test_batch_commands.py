"""`falflow batch submit|list|show|results|cancel` on moto's server with the real submit handler
and the fal emulator: a manifest uploaded by the command starts a batch, its progress and partial
results read back while it runs, its results after the reconcile side answers it, and a cancel
that stops lines not sent and cancels at fal the jobs queued there."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from falflow.batches.model import Batch, BatchState
from falflow.jobs import JobCost, JobError, JobState, utcnow
from falflow.jobs.batch import batch_job_id
from falflow.settings import FalSettings
from falflow_tools.cli import main
from falflow_tools.emulator import RunningEmulator
from falflow_tools.local.resources import template_outputs
from falflow_tools.ops.batches import batch_results
from falflow_tools.ops.target import Target
from tests.fixtures.fal_emulator import EmulatorFactory
from tests.integration.submit.conftest import SubmitHarness

FLUX = "fal-ai/flux/dev"
CONTINUE = '"batch_continue"'


@pytest.fixture
def submit_fal(fal_emulator_factory: EmulatorFactory) -> RunningEmulator:
    """A fal whose queue holds every job for a minute: a batch's jobs stay queued there."""
    return fal_emulator_factory(queue_wait_s=60.0)


@pytest.fixture
def submit_env() -> dict[str, str]:
    return {"BATCH_CHUNK_LINES": "3"}


@pytest.fixture
def target(submit: SubmitHarness, moto_server_url: str) -> Target:
    """The stack as `--stack` reads it, on moto's server, with the emulator as fal (its API key in
    the stack's secret, as `submit` stored it)."""
    fal = submit.fal
    return Target(
        name="stack test",
        region="us-east-1",
        outputs=template_outputs(submit.stack),
        parameters={k: str(v) for k, v in submit.stack.resolver.parameters.items()},
        fal=FalSettings.model_validate(
            {k.removeprefix("FAL_").lower(): v for k, v in fal.env().items() if k != "FAL_JWKS_URLS"}
        ),
        endpoint_url=moto_server_url,
    )


@pytest.fixture
def falflow(target: Target, monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(*args: str) -> Result:
        monkeypatch.setattr("falflow_tools.commands.common.resolve_target", lambda *a, **k: target)
        return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})

    return run


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def manifest(tmp_path: Path, lines: int, *, bad: tuple[int, ...] = ()) -> Path:
    rows = [
        "{not json"
        if n in bad
        else json.dumps({"custom_id": f"c{n}", "model": FLUX, "input": {"prompt": f"p{n}"}})
        for n in range(lines)
    ]
    path = tmp_path / "cats.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def split(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The job messages of a fan-out's chunk, and its continuation."""
    continuations = [r for r in records if CONTINUE in r["body"]]
    return [r for r in records if CONTINUE not in r["body"]], continuations


def drain(submit: SubmitHarness) -> None:
    while records := submit.notifications():
        assert not submit.deliver(records).left


def the_batch(target: Target) -> Batch:
    [batch] = list(target.batch_store().list_batches())
    return batch


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@dataclass
class Running:
    name: str
    job_ids: list[str]


@pytest.fixture
def running(submit: SubmitHarness, falflow: Any, tmp_path: Path) -> Running:
    """A 6-line manifest (line 3 bad) uploaded by `batch submit` and fanned out: five jobs queued."""
    printed = ok(falflow("batch", "submit", str(manifest(tmp_path, 6, bad=(2,))), "--json"))
    name = json.loads(printed.stdout)["name"]
    drain(submit)
    return Running(name, [batch_job_id(name, f"c{n}") for n in (0, 1, 3, 4, 5)])


def test_submit_uploads_the_manifest_and_its_notification_starts_the_named_batch(
    running: Running, target: Target, submit: SubmitHarness
) -> None:
    batch = the_batch(target)
    assert batch.name == running.name  # the name printed is the one the fan-out gave it
    assert batch.source.startswith(f"s3://{submit.bucket}/batches/cats.jsonl?versionId=")
    assert (batch.state, batch.lines, batch.bad, batch.sent) == (BatchState.RUNNING, 6, 1, 5)
    assert {job.state for job in submit.store.get_many(running.job_ids).values()} == {JobState.SUBMITTED}


def test_submit_with_a_name_sends_a_batch_message_and_starts_one_batch(
    submit: SubmitHarness, falflow: Any, target: Target, tmp_path: Path
) -> None:
    shown = ok(falflow("batch", "submit", str(manifest(tmp_path, 2)), "--name", "my-cats"))
    assert shown.output.startswith("batch my-cats (via sqs: s3://")
    assert "falflow batch show my-cats" in shown.output

    drain(submit)

    batch = the_batch(target)  # one batch: the upload's own notification started none
    assert (batch.name, batch.state, batch.sent) == ("my-cats", BatchState.RUNNING, 2)
    assert "/manifests/cats.jsonl" in batch.source
    refused = falflow("batch", "submit", str(manifest(tmp_path, 1)), "--name", "x", "--prefix", "batches/")
    assert refused.exit_code == 1
    assert "second batch" in refused.output


def test_list_and_show_tell_how_far_the_batch_got(
    running: Running, falflow: Any, submit: SubmitHarness
) -> None:
    assert submit.store.fail(running.job_ids[0], JobError(type="boom", message="no"), now=utcnow())
    # What the collect function records (falflow.collect.costs) adds up on the batch.
    for job_id, amount in zip(running.job_ids[1:3], (0.025, 0.5), strict=True):
        cost = JobCost(amount=amount, source="estimate")
        assert submit.store.record_cost(job_id, cost, replace_existing=False)

    listed = ok(falflow("batch", "list")).output
    row = next(line for line in listed.splitlines() if line.startswith(running.name))
    assert row.split()[1:7] == ["RUNNING", "6", "1", "5", "1/5", "$0.525"]
    [as_json] = json.loads(ok(falflow("batch", "list", "--json")).stdout)
    assert (as_json["name"], as_json["finished"], as_json["pending"]) == (running.name, 1, 4)

    shown = ok(falflow("batch", "show", running.name)).output
    assert "line 3: malformed_json" in shown
    assert '{"FAILED": 1}' in shown
    record = json.loads(ok(falflow("batch", "show", running.name, "--json")).stdout)
    assert (record["jobs"], record["finished_by_state"], record["pending"]) == (5, {"FAILED": 1}, 4)
    assert record["cost_so_far_usd"] == pytest.approx(0.525)
    assert [bad["line"] for bad in record["invalid_lines"]] == [3]
    missing = falflow("batch", "show", "nope")
    assert missing.exit_code == 1
    assert "no batch 'nope'" in missing.output


def test_results_are_partial_while_it_runs_and_the_answer_once_it_is_done(
    running: Running, falflow: Any, target: Target, submit: SubmitHarness, tmp_path: Path
) -> None:
    refused = falflow("batch", "results", running.name)
    assert refused.exit_code == 1
    assert "--partial" in refused.output
    partial = jsonl(ok(falflow("batch", "results", running.name, "--partial")).stdout)
    assert [(row["line"], row["state"]) for row in partial] == [
        (1, "SUBMITTED"),
        (2, "SUBMITTED"),
        (3, "INVALID"),
        (4, "SUBMITTED"),
        (5, "SUBMITTED"),
        (6, "SUBMITTED"),
    ]

    now = utcnow()
    assert submit.store.fail(running.job_ids[0], JobError(type="boom", message="no"), now=now)
    for job_id in running.job_ids[1:]:
        assert submit.store.cancel(job_id, now=now)
    assert batch_results(target).finish_ready()["batches_finished"] == 1

    out = tmp_path / "results.jsonl"
    ok(falflow("batch", "results", running.name, "--output", str(out)))
    final = jsonl(out.read_text())
    assert [row["state"] for row in final] == [
        "FAILED",
        "CANCELLED",
        "INVALID",
        "CANCELLED",
        "CANCELLED",
        "CANCELLED",
    ]
    assert jsonl(ok(falflow("batch", "results", running.name)).stdout) == final


def test_cancel_cancels_queued_jobs_at_fal_and_lines_not_sent_never_reach_it(
    submit: SubmitHarness, falflow: Any, target: Target, tmp_path: Path
) -> None:
    """Seven lines in chunks of three: the first chunk's jobs are queued at fal, the second chunk's
    messages wait in the intake queue, the last line is not fanned out yet when the batch is
    cancelled."""
    name = json.loads(ok(falflow("batch", "submit", str(manifest(tmp_path, 7)), "--json")).stdout)["name"]
    submit.deliver(submit.notifications())  # validated; chunk 1 sent
    queued, [continuation] = split(submit.notifications())
    assert not submit.deliver(queued).left  # chunk 1 at fal
    assert not submit.deliver([continuation]).left  # chunk 2 sent to the intake queue
    waiting, [last] = split(submit.notifications())
    ids = [batch_job_id(name, f"c{n}") for n in range(7)]

    cancelled = ok(falflow("batch", "cancel", name, "--json"))

    report = json.loads(cancelled.stdout)
    assert (report["state"], report["counts"]) == ("CANCELLING", {"cancelled_at_fal": 3, "not_recorded": 4})
    assert [view.cancel_requested for i in ids[:3] for view in submit.fal_jobs_for(i)] == [True] * 3
    # What was still to send: a new container (its batch reads not cached) and the next step.
    later = submit.another_container()
    assert not submit.deliver(waiting, handler=later).left
    assert not submit.deliver([last], handler=later).left
    assert [submit.fal_jobs_for(i) for i in ids[3:]] == [[]] * 4
    jobs = submit.store.get_many(ids)
    assert Counter(job.state for job in jobs.values()) == {JobState.CANCELLED: 6}

    assert batch_results(target).finish_ready()["batches_finished"] == 1
    batch = target.batch_store().get(name)
    assert batch is not None
    assert (batch.state, batch.unsent, batch.tally) == (BatchState.CANCELLED, 1, {"CANCELLED": 6})
    rows = jsonl(ok(falflow("batch", "results", name)).stdout)
    assert [row["state"] for row in rows] == ["CANCELLED"] * 6 + ["NOT_SENT"]
    again = falflow("batch", "cancel", name)
    assert again.exit_code == 1
    assert "already CANCELLED" in again.output
