"""`falflow fal-user-id`."""

from __future__ import annotations

import json

import click

from falflow_tools.commands.common import operator_command, print_json
from falflow_tools.ops import account as ops
from falflow_tools.ops.render import table
from falflow_tools.ops.target import Target


@click.command("fal-user-id")
@click.option(
    "--deliveries",
    default=ops.DEFAULT_DELIVERIES,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="How many of the newest deliveries to read.",
)
@operator_command
def fal_user_id_command(*, target: Target, deliveries: int, as_json: bool) -> None:
    """The fal user id fal signs the stack's webhooks for: the value for FalWebhookUserIds."""
    found = ops.webhook_user_ids(target, deliveries=deliveries)
    if as_json:
        print_json([user.to_json() for user in found])
        return
    rows = [[u.user_id, str(u.deliveries), u.last_seen.strftime("%Y-%m-%d %H:%M:%S")] for u in found]
    click.echo(table(["FAL USER ID", "DELIVERIES", "LAST SEEN (UTC)"], rows))
    pin = json.dumps([u.user_id for u in found])
    click.echo(f"\npin it: --parameter-overrides FalWebhookUserIds='{pin}'")
