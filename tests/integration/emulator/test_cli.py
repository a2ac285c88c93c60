"""``falflow emulator``: fault flags, printed settings, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import click
import pytest

from falflow_tools.emulator.cli import parse_faults
from tests.integration.emulator.helpers import http_client


def test_fault_flags_build_a_fault_config() -> None:
    faults = parse_faults(("submit.rate_503=0.2", "webhook.drop_rate=0.1", "job_error_rate=0.05", "seed=7"))

    assert (faults.submit.rate_503, faults.webhook.drop_rate, faults.job_error_rate, faults.seed) == (
        0.2,
        0.1,
        0.05,
        7,
    )
    for bad in ("submit.rate_503", "submit.rate_503=2", "nonsense.rate=1"):
        with pytest.raises(click.BadParameter):
            parse_faults((bad,))


def test_cli_serves_until_ctrl_c() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "falflow_tools.cli",
            "emulator",
            "--port",
            "0",
            "--fault",
            "platform.rate_429=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        lines = []
        while not (line := process.stdout.readline()).startswith("Press Ctrl-C"):
            assert line, "the CLI exited early"
            lines.append(line.strip())
        exports = dict(
            line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export ")
        )
        jwks_urls = json.loads(exports["FAL_JWKS_URLS"].strip("'"))
        with http_client() as client:
            assert client.get(jwks_urls[0]).json()["keys"]
            assert client.get(f"{exports['FAL_API_URL']}/meta").status_code == 429
        assert set(exports) >= {
            "FAL_QUEUE_URL",
            "FAL_RUN_URL",
            "FAL_REST_URL",
            "FAL_API_URL",
            "FAL_CDN_URL",
            "FAL_KEY",
        }

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
