"""`.pre-commit-config.yaml` runs the gate's own static checks (`scripts/test`), with the same tools
and arguments: a check added to the gate and not to the hooks fails here."""

from __future__ import annotations

import re
import shlex

import yaml

from falflow_tools.template import REPO_ROOT

GATE = (REPO_ROOT / "scripts" / "test").read_text()
HOOKS = [
    hook
    for repo in yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    for hook in repo["hooks"]
]
# Too slow for a commit: the tests, and SAM's validate and build, stay in the gate.
GATE_ONLY = {"pytest", "sam"}


def gate_checks() -> list[list[str]]:
    """Every `.venv/bin/<tool> …` and `uv export …` command of the gate, as argument lists."""
    commands = re.findall(r"\.venv(?:-sam)?/bin/([\w-]+[^;\n]*)|^(uv export [^\n]*)", GATE, re.MULTILINE)
    checks = []
    for venv_command, uv_command in commands:
        words = shlex.split(venv_command or uv_command)
        if words[0] not in GATE_ONLY:
            checks.append([w for w in words if w != "." and not w.startswith(('"$', "$"))])
    return checks


def test_every_static_check_of_the_gate_is_a_hook_with_the_same_arguments() -> None:
    entries = [shlex.split(hook["entry"].replace("\n", " ")) for hook in HOOKS]
    flat = [" ".join(e) for e in entries]
    assert len(gate_checks()) >= 7
    for check in gate_checks():
        tool = check[0]
        matching = [entry for entry in flat if f"bin/{tool} " in f"{entry} " or f" {tool} " in f" {entry} "]
        assert matching, f"the gate runs {tool}, no hook does"
        assert any(all(arg in entry for arg in check[1:]) for entry in matching), (check, matching)


def test_the_hooks_use_the_projects_own_tools() -> None:
    for hook in HOOKS:
        assert hook["language"] == "system", hook["id"]
        assert ".venv/bin/" in hook["entry"] or "uv export" in hook["entry"], hook["id"]
