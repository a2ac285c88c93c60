"""`scripts/python313` (used by `./scripts/setup`) falls back to a uv-managed Python 3.13 on a
machine without one, and says in one line what to do where uv cannot download it. A fake `uv`
stands in for the real one, so nothing is downloaded."""

from __future__ import annotations

import subprocess
from pathlib import Path

from falflow_tools.template import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "python313"

FAKE_UV = """#!/bin/bash
echo "$*" >> "{log}"
case "$1 $2" in
  "python find") [ -f "{installed}" ] && echo "{python}" && exit 0; exit 2 ;;
  "python install")
    [ "{can_download}" = yes ] && touch "{installed}" && exit 0
    echo "network unreachable" >&2; exit 1 ;;
esac
exit 3
"""
# Stands for the interpreter uv installs: answers the version check as Python 3.13 would.
FAKE_PYTHON = "#!/bin/bash\nexit 0\n"


def _run(
    tmp_path: Path, *, with_uv: bool, can_download: bool
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "uv.log"
    python = tmp_path / "managed" / "python3.13"
    python.parent.mkdir()
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    if with_uv:
        uv = bin_dir / "uv"
        uv.write_text(
            FAKE_UV.format(
                log=log,
                installed=tmp_path / "installed",
                python=python,
                can_download="yes" if can_download else "no",
            )
        )
        uv.chmod(0o755)
    # No pyenv, no python3.13 on PATH or in the usual places: a machine without Python 3.13.
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FALFLOW_PYTHON_CANDIDATES": "", "HOME": str(tmp_path)}
    result = subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_without_python_313_uv_provides_a_managed_one(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, with_uv=True, can_download=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "managed" / "python3.13")
    assert calls == ["python find 3.13", "python install 3.13", "python find 3.13"]
    assert "uv downloads a managed one" in result.stderr


def test_where_uv_cannot_download_it_says_what_to_do_in_one_line(tmp_path: Path) -> None:
    result, calls = _run(tmp_path, with_uv=True, can_download=False)

    assert result.returncode == 1
    assert result.stdout == ""
    assert calls == ["python find 3.13", "python install 3.13"]
    (advice,) = [line for line in result.stderr.splitlines() if "falflow needs Python 3.13" in line]
    assert "install Python 3.13" in advice
    assert "FALFLOW_PYTHON" in advice


def test_an_explicit_interpreter_wins_and_nothing_is_asked_of_uv(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "FALFLOW_PYTHON": "/opt/python3.13/bin/python"}
    result = subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "/opt/python3.13/bin/python"
