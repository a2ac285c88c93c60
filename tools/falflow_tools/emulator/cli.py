"""``falflow emulator``: serve the fal emulator in the foreground until Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from falflow_tools.emulator.app import build_app
from falflow_tools.emulator.config import EmulatorConfig, FaultConfig
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.server import bind_socket, uvicorn_server


def parse_faults(assignments: tuple[str, ...]) -> FaultConfig:
    """``PATH=VALUE`` pairs into a FaultConfig, e.g. ``submit.rate_503=0.2``, ``seed=7``,
    ``webhook.drop_rate=0.1``; values are read as JSON when they parse, else as strings."""
    fields: dict[str, Any] = {}
    for assignment in assignments:
        path, sep, raw = assignment.partition("=")
        if not sep or not path:
            raise click.BadParameter(f"expected PATH=VALUE, got {assignment!r}", param_hint="--fault")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        *parents, leaf = path.split(".")
        target = fields
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    try:
        return FaultConfig.model_validate(fields)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from exc


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=int, default=8765, show_default=True, help="Port (0 picks a free one).")
@click.option("--api-key", help="The API key clients must send (default: a fixed emulator key).")
@click.option("--admin-key", help="The ADMIN key for usage, billing events and compute.")
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="PATH=VALUE",
    help="A fault setting, repeatable: submit.rate_503=0.2, status.rate_reset=0.05, "
    "webhook.drop_rate=0.1, job_error_rate=0.05, cdn_bytes_per_s=1000000, seed=7 ...",
)
@click.option(
    "--queue-wait", type=float, default=0.5, show_default=True, help="Seconds each job waits in the queue."
)
@click.option("--run-time", type=float, default=2.0, show_default=True, help="Seconds each job runs.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Runners per app.")
@click.option("--video-bytes", type=int, help="Size of each generated video file.")
@click.option("--audio-bytes", type=int, help="Size of each generated audio file (default: from duration).")
@click.option(
    "--storage-dir", type=click.Path(file_okay=False, path_type=Path), help="Where uploads are kept."
)
@click.option("--log-level", default="info", show_default=True, help="uvicorn log level.")
def emulator_command(
    *,
    host: str,
    port: int,
    api_key: str | None,
    admin_key: str | None,
    faults: tuple[str, ...],
    queue_wait: float,
    run_time: float,
    concurrency: int,
    video_bytes: int | None,
    audio_bytes: int | None,
    storage_dir: Path | None,
    log_level: str,
) -> None:
    """Run a fal.ai emulator (queue, sync, storage, CDN, webhooks, Platform API) on loopback."""
    settings: dict[str, Any] = {
        "queue_wait_s": queue_wait,
        "run_time_s": run_time,
        "concurrency": concurrency,
        "faults": parse_faults(faults),
        "storage_dir": storage_dir,
        # Webhook retries spread over about a minute: slow enough to watch, fast enough to demo.
        "webhook_backoff_s": 1.0,
        "webhook_backoff_cap_s": 10.0,
    }
    settings |= {
        name: value for name, value in (("video_bytes", video_bytes), ("audio_bytes", audio_bytes)) if value
    }
    if api_key:
        settings["api_keys"] = [api_key]
    if admin_key:
        settings["admin_keys"] = [admin_key]
    try:
        config = EmulatorConfig.model_validate(settings)
    except ValidationError as exc:
        raise click.UsageError(str(exc)) from exc

    emulator = FalEmulator(config)
    sock, base_url = bind_socket(host, port)
    emulator.bind(base_url)
    urls = emulator.urls
    click.echo(f"fal emulator on {base_url}")
    for label, url, stands_for in (
        ("queue", urls.queue_url, "https://queue.fal.run"),
        ("run", urls.run_url, "https://fal.run"),
        ("rest", urls.rest_url, "https://rest.fal.ai"),
        ("cdn", urls.cdn_url, "https://v3.fal.media"),
        ("api", urls.api_url, "https://api.fal.ai/v1"),
        ("jwks", urls.jwks_url, "fal's webhook signing keys"),
        ("control", urls.control_url, "emulator inspection and faults"),
    ):
        click.echo(f"  {label:<8}{url:<48}{stands_for}")
    click.echo("\n# point falflow at it:")
    for name, value in urls.env().items():
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo(f"export FAL_KEY={shlex.quote(config.api_keys[0])}")
    click.echo(f"# ADMIN key (usage, billing events): {config.admin_keys[0]}")
    click.echo("\nPress Ctrl-C to stop.")
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises the signal; that is a clean stop.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn_server(build_app(emulator), log_level=log_level, own_logging=True).run(sockets=[sock])
    emulator.close()
    click.echo("fal emulator stopped")
