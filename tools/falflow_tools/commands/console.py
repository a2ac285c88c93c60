"""`falflow console`: the read-only web page over the local stack or a deployed one."""

from __future__ import annotations

import webbrowser

import click

from falflow_tools.commands.common import operator_command
from falflow_tools.ops.target import Target


@click.command("console")
@click.option("--port", default=8765, show_default=True, help="Port on 127.0.0.1 (0: a free one).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the default browser.")
@operator_command
def console_command(*, target: Target, port: int, open_browser: bool, as_json: bool) -> None:
    """Serve a web page of jobs (filters, outputs inline), costs per day and model, and dead letters.

    Read-only and on loopback only; outputs are shown through presigned links, and no key or
    credential is put in the page. Ctrl-C stops it.
    """
    from falflow_tools.console.app import ConsoleServer  # noqa: PLC0415 - keeps `falflow --help` quick

    server = ConsoleServer(target, port=port)
    click.echo(f"falflow console on {server.url} ({target.name}); Ctrl-C stops it")
    if open_browser:
        webbrowser.open(server.url)
    server.serve_forever()
