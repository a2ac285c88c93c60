"""`falflow local up` and `falflow demo`."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from falflow_tools.local.state import LocalState, state_file_path
from falflow_tools.local.workers import WorkerError
from falflow_tools.template import REPO_ROOT

if TYPE_CHECKING:
    from falflow_tools.local.stack import LocalStack
    from falflow_tools.ops.target import Target

DEFAULT_LOG_DIR = REPO_ROOT / ".falflow" / "logs"


def _quiet_libraries() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("httpx", "werkzeug", "uvicorn", "uvicorn.error", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM stop the stack cleanly, also when the process was started with SIGINT
    ignored (as shells start background jobs)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, handle)


@click.group("local")
def local_group() -> None:
    """The whole pipeline on this machine: moto, the fal emulator and the real handlers."""


@local_group.command("run")
@click.argument("function", type=click.Choice(["reconcile", "collect"]))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--local-state",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="FALFLOW_LOCAL_STATE",
    help="State file of the local stack (default .falflow/local.json).",
)
def run_command(*, function: str, as_json: bool, local_state: Path | None) -> None:
    """Run the reconcile or collect function of the running local stack now (not on its schedule)."""
    from falflow_tools.ops.local_run import run_scheduled  # noqa: PLC0415 - keeps `falflow --help` quick
    from falflow_tools.ops.target import OpsError  # noqa: PLC0415

    try:
        result = run_scheduled(function, local_state)
    except OpsError as error:
        click.echo(f"error: {error}", err=True)
        raise SystemExit(error.exit_code) from None
    if as_json:
        click.echo(json.dumps(result.__dict__, indent=2, default=str))
    elif result.ok:
        click.echo(f"{result.function} ran in {result.duration_s:.1f}s: {json.dumps(result.payload)}")
    else:
        assert result.error is not None
        click.echo(
            f"{result.function} failed after {result.duration_s:.1f}s: "
            f"{result.error.get('errorType')}: {result.error.get('errorMessage')}",
            err=True,
        )
    if not result.ok:
        raise SystemExit(1)


@local_group.command("up")
@click.option("--aws-port", default=0, show_default=True, help="moto's port (0: a free one).")
@click.option(
    "--port", "front_door_port", default=0, show_default=True, help="The HTTP API front door's port."
)
@click.option("--emulator-port", default=0, show_default=True, help="The fal emulator's port.")
@click.option(
    "--reconcile-every", default=30.0, show_default=True, help="Seconds between reconcile runs (0: off)."
)
@click.option(
    "--collect-every", default=300.0, show_default=True, help="Seconds between collect runs (0: off)."
)
@click.option(
    "--reconcile-after",
    default=None,
    type=float,
    help="Minutes before a silent job is polled (template: 10).",
)
@click.option(
    "--visibility-timeout",
    default=30,
    show_default=True,
    help="Seconds before a failed intake message returns; the outputs queue and the submit's and "
    "store's timeouts and leases scale with it, in the template's ratios (no timeout below 20 s).",
)
@click.option(
    "--log-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_LOG_DIR, show_default=True
)
@click.option("--state-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
def up_command(
    *,
    aws_port: int,
    front_door_port: int,
    emulator_port: int,
    reconcile_every: float,
    collect_every: float,
    reconcile_after: float | None,
    visibility_timeout: int,
    log_dir: Path,
    state_file: Path | None,
) -> None:
    """Run the local stack until Ctrl-C. With FAL_KEY set it talks to real fal instead of the emulator
    (fal's webhooks cannot reach this machine, so the reconciler polls for results after a minute)."""
    from falflow_tools.emulator import EmulatorConfig  # noqa: PLC0415 - heavy imports only when used
    from falflow_tools.local.stack import LocalStack, LocalStackConfig  # noqa: PLC0415

    _quiet_libraries()
    state_path = state_file_path(state_file)
    if state_path.exists():
        previous = LocalState.read(state_path)
        if previous.is_alive() and previous.pid != os.getpid():
            raise click.ClickException(
                f"a local stack is already running (process {previous.pid}, {state_path}); "
                "stop it first or pass --state-file"
            )
    config = LocalStackConfig.from_environment(
        aws_port=aws_port,
        front_door_port=front_door_port,
        emulator_port=emulator_port,
        visibility_timeout_s=visibility_timeout,
        # fal-like pacing, so progress can be watched: a queue wait, then a few seconds of work.
        emulator=EmulatorConfig(queue_wait_s=0.5, run_time_s=3.0, log_interval_s=0.5),
        schedule_intervals_s={"ReconcileFunction": reconcile_every, "CollectFunction": collect_every},
        log_dir=log_dir,
        state_file=state_path,
        on_report=lambda message: click.echo(f"! {message}", err=True),
    )
    after = reconcile_after if reconcile_after is not None else (1.0 if config.fal_key else None)
    if after is not None:
        config.parameters["ReconcileAfterMinutes"] = f"{after:g}"
    _stop_on_signals()
    click.echo("starting the local stack ...")
    stack = LocalStack(config)
    try:
        stack.start()
        _describe(stack, state_path)
        threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("\nstopping ...")
    except WorkerError as error:
        raise click.ClickException(f"a function could not start: {error} (its log: {log_dir})") from None
    finally:
        stack.stop()
    click.echo("stopped")


def aws_cli_exports(endpoint_url: str, region: str) -> str:
    """The shell line that points the AWS CLI (or any AWS SDK) at the local stack: its endpoint, the
    dummy credentials moto accepts (never yours) and the region its resources live in."""
    from falflow_tools.local.stack import LOCAL_CREDENTIALS  # noqa: PLC0415 - keeps `falflow --help` quick

    variables = {"AWS_ENDPOINT_URL": endpoint_url, **LOCAL_CREDENTIALS, "AWS_REGION": region}
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in variables.items())


