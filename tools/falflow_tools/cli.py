"""The ``falflow`` command: a thin group; each area registers its own subcommands below."""

from __future__ import annotations

import click

from falflow_tools.commands.account import fal_user_id_command
from falflow_tools.commands.batch import batch_group
from falflow_tools.commands.budget import budget_group
from falflow_tools.commands.console import console_command
from falflow_tools.commands.dlq import dlq_group
from falflow_tools.commands.jobs import jobs_group
from falflow_tools.commands.local import demo_command, local_group
from falflow_tools.commands.logs import logs_command
from falflow_tools.commands.models import models_group
from falflow_tools.commands.platform import analytics_command, compute_group
from falflow_tools.commands.run import run_command
from falflow_tools.commands.submit import submit_command
from falflow_tools.commands.usage import costs_command, usage_command
from falflow_tools.emulator.cli import emulator_command


@click.group()
@click.version_option(package_name="falflow")
def main() -> None:
    """falflow: run fal.ai generative-model jobs from S3 drops and SQS messages."""


main.add_command(emulator_command)
for command in (
    demo_command,
    local_group,
    submit_command,
    jobs_group,
    batch_group,
    dlq_group,
    models_group,
    usage_command,
    costs_command,
    budget_group,
    analytics_command,
    compute_group,
    run_command,
    logs_command,
    console_command,
    fal_user_id_command,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
