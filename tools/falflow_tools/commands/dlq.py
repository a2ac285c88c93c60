"""`falflow dlq list|redrive`."""

from __future__ import annotations

import click

from falflow_tools.commands.common import operator_command, print_json
from falflow_tools.ops import dlq as ops
from falflow_tools.ops.render import table
from falflow_tools.ops.target import Target


@click.group("dlq")
def dlq_group() -> None:
    """Dead-letter queues: what failed every try, and why."""


@dlq_group.command("list")
@click.option("--queue", "queues", multiple=True, help="intake, outputs (repeatable; default: all).")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000), help="Per queue.")
@click.option("--body/--no-body", default=False, help="Show each message body.")
@operator_command
def list_command(*, target: Target, queues: tuple[str, ...], limit: int, body: bool, as_json: bool) -> None:
    """Messages in the dead-letter queues with the reason they failed."""
    letters = ops.list_dead_letters(target, queues, limit=limit)
    if as_json:
        print_json([letter.to_json() for letter in letters])
        return
    if not letters:
        click.echo("the dead-letter queues are empty")
        return
    rows = [[d.queue, d.message_id, d.sent_at, str(d.receive_count), d.reason] for d in letters]
    click.echo(table(["QUEUE", "MESSAGE", "SENT (UTC)", "RECEIVES", "REASON"], rows))
    if body:
        for letter in letters:
            click.echo(f"\n{letter.message_id}:\n{letter.body}")


@dlq_group.command("redrive")
@click.argument("queue")
@click.option("--message-id", "message_ids", multiple=True, help="Only these messages (repeatable).")
@operator_command
def redrive_command(*, target: Target, queue: str, message_ids: tuple[str, ...], as_json: bool) -> None:
    """Send the messages of QUEUE (intake, outputs) back to the queue they came from."""
    moved = ops.redrive(target, queue, message_ids=message_ids)
    if as_json:
        print_json([m.__dict__ for m in moved])
        return
    click.echo(f"sent {len(moved)} message(s) back from the {queue} DLQ")
    for m in moved:
        click.echo(f"  {m.message_id} -> {m.new_message_id}")
