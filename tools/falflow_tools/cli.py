"""The ``falflow`` command: a thin group; each area registers its own subcommands below."""

from __future__ import annotations

import click

from falflow_tools.emulator.cli import emulator_command


@click.group()
@click.version_option(package_name="falflow")
def main() -> None:
    """falflow: run fal.ai generative-model jobs from S3 drops and SQS messages."""


main.add_command(emulator_command)


if __name__ == "__main__":
    main()
