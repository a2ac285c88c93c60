"""`falflow local up` and `falflow demo` as a user runs them: separate processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from falflow_tools.cli import main

pytestmark = pytest.mark.e2e

FALFLOW = [sys.executable, "-m", "falflow_tools.cli"]


def start_local_up(state: Path, logs: Path) -> subprocess.Popen[str]:
    # A session of its own, so a signal to the group is what Ctrl-C in a terminal sends.
    return subprocess.Popen(
        [
            *FALFLOW,
            "local",
            "up",
            "--state-file",
            str(state),
            "--log-dir",
            str(logs),
            "--reconcile-every",
            "0",
            "--collect-every",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_state(process: subprocess.Popen[str], state: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not state.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stdout.read() if process.stdout else ""
            process.kill()
            raise AssertionError(f"local up did not come up:\n{output}")
        time.sleep(0.2)


def spawned_children(pid: int) -> set[int]:
    """Child processes of `pid` that are spawned interpreters: function workers, moto's server."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in command:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_local_up_serves_until_ctrl_c_and_starts_again(tmp_path: Path) -> None:
    state, logs = tmp_path / "local.json", tmp_path / "logs"
    first = start_local_up(state, logs)
    wait_for_state(first, state)
    workers = spawned_children(first.pid)

    submitted = CliRunner().invoke(
        main,
        [
            "submit",
            "fal-ai/flux/dev",
            "--input",
            '{"prompt": "up"}',
            "--wait",
            "--json",
            "--local-state",
            str(state),
        ],
    )
    second = subprocess.run(
        [*FALFLOW, "local", "up", "--state-file", str(state)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    os.killpg(first.pid, signal.SIGINT)
    output, _ = first.communicate(timeout=30)

    assert submitted.exit_code == 0, submitted.output
    assert json.loads(submitted.stdout)["job"]["state"] == "COMPLETED"
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert first.returncode == 0, output
    assert "stopped" in output
    assert not state.exists()
    assert len(workers) == 6  # one per function, and moto's server
    assert not [pid for pid in workers if alive(pid)]
    assert (logs / "SubmitFunction.log").stat().st_size > 0

    again = start_local_up(state, logs)
    wait_for_state(again, state)
    listed = CliRunner().invoke(main, ["jobs", "list", "--json", "--local-state", str(state)])
    again.send_signal(signal.SIGTERM)
    again.communicate(timeout=30)

    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []  # a fresh stack: nothing carried over
    assert again.returncode == 0
    assert not state.exists()


def test_the_demo_completes_every_job_it_starts_and_ends_with_the_console(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [*FALFLOW, "demo", "--log-dir", str(tmp_path / "logs"), "--console"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    printed = []
    for line in demo.stdout:
        printed.append(line)
        if line.startswith("Console: "):
            break
    else:
        demo.wait(10)
        raise AssertionError("".join(printed) + (demo.stderr.read() if demo.stderr else ""))
    url = printed[-1].split()[1]
    jobs = httpx.get(f"{url}api/jobs", timeout=30).json()["jobs"]
    page = httpx.get(url, timeout=30)
    os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C ends the console and the stack
    rest, errors = demo.communicate(timeout=60)
    stdout = "".join(printed) + rest

    assert demo.returncode == 0, stdout + errors
    rows = [line for line in stdout.splitlines() if line.startswith(("S3 ", "SQS "))]
    assert len([row for row in rows if " COMPLETED " in row]) == 5, stdout
    assert all("s3://falflow-outputbucket/outputs/" in row for row in rows if " COMPLETED " in row)
    assert "5/5 jobs completed" in stdout
    assert url.startswith("http://127.0.0.1:")
    assert [job["state"] for job in jobs] == ["COMPLETED"] * 5
    assert "falflow console" in page.text
    assert "Stopping the local stack" in rest
