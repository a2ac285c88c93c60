"""`falflow local up` prints all an AWS CLI user must export: endpoint, dummy credentials, region."""

from __future__ import annotations

import os
import subprocess

from falflow_tools.commands.local import aws_cli_exports
from falflow_tools.local.stack import LOCAL_CREDENTIALS


def test_the_printed_exports_configure_an_aws_client_for_the_local_stack() -> None:
    line = aws_cli_exports("http://127.0.0.1:45123", "eu-west-1")

    # What a shell makes of the line, in an environment with nothing of the user's.
    shown = subprocess.run(
        ["bash", "-c", f"{line} && env"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    exported = dict(item.split("=", 1) for item in shown.splitlines() if item.startswith("AWS_"))
    assert exported == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:45123",
        "AWS_REGION": "eu-west-1",
        **LOCAL_CREDENTIALS,
    }
