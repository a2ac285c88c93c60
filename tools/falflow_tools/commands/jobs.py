"""`falflow jobs list|show|watch|download|cancel|retry|release|backfill-shards`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.text import Text

from falflow.jobs import Job, JobState, utcnow
from falflow.jobs.status import job_status_reason
from falflow_tools.commands.common import operator_command, parse_when, print_json
from falflow_tools.ops import jobs as ops
from falflow_tools.ops.render import json_value, money, painted_state, seconds, table, use_colour
from falflow_tools.ops.target import EXIT_FAILED, OpsError, Target
from falflow_tools.ops.watch import JobWatch, Seen

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
    fields = {name: value for name, value in details.fields().items() if name not in ("outputs", "trail")}
    width = max(len(name) for name in fields)
    colour = use_colour()
    for name, value in fields.items():
        shown = painted_state(value, colour=colour) if name == "state" else json_value(value)
        click.echo(f"{name.ljust(width)}  {shown}", color=colour)
    for entry in job.trail:
        click.echo(f"{'trail'.ljust(width)}  {entry.at} {entry.actor} {entry.action} {entry.reason}")
    if details.links:
        click.echo(f"\noutputs in s3://{details.output_bucket}/ (links valid {expires}s):")
        for key, url in details.links.items():
            click.echo(f"  {key}\n    {url}")


WATCH_HEADERS = ["JOB", "STATE", "MODEL", "ELAPSED"]


def _watch_rows(seen: list[Seen]) -> list[list[str]]:
    return [[s.job_id, s.state, (s.job.model if s.job else None) or "-", seconds(s.elapsed_s)] for s in seen]


@jobs_group.command("watch")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "every_unfinished", is_flag=True, help="Every unfinished job (and new ones).")
@click.option("--model", help="With --all: only jobs of this fal endpoint id.")
@click.option("--every", default=1.0, show_default=True, help="Seconds between looks.")
@click.option("--timeout", default=0.0, show_default=True, help="Give up after this many seconds (0: never).")
@operator_command
def watch_command(
    *,
    target: Target,
    job_ids: tuple[str, ...],
    every_unfinished: bool,
    model: str | None,
    every: float,
    timeout: float,
    as_json: bool,
) -> None:
    """Follow JOB_IDS (or --all) until every one is final; exit 1 unless all COMPLETED.

    On a terminal the table updates in place; otherwise each state change is one line
    (elapsed time, job, state).
    """
    if not job_ids and not every_unfinished:
        raise click.UsageError("give one or more JOB_IDS, or --all")
    watch = JobWatch(target, job_ids, every_unfinished=every_unfinished, model=model)
    deadline = time.monotonic() + timeout if timeout else None
    live = use_colour() and not as_json
    seen = watch.poll()
    if every_unfinished and not seen:
        click.echo("no unfinished jobs")
        return
    if live:
        with Live(console=Console(), auto_refresh=False) as screen:
            while True:
                screen.update(_live_table(seen), refresh=True)
                if watch.done(seen) or _past(deadline):
                    break
                time.sleep(every)
                seen = watch.poll()
    else:
        seen = _print_changes(watch, seen, every=every, deadline=deadline, as_json=as_json)
    if not watch.done(seen):
        raise OpsError(f"not every job was final within {timeout:g}s")
    if any(entry.state != JobState.COMPLETED.value for entry in seen):
        raise SystemExit(EXIT_FAILED)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _live_table(seen: list[Seen]) -> Text:
    return Text.from_ansi(table(WATCH_HEADERS, _watch_rows(seen), colour=True))


def _print_changes(
    watch: JobWatch, seen: list[Seen], *, every: float, deadline: float | None, as_json: bool
) -> list[Seen]:
    last: dict[str, str] = {}
    while True:
        for entry, row in zip(seen, _watch_rows(seen), strict=True):
            if last.get(entry.job_id) != entry.state:
                last[entry.job_id] = entry.state
                if as_json:
                    # One JSON object a line, as each change happens.
                    click.echo(json.dumps({"job_id": entry.job_id, "state": entry.state, "elapsed": row[3]}))
                else:
                    click.echo(f"{row[3]:>7}  {entry.job_id}  {entry.state}")
        if watch.done(seen) or _past(deadline):
            return seen
        time.sleep(every)
        seen = watch.poll()


@jobs_group.command("download")
@click.argument("job_id")
@click.argument("directory", required=False, type=click.Path(path_type=Path, file_okay=False))
@operator_command
def download_command(*, target: Target, job_id: str, directory: Path | None, as_json: bool) -> None:
    """Every output of JOB_ID and its result.json into DIRECTORY/JOB_ID/ (default: here)."""
    written = ops.download_outputs(target, job_id, directory or Path())
    if as_json:
        print_json([str(path) for path in written])
        return
    for path in written:
        click.echo(str(path))


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


@jobs_group.command("release")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "every_held", is_flag=True, help="Every HELD job, oldest first.")
@operator_command
def release_command(*, target: Target, job_ids: tuple[str, ...], every_held: bool, as_json: bool) -> None:
    """Send HELD jobs (JOB_IDS, or --all) on now, without checking the caps; exit 1 unless all
    were released.

    Each job's estimate is still charged to its caps. A reconcile run releases held jobs on its own
    once they fit.
    """
    if bool(job_ids) == every_held:
        raise click.UsageError("give one or more JOB_IDS, or --all")
    results = ops.release_jobs(target, job_ids, every_held=every_held)
    if as_json:
        print_json([result.__dict__ for result in results])
    elif not results:
        click.echo("no held jobs")
    else:
        for result in results:
            click.echo(f"{result.job_id}: {result.outcome} ({result.detail})")
    if not all(result.released for result in results):
        raise SystemExit(EXIT_FAILED)


@jobs_group.command("backfill-shards")
@operator_command
def backfill_shards_command(*, target: Target, as_json: bool) -> None:
    """Give jobs written before the state index was sharded their `state_shard` (once, on upgrade)."""
    updated = target.job_store().backfill_state_shards()
    if as_json:
        print_json({"updated": updated})
    else:
        click.echo(f"{updated} job(s) given their state shard")
