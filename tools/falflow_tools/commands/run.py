"""`falflow run MODEL --input …`: try a model with one synchronous call before routing files to it."""

from __future__ import annotations

from pathlib import Path

import click

from falflow_tools.commands.common import operator_command, parse_json_object, print_json
from falflow_tools.ops.run import run_model
from falflow_tools.ops.target import Target


@click.command("run")
@click.argument("model")
@click.option("--input", "model_input", required=True, help="The model input, a JSON object.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("falflow-run"),
    show_default=True,
    help="Folder the output files and result.json are saved to.",
)
@click.option("--allow-fallbacks", is_flag=True, help="Let fal reroute the call to an equivalent model.")
@operator_command
def run_command(
    *, target: Target, model: str, model_input: str, out: Path, allow_fallbacks: bool, as_json: bool
) -> None:
    """Run MODEL once on fal's sync API (fal.run: no queue, no webhook, no retries by fal) and save
    its outputs locally. Jobs proper go through `falflow submit`."""
    data = parse_json_object(model_input, "--input")
    assert data is not None
    result = run_model(target, model, data, folder=out, allow_fallbacks=allow_fallbacks)
    if as_json:
        print_json(
            {
                "model": model,
                "served_from": result.served_from,
                "folder": str(result.folder),
                "files": [str(p) for p in result.files],
            }
        )
        return
    served = (
        f" (served by {result.served_from})" if result.served_from and result.served_from != model else ""
    )
    click.echo(f"{model}{served}: {len(result.files)} file(s) saved to {result.folder}/")
    for path in result.files:
        click.echo(f"  {path.name}  {path.stat().st_size} bytes")
