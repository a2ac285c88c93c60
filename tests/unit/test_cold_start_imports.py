"""What a cold start loads: the layer ships bytecode for the runtime's Python, and each handler,
started in a fresh process laid out as Lambda runs it (bench/cold_start.py), imports only its own
wiring — the webhook's verifier and ``cryptography`` only in the webhook, the X-Ray SDK only when
``TRACE_SUBSEGMENTS`` asks for it. Not a timing: what is loaded, not how fast."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.cold_start import LIBRARIES, LambdaLayout, compile_layer_bytecode, lambda_layout, start, subjects
from falflow_tools.template import REPO_ROOT, function_specs, load_template

MAKEFILE = REPO_ROOT / "layers" / "falflow" / "Makefile"
FUNCTION_PACKAGES = {
    "SubmitFunction": "falflow.submit",
    "WebhookFunction": "falflow.webhook",
    "StoreFunction": "falflow.store",
    "ReconcileFunction": "falflow.reconcile",
    "CollectFunction": "falflow.collect",
}
NEVER_SHIPPED = ("falflow_tools", "moto", "pytest", "bench", "tests")
# Modules of another function's package a handler may load, and why: submit signs each job's
# webhook URL with the token the webhook checks (stdlib hmac only, no verifier). Exactly these, so
# the set cannot grow unseen. (Reconcile's request-history lookup lives in falflow.jobs.requests.)
SHARED = {"SubmitFunction": {"falflow.webhook", "falflow.webhook.token"}}


def _runtime_version() -> str:
    runtime = str(load_template()["Globals"]["Function"]["Runtime"])
    match = re.fullmatch(r"python(\d+\.\d+)", runtime)
    assert match, runtime
    return match.group(1)


def test_the_layer_is_compiled_for_the_runtime_of_the_template() -> None:
    assert f"LAYER_PYTHON_VERSION := {_runtime_version()}" in MAKEFILE.read_text()
    assert (
        f"{sys.version_info.major}.{sys.version_info.minor}" == _runtime_version()
    )  # so the test below compiles for it


def test_the_layer_build_compiles_every_module_into_hash_checked_bytecode(tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    # What sam build runs, without the pip step (it needs the network): the commands, then the
    # bytecode target itself on a copy of the package.
    planned = subprocess.run(
        ["make", "-n", "-s", "-C", str(MAKEFILE.parent), "build-FalflowLayer", f"ARTIFACTS_DIR={artifacts}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--invalidation-mode unchecked-hash" in planned
    assert f'compileall -q -j 0 --invalidation-mode unchecked-hash "{artifacts}/python"' in planned

    layer = tmp_path / "python"
    shutil.copytree(
        MAKEFILE.parent / "falflow", layer / "falflow", ignore=shutil.ignore_patterns("__pycache__")
    )
    compile_layer_bytecode(layer)

    sources = sorted(layer.rglob("*.py"))
    assert len(sources) > 50
    tag = sys.implementation.cache_tag
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        assert compiled.is_file(), compiled
        header = compiled.read_bytes()[:8]
        assert header[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(header[4:8], "little") == 0b01  # hash-based, not checked against the source


@pytest.fixture(scope="module")
def layout() -> Iterator[LambdaLayout]:
    with lambda_layout() as built:
        yield built


@pytest.fixture(scope="module")
def loaded(layout: LambdaLayout) -> dict[str, set[str]]:
    """The modules each function's handler has loaded when its init is over."""
    by_name = {subject.name: subject for subject in subjects(layout)}
    with ThreadPoolExecutor(max_workers=len(FUNCTION_PACKAGES)) as pool:
        started = {name: pool.submit(start, by_name[name], modules=True) for name in function_specs()}
    return {name: set(future.result()["modules"]) for name, future in started.items()}


@pytest.mark.parametrize("function", sorted(FUNCTION_PACKAGES))
def test_a_handler_imports_its_own_package_and_no_other_functions(
    function: str, loaded: dict[str, set[str]]
) -> None:
    modules = loaded[function]
    assert FUNCTION_PACKAGES[function] in modules
    others = {package for name, package in FUNCTION_PACKAGES.items() if name != function}
    borrowed = {m for m in modules if ".".join(m.split(".")[:2]) in others}
    assert borrowed <= SHARED.get(function, set())
    assert not {m for m in modules if m.split(".")[0] in NEVER_SHIPPED}


@pytest.mark.parametrize("function", sorted(set(FUNCTION_PACKAGES) - {"WebhookFunction"}))
def test_only_the_webhook_loads_the_signature_verifier(function: str, loaded: dict[str, set[str]]) -> None:
    assert "falflow.fal.webhook" in loaded["WebhookFunction"]
    assert "cryptography" in loaded["WebhookFunction"]
    assert "falflow.fal.webhook" not in loaded[function]
    assert "cryptography" not in loaded[function]


@pytest.mark.parametrize("function", sorted(FUNCTION_PACKAGES))
def test_no_handler_loads_the_xray_sdk_unless_subsegments_are_asked_for(
    function: str, loaded: dict[str, set[str]]
) -> None:
    assert not {m for m in loaded[function] if m.startswith("aws_xray_sdk")}


def test_trace_subsegments_loads_the_xray_sdk_and_patches_boto3(layout: LambdaLayout) -> None:
    (store,) = [s for s in subjects(layout, {"TraceSubsegments": "true"}) if s.name == "StoreFunction"]
    assert store.environment["TRACE_SUBSEGMENTS"] == "true"
    modules = set(start(store, modules=True)["modules"])
    assert "aws_xray_sdk.core" in modules
    assert "aws_xray_sdk.ext.botocore.patch" in modules


def test_the_platform_client_is_loaded_only_where_it_is_used(loaded: dict[str, set[str]]) -> None:
    uses_platform = {name for name, modules in loaded.items() if "falflow.fal.platform" in modules}
    # Collect reads usage and prices; submit and reconcile read fal's request history.
    assert uses_platform <= {"CollectFunction", "SubmitFunction", "ReconcileFunction"}
    assert "StoreFunction" not in uses_platform
    assert "WebhookFunction" not in uses_platform


def test_the_libraries_reference_loads_what_every_function_loads_and_no_falflow(
    layout: LambdaLayout, loaded: dict[str, set[str]]
) -> None:
    """The reference the functions are shown against carries the libraries they all load at init."""
    (reference,) = [s for s in subjects(layout) if s.name == LIBRARIES]
    modules = set(start(reference, modules=True)["modules"])
    shared = {"pydantic", "pydantic_settings", "httpx", "aws_lambda_powertools", "botocore"}
    assert shared <= modules
    assert not any(name == "falflow" or name.startswith("falflow.") for name in modules)
    for function, function_modules in loaded.items():
        assert shared <= function_modules, function


def test_the_layers_packages_and_the_runtimes_are_measured_with_their_bytecode(layout: LambdaLayout) -> None:
    """As the built layer ships them: without it every cold start would compile them again, the
    floor's boto3 as well, and the measure would be the compiler's."""
    tag = sys.implementation.cache_tag
    for folder in (layout.layer, layout.runtime):
        packages = [path for path in folder.iterdir() if (path / "__init__.py").exists()]
        assert packages, folder
        for package in packages:
            assert (package / "__pycache__" / f"__init__.{tag}.pyc").exists(), package.name
