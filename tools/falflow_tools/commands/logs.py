"""`falflow logs FUNCTION [--follow]`."""

from __future__ import annotations

import click

from falflow_tools.commands.common import operator_command, parse_when
from falflow_tools.ops import logs as ops
from falflow_tools.ops.target import Target


@click.command("logs")
@click.argument("function")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--lines", "-n", default=50, show_default=True, type=click.IntRange(0), help="Last lines.")
@click.option(
    "--since", default="10m", show_default=True, help="Deployed stack: from 30m, 2h or an ISO time."
)
@click.option("--raw", is_flag=True, help="Lines as the function wrote them (JSON).")
@operator_command
def logs_command(
    *, target: Target, function: str, follow: bool, lines: int, since: str, raw: bool, as_json: bool
) -> None:
    """A function's log: submit, webhook, store, reconcile or collect.

    The local stack's log files (.falflow/logs/), or a deployed stack's CloudWatch Logs.
    """
    moment = parse_when(since)
    assert moment is not None  # --since has a default
    try:
        for line in ops.function_lines(target, function, since=moment, lines=lines, follow=follow):
            click.echo(line if raw or as_json else ops.readable(line))
    except KeyboardInterrupt:
        pass