def _describe(stack: LocalStack, state_path: Path) -> None:
    state = stack.state()
    out = state.outputs
    fal = (
        f"fal emulator     {state.emulator_url}"
        if state.emulator_url
        else "fal              real fal (FAL_KEY)"
    )
    click.echo(
        f"""
falflow is running locally.
  AWS (moto)       {state.aws_endpoint_url}   region {state.region}
  {fal}
  webhook          {out.get("WebhookUrl")}
  input bucket     {out.get("InputBucketName")}     output bucket {out.get("OutputBucketName")}
  intake queue     {out.get("IntakeQueueUrl")}
  jobs table       {out.get("JobsTableName")}
  function logs    {state.log_dir}/
  state            {state_path}

For the AWS CLI (or any AWS SDK), in another terminal:
  {aws_cli_exports(state.aws_endpoint_url, state.region)}
  aws s3 ls

Try, in another terminal:
  .venv/bin/falflow submit fal-ai/flux/dev --input '{{"prompt": "a lighthouse at dusk"}}' --wait
  .venv/bin/falflow submit --drop some.png --prefix upscale/
  .venv/bin/falflow jobs list

Ctrl-C stops everything."""
    )


@click.command("demo")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the jobs.")
@click.option(
    "--real-fal", is_flag=True, help="Use real fal with FAL_KEY (spends money) instead of the emulator."
)
@click.option(
    "--log-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_LOG_DIR, show_default=True
)
@click.option(
    "--console/--no-console",
    "with_console",
    default=None,
    help="After the run, keep the stack up with the console until Ctrl-C. Default: on a terminal.",
)
@click.option(
    "--open", "open_browser", is_flag=True, help="Open the console in the browser (implies --console)."
)
def demo_command(
    *, timeout: float, real_fal: bool, log_dir: Path, with_console: bool | None, open_browser: bool
) -> None:
    """Run the whole pipeline locally on sample inputs and show where every output landed."""
    from falflow_tools.demo import DemoResult, run_demo  # noqa: PLC0415 - keeps `falflow --help` quick

    _quiet_libraries()
    logging.getLogger("falflow.local").setLevel(logging.WARNING)
    fal_key = os.environ.get("FAL_KEY") if real_fal else None
    if real_fal and not fal_key:
        raise click.UsageError("--real-fal needs FAL_KEY in the environment")
    if os.environ.get("FAL_KEY") and not real_fal:
        click.echo("(FAL_KEY is set, but the demo uses the fal emulator; --real-fal spends real money)")
    keep_console = open_browser or (sys.stdout.isatty() if with_console is None else with_console)

    def show(result: DemoResult) -> None:
        click.echo("")
        click.echo(result.table())
        click.echo(f"\n{result.summary()}")

    def console(target: Target, result: DemoResult) -> None:
        show(result)
        _serve_console(target, open_browser=open_browser)

    _stop_on_signals()
    try:
        result = run_demo(
            click.echo,
            timeout_s=timeout,
            fal_key=fal_key,
            log_dir=log_dir,
            before_stop=console if keep_console else None,
        )
    except WorkerError as error:
        raise click.ClickException(f"a function could not start: {error} (its log: {log_dir})") from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted; the local stack is stopped", err=True)
        sys.exit(130)
    if not keep_console:
        show(result)
    if not result.ok:
        click.echo(f"error: not every job completed with its outputs stored; see {log_dir}/", err=True)
        sys.exit(1)
    click.echo(
        "Next: `.venv/bin/falflow local up` keeps the stack running for `falflow submit` and `falflow jobs`"
        + ("" if keep_console else ", and `falflow console` shows it in a browser")
        + "."
    )


def _serve_console(target: Target, *, open_browser: bool) -> None:
    """The console over the demo's stack until Ctrl-C (which then stops the stack too)."""
    import webbrowser  # noqa: PLC0415

    from falflow_tools.console.app import ConsoleServer  # noqa: PLC0415

    server = ConsoleServer(target)
    server.start()
    click.echo(f"\nConsole: {server.url}  (Ctrl-C stops the console and the local stack)")
    if open_browser:
        webbrowser.open(server.url)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("")
    finally:
        server.stop()
