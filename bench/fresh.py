"""A measurement in a fresh process of its own: its peak memory is its own, and its imports are
only what it needs."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """This process's peak RSS so far. VmHWM belongs to the process image: unlike ``ru_maxrss``,
    it does not carry over the parent's peak through fork and exec."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux, bytes on macOS


def run_fresh(module: list[str], spec: dict[str, Any], env: dict[str, str], *, what: str) -> dict[str, Any]:
    """``python -m MODULE…`` given `spec` as JSON on stdin; the JSON its last line of output prints."""
    done = subprocess.run(
        [sys.executable, "-m", *module],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}{done.stdout[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
