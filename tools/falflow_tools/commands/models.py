"""`falflow models search|show|pricing`."""

from __future__ import annotations

from typing import Literal

import click

from falflow_tools.commands.common import operator_command, print_json
from falflow_tools.ops import models as ops
from falflow_tools.ops.render import json_value, money, table
from falflow_tools.ops.target import Target


@click.group("models")
def models_group() -> None:
    """fal's models and prices (Platform API, with the stack's fal key)."""


@models_group.command("search")
@click.argument("query", required=False)
@click.option("--category", help="e.g. text-to-image, image-to-video.")
@click.option("--status", type=click.Choice(["active", "deprecated"]))
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@operator_command
def search_command(
    *,
    target: Target,
    query: str | None,
    category: str | None,
    status: Literal["active", "deprecated"] | None,
    limit: int,
    as_json: bool,
) -> None:
    """Models matching QUERY."""
    found = ops.search_models(target, query, category=category, status=status, limit=limit)
    if as_json:
        print_json([model.model_dump(mode="json", exclude_none=True) for model in found])
        return
    rows = [
        [
            m.endpoint_id,
            m.metadata.display_name if m.metadata else "",
            m.metadata.category if m.metadata else "",
            m.metadata.status if m.metadata else "",
        ]
        for m in found
    ]
    click.echo(table(["ENDPOINT", "NAME", "CATEGORY", "STATUS"], rows) if rows else "no models found")


@models_group.command("show")
@click.argument("endpoint_id")
@operator_command
def show_command(*, target: Target, endpoint_id: str, as_json: bool) -> None:
    """One model's metadata and its input fields (name, type, required, default).

    --json has the whole OpenAPI document too.
    """
    model = ops.show_model(target, endpoint_id, schema=True)
    fields = ops.input_fields(model)
    if as_json:
        print_json(
            {
                **model.model_dump(mode="json", exclude_none=True),
                "input_fields": [f.to_json() for f in fields],
            }
        )
        return
    click.echo(model.endpoint_id)
    for name, value in (model.metadata.model_dump(exclude_none=True) if model.metadata else {}).items():
        click.echo(f"  {name}: {json_value(value)}")
    rows = [
        [f.name, f.type, "yes" if f.required else "", json_value(f.default) if f.has_default else ""]
        for f in fields
    ]
    click.echo("\ninput fields:")
    click.echo(table(["FIELD", "TYPE", "REQUIRED", "DEFAULT"], rows))


@models_group.command("pricing")
@click.argument("endpoint_ids", nargs=-1, required=True)
@operator_command
def pricing_command(*, target: Target, endpoint_ids: tuple[str, ...], as_json: bool) -> None:
    """Unit prices of ENDPOINT_IDS."""
    prices = ops.model_pricing(target, endpoint_ids)
    if as_json:
        print_json([price.model_dump(mode="json") for price in prices])
        return
    rows = [[p.endpoint_id, money(p.unit_price, p.currency), p.unit] for p in prices]
    click.echo(table(["ENDPOINT", "PRICE", "PER"], rows))
