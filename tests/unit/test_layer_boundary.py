"""What ships to Lambda (the falflow layer and the handlers) imports only the runtime dependencies:
the CLI, the fal emulator and the local stack, and their dependencies, stay out of the artifact."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from falflow_tools.template import REPO_ROOT

LAYER = REPO_ROOT / "layers" / "falflow"
# Runtime dependencies pinned for the layer, and what the Lambda Python runtime ships (boto3).
ALLOWED = {
    "falflow",
    "aws_lambda_powertools",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "httpx",
    "cryptography",
    "boto3",
    "botocore",
}
TYPE_ONLY = {
    "mypy_boto3_dynamodb",
    "mypy_boto3_s3",
    "mypy_boto3_sqs",
    "mypy_boto3_events",
    "mypy_boto3_secretsmanager",
}
SHIPPED = sorted([*(LAYER / "falflow").rglob("*.py"), *(REPO_ROOT / "functions").glob("*/*.py")])


def _runtime_imports(path: Path) -> set[str]:
    """Top-level modules imported at run time (imports under `if TYPE_CHECKING:` do not ship)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in {"TYPE_CHECKING", "typing.TYPE_CHECKING"}
        for child in block.body
        for node in ast.walk(child)
    }
    modules: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_the_layer_requirements_are_the_runtime_dependencies() -> None:
    pinned = {
        line.split("==")[0].strip().lower()
        for line in (LAYER / "requirements.txt").read_text().splitlines()
        if line and not line.startswith((" ", "#"))
    }
    assert {"aws-lambda-powertools", "pydantic", "pydantic-settings", "httpx", "cryptography"} <= pinned
    assert not pinned & {"moto", "starlette", "uvicorn", "click", "pyyaml", "boto3", "botocore"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_shipped_code_imports_only_runtime_dependencies(path: Path) -> None:
    foreign = _runtime_imports(path) - ALLOWED - set(sys.stdlib_module_names)
    assert not foreign, (
        f"{path.relative_to(REPO_ROOT)} imports {sorted(foreign)}, which the layer does not ship"
    )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_type_stubs_are_imported_for_type_checking_only(path: Path) -> None:
    assert not _runtime_imports(path) & TYPE_ONLY
