"""No job lost, none done twice: the local stack under fal's faults (and optionally worker kills),
accounted for from ground truth. The table is printed whether the run passes or not."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from rich.console import Console

from falflow_tools.local.stack import LocalStack
from falflow_tools.ops.target import target_for_local
from tests.reliability.accounting import account, injected_faults
from tests.reliability.harness import (
    RunPlan,
    WorkerKiller,
    Workload,
    fault_mix,
    stack_config,
    wait_until_settled,
)

pytestmark = pytest.mark.reliability


def test_every_job_ends_once_with_its_outputs_stored_once_under_faults(
    plan: RunPlan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phases: dict[str, float] = {}
    clock = time.monotonic()
    with LocalStack(stack_config(tmp_path)) as stack:
        assert stack.emulator is not None
        assert stack.aws_server is not None
        phases["start the stack"] = time.monotonic() - clock
        stack.emulator.control.set_faults(fault_mix(plan.seed))
        target = target_for_local(stack.state())
        workload = Workload(plan)
        clock = time.monotonic()
        killer = WorkerKiller(stack, plan.seed) if plan.kills else None
        with killer or contextlib.nullcontext():
            workload.send(target)
            # Kills land while most of the batch is in flight; the rest of the run has whole workers.
            wait_until_settled(stack, workload.job_ids, enough=0.7 if killer else 1.0)
        wait_until_settled(stack, workload.job_ids)
        phases["run the jobs"] = time.monotonic() - clock
        clock = time.monotonic()
        stack.emulator.control.set_faults()  # the accounting reads fal's record without faults
        # One more reconcile run: its sweep removes dead letters of jobs that completed last.
        stack.run_schedule("ReconcileFunction")
        injected = injected_faults(stack)
        injected["S3 notification delivered twice"] = stack.aws_server.stats().s3_notifications
        if killer is not None:
            for function, kills in killer.kills.items():
                injected[f"SIGKILL {function} worker"] = kills
        accounting = account(stack, workload.job_ids, injected=injected)
        phases["account"] = time.monotonic() - clock
        clock = time.monotonic()
    phases["stop the stack"] = time.monotonic() - clock

    timing = ", ".join(f"{what} {seconds:.0f} s" for what, seconds in phases.items())
    title = f"{plan.jobs} jobs, seed {plan.seed}{', with kills' if plan.kills else ''} ({timing})"
    with capsys.disabled():
        accounting.print(title, Console(width=100))
    assert accounting.problems() == []
