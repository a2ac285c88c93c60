"""Docstrings and comments point only at what exists: every dotted reference into the falflow or
falflow_tools package names a real module (or a name defined in one), every repository path (under
tests, docs, layers, tools, bench, ... or a package's own root) exists, and nothing cites the old fal
notes by their former name (their successor is docs/fal-contract.md)."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_ROOTS = ("layers", "functions", "tools", "bench", "tests", "samples")
PACKAGES = {"falflow": REPO / "layers/falflow/falflow", "falflow_tools": REPO / "tools/falflow_tools"}
# Where a path written from a package's own root (falflow/aws/outputs.py) lives in the repository.
PATH_ROOTS = {"falflow": REPO / "layers/falflow", "falflow_tools": REPO / "tools"}
RETIRED_NAME = "fact" + " sheet"  # spelled apart, so this file does not trip its own check

DOTTED = re.compile(r"(?<![\w./-])((?:falflow|falflow_tools)(?:\.[A-Za-z_]\w*)+)")
PATH = re.compile(
    r"(?<![\w./-])((?:tests|docs|layers|tools|bench|functions|events|samples|scripts|falflow|falflow_tools)"
    r"/[\w./-]*)"
)


def python_files() -> list[Path]:
    return sorted(p for root in PYTHON_ROOTS for p in (REPO / root).rglob("*.py"))


def prose(path: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every docstring and comment in a Python file."""
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                yield node.body[0].lineno, docstring


@cache
def defined_names(module: Path) -> frozenset[str]:
    """The names a module defines or imports at its top level."""
    names: set[str] = set()
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign | ast.TypeAlias) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def dotted_exists(reference: str) -> bool:
    """A module or package, or a name defined at the top of the module the reference reaches."""
    root, *parts = reference.split(".")
    here = PACKAGES[root]
    for i, part in enumerate(parts):
        if (here / part / "__init__.py").is_file():
            here = here / part
            continue
        if (here / f"{part}.py").is_file():
            rest = parts[i + 1 :]
            return not rest or rest[0] in defined_names(here / f"{part}.py")
        return part in defined_names(here / "__init__.py")
    return True


def path_exists(reference: str) -> bool:
    reference = reference.rstrip(".,;:")
    first = reference.split("/", 1)[0]
    base = PATH_ROOTS.get(first, REPO)
    return (base / reference).exists()


@cache
def references() -> tuple[tuple[str, str], ...]:
    """(where, reference) for every module or path reference in the repository's Python prose."""
    return tuple(_references())


def _references() -> Iterator[tuple[str, str]]:
    for path in python_files():
        where = path.relative_to(REPO)
        for line, text in prose(path):
            for match in DOTTED.finditer(text):
                yield f"{where}:{line}", match.group(1)
            for match in PATH.finditer(text):
                if not set(match.group(1)) & set("*{<"):  # a pattern, not a path
                    yield f"{where}:{line}", match.group(1)


def test_the_scan_sees_references() -> None:
    found = {ref for _, ref in references()}
    assert "docs/fal-contract.md" in found
    assert any(ref.startswith("falflow.") for ref in found)


@pytest.mark.parametrize(
    ("reference", "exists"),
    [
        ("falflow.jobs", True),
        ("falflow.jobs.store", True),
        ("falflow.jobs.store.DynamoJobStore", True),
        ("falflow.jobs.JobState", True),
        ("falflow_tools.emulator.core", True),
        ("falflow.completion.aws", False),
        ("falflow.jobs.store.NoSuchThing", False),
        ("falflow_tools.nothing", False),
    ],
)
def test_dotted_references_resolve_against_the_source(reference: str, exists: bool) -> None:
    assert dotted_exists(reference) is exists


def test_every_dotted_module_reference_exists() -> None:
    missing = [
        f"{where}: {ref}" for where, ref in references() if ref.startswith("falflow") and "/" not in ref
    ]
    missing = [m for m in missing if not dotted_exists(m.split(": ", 1)[1])]
    assert missing == []


def test_every_path_reference_exists() -> None:
    missing = [f"{where}: {ref}" for where, ref in references() if "/" in ref and not path_exists(ref)]
    assert missing == []


def test_nothing_cites_the_fal_notes_by_their_former_name() -> None:
    cited = [
        f"{path.relative_to(REPO)}:{n}"
        for path in python_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if RETIRED_NAME in line.lower()
    ]
    assert cited == []


DOCUMENTS = ("README.md", "CONTRIBUTING.md", "docs")
# A path in a document, written in backticks: `tests/fakes/job_store.py`, `docs/adr/`, or one from the
# package's root, `falflow/store/worker.py` (a module or a folder; a secret name is neither).
DOCUMENT_PATH = re.compile(
    r"`((?:tests|docs|layers|tools|bench|functions|events|scripts)/[\w./-]*"
    r"|falflow/[\w/-]*(?:\.py|/))`"
)


def document_files() -> list[Path]:
    return sorted(
        p
        for name in DOCUMENTS
        for p in ((REPO / name).rglob("*.md") if (REPO / name).is_dir() else [REPO / name])
    )


def test_every_path_a_document_names_exists() -> None:
    named = [
        (f"{path.relative_to(REPO)}:{n}", match.group(1))
        for path in document_files()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        for match in DOCUMENT_PATH.finditer(line)
        if not set(match.group(1)) & set("*{<")
    ]
    assert len(named) > 50  # the architecture page alone names dozens
    missing = [f"{where}: {ref}" for where, ref in named if not path_exists(ref)]
    assert missing == []
