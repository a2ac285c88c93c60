"""`falflow budget show|set|reset`."""

from __future__ import annotations

from typing import cast

import click

from falflow.spend.caps import UnpricedPolicy
from falflow_tools.commands.common import operator_command, print_json
from falflow_tools.ops import budget as ops
from falflow_tools.ops.render import money, table
from falflow_tools.ops.target import Target

CAP_HEADERS = ["CAP", "LIMIT", "WINDOW", "SPENT", "LEFT", "USED %", "RESETS AT (UTC)"]


@click.group("budget")
def budget_group() -> None:
    """Spend caps per UTC day and month: for the stack, a route or a model."""


def _print_status(target: Target, as_json: bool) -> None:
    status = ops.budget_status(target)
    if as_json:
        print_json(status.to_json())
        return
    if status.caps:
        rows = [
            [
                line.cap,
                money(line.limit_usd),
                line.window,
                money(line.spent_usd),
                money(line.left_usd),
                f"{line.used_percent:.1f}",
                line.resets_at[:16].replace("T", " "),
            ]
            for line in status.caps
        ]
        click.echo(table(CAP_HEADERS, rows))
    else:
        click.echo("no budgets set")
    config = status.config
    source = (
        f"the run-time configuration (set {config.updated_at}) is in force; `falflow budget reset` "
        "goes back to the template's caps"
        if status.stored
        else "the template's caps are in force (parameters and the route table)"
    )
    click.echo(f"\n{source}")
    click.echo(f"jobs of a model with no price: {config.unpriced} (where a cap applies)")
    held = ", ".join(f"{reason} {count}" for reason, count in status.held.items())
    click.echo(f"held jobs: {held or 'none'}")
    if status.lock is not None:
        lock = status.lock
        probe = f" (probe job {lock.probe_job_id})" if lock.probe_job_id else ""
        click.echo(
            f"fal has locked the account since {lock.since}: {lock.reason}; "
            f"next probe at {lock.probe_at}{probe}"
        )


@budget_group.command("show")
@operator_command
def show_command(*, target: Target, as_json: bool) -> None:
    """Every cap in force, what its current window has spent, and the held jobs."""
    _print_status(target, as_json)


@budget_group.command("set")
@click.option("--daily", type=click.FloatRange(min=0), metavar="USD", help="Cap per UTC day (0 removes it).")
@click.option(
    "--monthly", type=click.FloatRange(min=0), metavar="USD", help="Cap per UTC month (0 removes it)."
)
@click.option("--route", metavar="PREFIX", help="Set the caps of this route (a prefix of the Routes table).")
@click.option("--model", metavar="ENDPOINT_ID", help="Set the caps of this fal model.")
@click.option(
    "--unpriced",
    type=click.Choice(["allow", "hold"]),
    help="Jobs of a model with no price, where a cap applies: sent (allow) or HELD until released.",
)
@operator_command
def set_command(
    *,
    target: Target,
    daily: float | None,
    monthly: float | None,
    route: str | None,
    model: str | None,
    unpriced: str | None,
    as_json: bool,
) -> None:
    """Change caps at run time (overriding the template's); without --route/--model, the stack's.

    Starts from the configuration in force and stores it; `falflow budget reset` undoes it.
    """
    if route and model:
        raise click.UsageError("give --route or --model, not both")
    if daily is None and monthly is None:
        if route or model:
            raise click.UsageError("--route and --model need --daily and/or --monthly")
        if unpriced is None:
            raise click.UsageError("nothing to change: give --daily and/or --monthly, or --unpriced")
    change = ops.BudgetChange(
        daily_usd=daily,
        monthly_usd=monthly,
        route=route,
        model=model,
        unpriced=cast(UnpricedPolicy | None, unpriced),
    )
    ops.set_budget(target, change)
    _print_status(target, as_json)
    if not as_json:
        click.echo(ops.recheck_note(target))


@budget_group.command("reset")
@operator_command
def reset_command(*, target: Target, as_json: bool) -> None:
    """Back to the template's caps (its parameters and each route's budget)."""
    ops.reset_budget(target)
    _print_status(target, as_json)
    if not as_json:
        click.echo(ops.recheck_note(target))
