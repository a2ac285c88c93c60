"""`falflow jobs list|show|cancel|retry|backfill-shards`."""

from __future__ import annotations

import click

from falflow.jobs import Job, JobState, utcnow
from falflow.jobs.status import job_status_reason
from falflow_tools.commands.common import operator_command, parse_when, print_json
from falflow_tools.ops import jobs as ops
from falflow_tools.ops.render import money, seconds, table
from falflow_tools.ops.target import Target

STATE_NAMES = [state.value for state in JobState]


def job_rows(jobs: list[Job]) -> list[list[str]]:
    now = utcnow()
    return [
        [
            job.job_id,
            job.state.value,
            job.model or "-",
            job.state_changed_at[:19].replace("T", " "),
            seconds(ops.job_duration_s(job)),
            money(job.cost.amount, job.cost.currency) if job.cost else "-",
            str(len(job.outputs)) if job.outputs else ("error: " + job.error.type if job.error else "-"),
            job_status_reason(job, now),
        ]
        for job in jobs
    ]


JOB_HEADERS = ["JOB", "STATE", "MODEL", "CHANGED (UTC)", "DURATION", "COST", "OUTPUTS", "WHY / WAITING FOR"]


@click.group("jobs")
def jobs_group() -> None:
    """Look at jobs and act on them."""


@jobs_group.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(STATE_NAMES, case_sensitive=False),
    help="Repeatable.",
)
@click.option("--model", help="Only jobs of this fal endpoint id.")
@click.option("--since", help="Entered their state since: 30m, 2h, 7d or an ISO time.")
@click.option("--until", help="Entered their state before: 30m, 2h, 7d or an ISO time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@operator_command
def list_command(
    *,
    target: Target,
    states: tuple[str, ...],
    model: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Jobs, newest first."""
    found = ops.list_jobs(
        target,
        states=[JobState(s.upper()) for s in states],
        model=model,
        since=parse_when(since),
        until=parse_when(until),
        limit=limit,
    )
    if as_json:
        now = utcnow()
        print_json(
            [
                {**job.model_dump(mode="json", exclude_none=True), "why": job_status_reason(job, now)}
                for job in found
            ]
        )
        return
    click.echo(table(JOB_HEADERS, job_rows(found)) if found else "no jobs")


@jobs_group.command("show")
@click.argument("job_id")
@click.option("--expires", default=3600, show_default=True, help="Lifetime of the links, in seconds.")
@operator_command
def show_command(*, target: Target, job_id: str, expires: int, as_json: bool) -> None:
    """The whole record, its outputs and presigned links to them."""
    details = ops.show_job(target, job_id, link_expiry_s=expires)
    if as_json:
        print_json(details.to_json())
        return
    job = details.job
    fields = job.model_dump(mode="json", exclude_none=True, exclude={"outputs", "trail", "input"})
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        click.echo(f"{name.ljust(width)}  {value}")
    if job.input is not None:
        click.echo(f"{'input'.ljust(width)}  {job.input}")
    for entry in job.trail:
        click.echo(f"{'trail'.ljust(width)}  {entry.at} {entry.actor} {entry.action} {entry.reason}")
    if details.links:
        click.echo(f"\noutputs in s3://{details.output_bucket}/ (links valid {expires}s):")
        for key, url in details.links.items():
            click.echo(f"  {key}\n    {url}")


@jobs_group.command("cancel")
@click.argument("job_id")
@operator_command
def cancel_command(*, target: Target, job_id: str, as_json: bool) -> None:
    """Cancel at fal (through the stored cancel URL) and mark the job CANCELLED."""
    result = ops.cancel_job(target, job_id)
    if as_json:
        print_json({**result.__dict__, "state": result.state.value})
    else:
        click.echo(f"{job_id}: {result.state.value} ({result.message})")
    if result.outcome != "cancelled":
        raise SystemExit(1)


@jobs_group.command("retry")
@click.argument("job_or_message_id")
@operator_command
def retry_command(*, target: Target, job_or_message_id: str, as_json: bool) -> None:
    """Run a FAILED job again (as a new job), or send a DLQ message back by its message id."""
    result = ops.retry(target, job_or_message_id)
    if as_json:
        print_json(result.__dict__)
        return
    click.echo(f"{job_or_message_id}: {result.detail}")
    if result.new_job_id:
        click.echo(f"new job: {result.new_job_id}")


@jobs_group.command("backfill-shards")
@operator_command
def backfill_shards_command(*, target: Target, as_json: bool) -> None:
    """Give jobs written before the state index was sharded their `state_shard` (once, on upgrade)."""
    updated = target.job_store().backfill_state_shards()
    if as_json:
        print_json({"updated": updated})
    else:
        click.echo(f"{updated} job(s) given their state shard")
