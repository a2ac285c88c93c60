"""`falflow analytics` and `falflow compute list|show|create|delete` (fal's Platform API)."""

from __future__ import annotations

import click

from falflow.fal import ComputeInstance
from falflow.jobs import utcnow
from falflow_tools.commands.common import operator_command, parse_when, print_json
from falflow_tools.ops import platform as ops
from falflow_tools.ops.render import table
from falflow_tools.ops.target import Target


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}s"


@click.command("analytics")
@click.option(
    "--model", "models", multiple=True, help="A fal endpoint id (repeatable). Default: the routes' models."
)
@click.option("--since", default="1d", show_default=True, help="From: 30m, 2h, 7d or an ISO time.")
@click.option("--until", help="To: 30m, 2h, 7d ago or an ISO time (default: now).")
@operator_command
def analytics_command(
    *, target: Target, models: tuple[str, ...], since: str, until: str | None, as_json: bool
) -> None:
    """Request counts, success rate and latency percentiles, as fal reports them."""
    lines = ops.analytics(
        target, models, since=parse_when(since) or utcnow(), until=parse_when(until) or utcnow()
    )
    if as_json:
        print_json([line.to_json() for line in lines])
        return
    if not lines:
        click.echo("fal reports no requests for these models in this window")
        return
    rows = [
        [
            a.endpoint_id,
            str(a.requests),
            "" if a.success_rate is None else f"{a.success_rate:.1%}",
            str(a.user_errors),
            str(a.errors),
            _seconds(a.percentiles.get("p50_prepare_duration")),
            _seconds(a.percentiles.get("p50_duration")),
            _seconds(a.percentiles.get("p90_duration")),
            _seconds(a.percentiles.get("p99_duration")),
        ]
        for a in lines
    ]
    headers = ["ENDPOINT", "REQUESTS", "SUCCESS", "4XX", "5XX", "QUEUE P50", "P50", "P90", "P99"]
    click.echo(table(headers, rows))


@click.group("compute")
def compute_group() -> None:
    """fal compute instances (GPU machines billed while they exist; needs the ADMIN key).
    fal has no start or stop: an instance is created, then deleted."""


def _instance_rows(instances: list[ComputeInstance]) -> list[list[str]]:
    return [[i.id, i.instance_type, i.region, i.status, i.ip or ""] for i in instances]


_INSTANCE_HEADERS = ["ID", "TYPE", "REGION", "STATUS", "IP"]


@compute_group.command("list")
@operator_command
def compute_list(*, target: Target, as_json: bool) -> None:
    """Every compute instance of the account."""
    instances = ops.list_instances(target)
    if as_json:
        print_json([i.model_dump(mode="json", exclude_none=True) for i in instances])
        return
    click.echo(table(_INSTANCE_HEADERS, _instance_rows(instances)) if instances else "no compute instances")


@compute_group.command("show")
@click.argument("instance_id")
@operator_command
def compute_show(*, target: Target, instance_id: str, as_json: bool) -> None:
    """One instance."""
    instance = ops.show_instance(target, instance_id)
    if as_json:
        print_json(instance.model_dump(mode="json", exclude_none=True))
        return
    click.echo(table(_INSTANCE_HEADERS, _instance_rows([instance])))


@compute_group.command("create")
@click.option("--type", "instance_type", type=click.Choice(ops.INSTANCE_TYPES), required=True)
@click.option("--ssh-key", required=True, help="The SSH public key to log in with.")
@click.option("--sector", type=click.Choice(ops.SECTORS), help="InfiniBand sector (8x H100 only).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@operator_command
def compute_create(
    *, target: Target, instance_type: str, ssh_key: str, sector: str | None, yes: bool, as_json: bool
) -> None:
    """Create an instance (it is billed until deleted)."""
    if not yes:
        click.confirm(f"Create a {instance_type} instance? It is billed until you delete it.", abort=True)
    instance = ops.create_instance(target, instance_type, ssh_key, sector=sector)
    if as_json:
        print_json(instance.model_dump(mode="json", exclude_none=True))
        return
    click.echo(
        f"created {instance.id} ({instance.status}); delete it with `falflow compute delete {instance.id}`"
    )


@compute_group.command("delete")
@click.argument("instance_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@operator_command
def compute_delete(*, target: Target, instance_id: str, yes: bool, as_json: bool) -> None:
    """Delete an instance (irreversible)."""
    if not yes:
        click.confirm(f"Delete compute instance {instance_id}? This cannot be undone.", abort=True)
    ops.delete_instance(target, instance_id)
    if as_json:
        print_json({"deleted": instance_id})
        return
    click.echo(f"deleted {instance_id}")
