"""`falflow submit`: a job message to the intake queue, or a file dropped into the input bucket."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from falflow.jobs import FINAL_STATES
from falflow_tools.commands.common import operator_command, parse_json_object, print_json
from falflow_tools.ops import jobs as jobs_ops
from falflow_tools.ops import models as models_ops
from falflow_tools.ops import submit as ops
from falflow_tools.ops.target import EXIT_FAILED, OpsError, Target


def _missing_input(target: Target, model: str) -> click.UsageError:
    """--input is refused when absent (fal would fail the job); say what the model needs."""
    try:
        fields = models_ops.input_fields(models_ops.show_model(target, model, schema=True))
    except OpsError as error:
        return click.UsageError(
            f"--input is required (the model's input, a JSON object); "
            f"its fields could not be looked up: {error}"
        )
    needed = [f"{field.name} ({field.type})" for field in fields if field.required]
    example = ", ".join(f'"{field.name}": …' for field in fields if field.required)
    return click.UsageError(
        f"--input is required: {model} needs {', '.join(needed) or 'no field, so give {}'}"
        + (f", e.g. --input '{{{example}}}'" if example else "")
        + f" (`falflow models show {model}` lists every field)"
    )


def _files(values: tuple[str, ...]) -> dict[str, str]:
    files = {}
    for value in values:
        field, sep, uri = value.partition("=")
        if not sep or not uri.startswith("s3://"):
            raise click.BadParameter(f"{value!r}: use FIELD=s3://bucket/key", param_hint="--file")
        files[field] = uri
    return files


@click.command("submit")
@click.argument("model", required=False)
@click.option("--input", "input_json", metavar="JSON", help="The model's input, a JSON object.")
@click.option("--input-file", type=click.File("r"), help="The model's input from a JSON file ('-': stdin).")
@click.option("--job-id", help="Your idempotency key (default: a hash of the message).")
@click.option("--metadata", metavar="JSON", help="Echoed back on the job and its completion event.")
@click.option(
    "--file", "files", multiple=True, metavar="FIELD=S3URI", help="An input file for fal (repeatable)."
)
@click.option("--priority", type=click.Choice(["normal", "low"]))
@click.option("--start-timeout", type=float, help="Seconds fal may keep the job queued.")
@click.option("--output-prefix", help="Outputs go under outputs/<prefix>/<job id>/.")
@click.option(
    "--message", "message_file", type=click.File("r"), help="A whole job message (JSON file, '-': stdin)."
)
@click.option(
    "--drop",
    "drop_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Drop this file.",
)
@click.option("--prefix", help="With --drop: the routed prefix (e.g. upscale/) or the jobs prefix.")
@click.option("--key", help="With --drop: the whole object key (default: <prefix><file name>).")
@click.option("--wait", is_flag=True, help="Wait until the job finishes; exit 1 unless it COMPLETED.")
@click.option(
    "--timeout", default=600, show_default=True, help="With --wait: give up after this many seconds."
)
@operator_command
def submit_command(
    *,
    target: Target,
    model: str | None,
    input_json: str | None,
    input_file: Any,
    job_id: str | None,
    metadata: str | None,
    files: tuple[str, ...],
    priority: str | None,
    start_timeout: float | None,
    output_prefix: str | None,
    message_file: Any,
    drop_path: Path | None,
    prefix: str | None,
    key: str | None,
    wait: bool,
    timeout: int,
    as_json: bool,
) -> None:
    """Start a job: MODEL with --input, a whole --message, or a file --drop under a routed prefix.

    \b
      falflow submit fal-ai/flux/dev --input '{"prompt": "a lighthouse at dusk"}'
      falflow submit --message job.json
      falflow submit --drop photo.png --prefix upscale/
    """
    ways = sum(x is not None for x in (model, message_file, drop_path))
    if ways != 1:
        raise click.UsageError("give exactly one of MODEL, --message or --drop")
    if drop_path is not None:
        if not key and not prefix:
            raise click.UsageError("--drop needs --prefix (a routed prefix such as upscale/) or --key")
        object_key = key or f"{prefix}{drop_path.name}"
        submitted = ops.drop_file(target, drop_path.read_bytes(), key=object_key, refuse_duplicate=True)
    elif message_file is not None:
        message = parse_json_object(message_file.read(), "the message")
        submitted = ops.send_message(target, message or {}, refuse_duplicate=True)
    else:
        assert model is not None  # one of the three ways, checked above
        if input_file is None and input_json is None:
            raise _missing_input(target, model)
        raw_input = input_file.read() if input_file is not None else input_json
        message = ops.job_message(
            model,
            parse_json_object(raw_input, "--input") or {},
            job_id=job_id,
            metadata=parse_json_object(metadata, "--metadata"),
            files=_files(files) or None,
            priority=priority,
            start_timeout=start_timeout,
            output_prefix=output_prefix,
        )
        submitted = ops.send_message(target, message, refuse_duplicate=True)

    if not wait:
        if as_json:
            print_json(submitted.to_json())
        else:
            click.echo(f"job {submitted.job_id} (via {submitted.via}: {submitted.reference})")
        return
    job = _wait(target, submitted.job_id, timeout, quiet=as_json)
    if as_json:
        print_json({**submitted.to_json(), "job": job.model_dump(mode="json", exclude_none=True)})
    if job.state.value != "COMPLETED":
        raise SystemExit(EXIT_FAILED)


def _wait(target: Target, job_id: str, timeout: int, *, quiet: bool) -> Any:
    store = target.job_store()
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        job = store.get(job_id)
        if job is not None and job.state != last:
            last = job.state
            if not quiet:
                click.echo(f"{job_id}: {job.state.value}")
        if job is not None and job.state in FINAL_STATES:
            if not quiet and job.error:
                click.echo(f"  {job.error.type}: {job.error.message}")
            if not quiet and job.outputs:
                details = jobs_ops.show_job(target, job_id)
                for output in details.job.outputs:
                    click.echo(f"  s3://{details.output_bucket}/{output}")
            return job
        time.sleep(0.5)
    raise OpsError(f"job {job_id} did not finish within {timeout}s (last seen: {last or 'not yet recorded'})")
