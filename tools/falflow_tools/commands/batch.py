"""`falflow batch submit|list|show|results|cancel`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from falflow.batches.model import Batch
from falflow_tools.commands.common import operator_command, print_json
from falflow_tools.ops import batches as ops
from falflow_tools.ops.render import json_value, money, painted_state, table, use_colour
from falflow_tools.ops.target import EXIT_FAILED, Target

BATCH_HEADERS = [
    "BATCH",
    "STATE",
    "LINES",
    "INVALID",
    "SENT",
    "FINISHED/JOBS",
    "COST SO FAR",
    "ESTIMATE",
    "CREATED (UTC)",
    "FINISHED (UTC)",
]


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _time(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def batch_rows(batches: list[Batch]) -> list[list[str]]:
    return [
        [
            batch.name,
            batch.state.value,
            _count(batch.lines),
            str(batch.bad),
            str(batch.sent),
            f"{batch.finished}/{_count(batch.jobs)}",
            money(batch.cost_usd),
            money(batch.estimate_usd),
            _time(batch.created_at),
            _time(batch.finished_at),
        ]
        for batch in batches
    ]


def progress(batch: Batch) -> dict[str, Any]:
    """What `batch show` prints: the record's fields that say how far the batch got."""
    shown: dict[str, Any] = {
        "name": batch.name,
        "state": batch.state.value,
        "source": batch.source,
        "lines": batch.lines,
        "invalid": batch.bad,
        "sent": batch.sent,
        "not_sent": batch.unsent,
        "jobs": batch.jobs,
        "finished": batch.finished,
        "finished_by_state": batch.tally,
        "pending": batch.pending(),
        "cost_so_far_usd": batch.cost_usd,
        "estimate_usd": batch.estimate_usd,
        "unpriced_lines": batch.unpriced_lines,
        "budget_usd": batch.budget_usd,
        "error": batch.error,
        "outputs": batch.outputs,
        "created_at": batch.created_at,
        "fanned_out_at": batch.fanned_out_at,
        "cancel_requested_at": batch.cancel_requested_at,
        "resumed": f"{batch.resumes} time(s), last at {batch.resumed_at}" if batch.resumes else None,
        "finished_at": batch.finished_at,
    }
    return {name: value for name, value in shown.items() if value not in (None, {}, [])}


# How many bad lines `batch show` names (the record keeps up to 500; --json has them all).
SHOWN_INVALID = 5


@click.group("batch")
def batch_group() -> None:
    """Batches: a JSONL manifest fanned out into jobs, answered with results.jsonl."""


@batch_group.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Name the batch (sent as a batch message; the upload goes under manifests/).")
@click.option("--prefix", help="Where the manifest goes in the input bucket (default: BatchesPrefix).")
@operator_command
def submit_command(
    *, target: Target, file: Path, name: str | None, prefix: str | None, as_json: bool
) -> None:
    """Upload FILE (a .jsonl manifest) to the input bucket; its notification starts the batch, or with
    --name a batch message naming it does."""
    submitted = ops.submit_batch(target, file.read_bytes(), file_name=file.name, prefix=prefix, name=name)
    if as_json:
        print_json(submitted.to_json())
        return
    click.echo(f"batch {submitted.name} (via {submitted.via}: {submitted.manifest})")
    click.echo(
        f"follow it with `falflow batch show {submitted.name}`; "
        f"`falflow batch results {submitted.name}` once it is done"
    )


@batch_group.command("list")
@operator_command
def list_command(*, target: Target, as_json: bool) -> None:
    """Batches, newest first."""
    found = ops.list_batches(target)
    if as_json:
        print_json([progress(batch) for batch in found])
        return
    click.echo(table(BATCH_HEADERS, batch_rows(found)) if found else "no batches")


@batch_group.command("show")
@click.argument("name")
@operator_command
def show_command(*, target: Target, name: str, as_json: bool) -> None:
    """A batch's record and how far it got."""
    batch = ops.get_batch(target, name)
    if as_json:
        print_json({**progress(batch), "invalid_lines": batch.invalid})
        return
    fields = progress(batch)
    width = max(len(field) for field in fields)
    colour = use_colour()
    for field, value in fields.items():
        shown = painted_state(value, colour=colour) if field == "state" else json_value(value)
        click.echo(f"{field.ljust(width)}  {shown}", color=colour)
    for bad in batch.invalid[:SHOWN_INVALID]:
        click.echo(f"  line {bad['line']}: {bad['type']}: {bad['message']}")
    if batch.bad > SHOWN_INVALID:
        click.echo(f"  … and {batch.bad - SHOWN_INVALID} more (--json lists them all)")


@batch_group.command("results")
@click.argument("name")
@click.option("--partial", is_flag=True, help="Each line's result as it stands now (while it runs too).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
@operator_command
def results_command(*, target: Target, name: str, partial: bool, output: Path | None, as_json: bool) -> None:
    """A finished batch's results.jsonl (one line per manifest line, in its order)."""
    chunks = ops.partial_results(target, name) if partial else ops.final_results(target, name)
    if output is None:
        stdout = click.get_binary_stream("stdout")
        for chunk in chunks:
            stdout.write(chunk)
        stdout.flush()
        return
    written = ops.write_results(chunks, output)
    click.echo(f"{written} bytes to {output}", err=True)


@batch_group.command("cancel")
@click.argument("name")
@operator_command
def cancel_command(*, target: Target, name: str, as_json: bool) -> None:
    """Stop the batch: lines not sent never are; its jobs not sent, or queued at fal, are cancelled
    (running ones finish). CANCELLED, with its results, once every line is final."""
    report = ops.cancel_batch(target, name)
    if as_json:
        print_json(report.to_json())
    else:
        click.echo(f"batch {name}: {report.state.value}")
        for outcome, count in sorted(report.counts.items()):
            click.echo(f"  {outcome.replace('_', ' ')}: {count}")
        for failure in report.failures:
            click.echo(f"  {failure['job_id']}: {failure['message']}")
    if report.failures:
        raise SystemExit(EXIT_FAILED)
