"""`falflow usage` and `falflow costs`."""

from __future__ import annotations

import click

from falflow.jobs import utcnow
from falflow_tools.commands.common import operator_command, parse_when, print_json
from falflow_tools.ops import usage as ops
from falflow_tools.ops.render import money, table
from falflow_tools.ops.target import Target

_SINCE_HELP = "From: 30m, 2h, 7d or an ISO time."


@click.command("usage")
@click.option("--since", default="7d", show_default=True, help=_SINCE_HELP)
@click.option("--until", help="To: 30m, 2h, 7d ago or an ISO time (default: now).")
@click.option("--model", help="Only this fal endpoint id.")
@operator_command
def usage_command(*, target: Target, since: str, until: str | None, model: str | None, as_json: bool) -> None:
    """fal usage as the collect function stored it (needs the ADMIN key on the stack)."""
    summary = ops.usage(target, since=parse_when(since) or utcnow(), until=parse_when(until), model=model)
    if as_json:
        print_json(summary.to_json())
        return
    if summary.lines:
        rows = [[u.endpoint_id, u.unit, f"{u.quantity:g}", money(u.cost, u.currency)] for u in summary.lines]
        click.echo(table(["ENDPOINT", "UNIT", "QUANTITY", "COST"], rows))
        total = sum(line.cost or 0.0 for line in summary.lines)
        click.echo(f"\ntotal {money(total)}")
    else:
        click.echo("no usage collected in this window")
    run = summary.last_run
    if run is None:
        click.echo("the collect function has not run yet")
    else:
        state = "failed" if run.failed else "ok"
        skipped = [p.name for p in run.parts if p.outcome.value == "skipped"]
        note = f"; skipped: {', '.join(skipped)}" if skipped else ""
        click.echo(f"last collect run {run.finished_at[:19]} ({state}{note})")


@click.command("costs")
@click.option("--since", default="7d", show_default=True, help=_SINCE_HELP)
@click.option("--until", help="To: 30m, 2h, 7d ago or an ISO time (default: now).")
@click.option("--model", help="Only this fal endpoint id.")
@click.option(
    "--variance", is_flag=True, help="Compare the jobs' submit-time estimates with what fal billed for them."
)
@operator_command
def costs_command(
    *, target: Target, since: str, until: str | None, model: str | None, variance: bool, as_json: bool
) -> None:
    """What finished jobs cost, per model (job costs written by the collect function)."""
    start, end = parse_when(since) or utcnow(), parse_when(until)
    if variance:
        _print_variance(ops.cost_variance(target, since=start, until=end, model=model), as_json=as_json)
        return
    lines = ops.costs(target, since=start, until=end, model=model)
    if as_json:
        print_json([line.to_json() for line in lines])
        return
    if not lines:
        click.echo("no finished jobs in this window")
        return
    rows = [
        [
            c.model,
            str(c.jobs),
            str(c.costed),
            money(c.amount, c.currency),
            ", ".join(f"{k} {v}" for k, v in c.sources.items()),
        ]
        for c in lines
    ]
    click.echo(table(["MODEL", "JOBS", "WITH COST", "TOTAL", "FROM"], rows))
    pending = sum(line.jobs - line.costed for line in lines)
    click.echo(
        f"\ntotal {money(sum(line.amount for line in lines))}"
        + (f" ({pending} job(s) not costed yet)" if pending else "")
    )


def _print_variance(lines: list[ops.VarianceLine], *, as_json: bool) -> None:
    if as_json:
        print_json([line.to_json() for line in lines])
        return
    if not lines:
        click.echo("no finished jobs with an estimate in this window")
        return
    rows = [
        [
            v.model,
            str(v.compared),
            money(v.estimated),
            money(v.billed),
            ("-" if v.difference < 0 else "+" if v.difference else "") + money(abs(v.difference)),
            "-" if v.ratio is None else f"{v.ratio:.2f}",
            str(v.estimate_only),
        ]
        for v in lines
    ]
    click.echo(
        table(["MODEL", "BILLED JOBS", "ESTIMATED", "BILLED", "DIFFERENCE", "RATIO", "ESTIMATE ONLY"], rows)
    )
    click.echo(
        "\nRATIO is billed / estimated over the jobs with both: 1.00 means the estimates (and so the "
        "budget reservations) were exact, above 1 they were low; ESTIMATE ONLY jobs have no billing "
        "event yet"
    )
