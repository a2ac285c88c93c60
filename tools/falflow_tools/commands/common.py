"""What every operator command shares: choosing the target, --json, tables, times, errors."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from falflow_tools.ops.target import OpsError, resolve_target
from falflow_tools.ops.when import moment


def operator_command[R](command: Callable[..., R]) -> Callable[..., R]:
    """--stack / --region / --json for an operator command, which receives `target` resolved.

    An `OpsError` becomes `error: …` on stderr and its exit code (no traceback).
    """

    @functools.wraps(command)
    def run(*, stack: str | None, region: str | None, local_state: Path | None, **kwargs: Any) -> R:
        try:
            target = resolve_target(stack, region=region, state_file=local_state)
            return command(target=target, **kwargs)
        except OpsError as error:
            click.echo(f"error: {error}", err=True)
            raise SystemExit(error.exit_code) from None

    options = [
        click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
        click.option(
            "--stack",
            envvar="FALFLOW_STACK",
            metavar="NAME",
            help="A deployed CloudFormation stack (with your AWS credentials). Default: the local stack.",
        ),
        click.option("--region", envvar="AWS_REGION", help="AWS region of --stack."),
        click.option(
            "--local-state",
            type=click.Path(path_type=Path, dir_okay=False),
            envvar="FALFLOW_LOCAL_STATE",
            help="State file of the local stack (default .falflow/local.json).",
        ),
    ]
    decorated: Callable[..., R] = run
    for option in reversed(options):
        decorated = option(decorated)
    return decorated


def parse_when(value: str | None) -> datetime | None:
    """`30m`, `2h`, `7d` (ago) or an ISO date/time (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        return moment(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def parse_json_object(value: str | None, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        data = json.loads(value)
    except ValueError as error:
        raise click.BadParameter(f"{what} is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{what} must be a JSON object")
    return data


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))
