"""Benchmark: each function's cold start (a fresh process loading its handler as Lambda does)
against the boto3 floor (``import boto3`` and one client) and a minimal Powertools handler.

    .venv/bin/python -m bench.cold_start [--rounds 15] [--profile StoreFunction] [--source DIR]

Every run is a fresh interpreter laid out like a Lambda container (``-S -E -B``: no site-packages,
no PYTHON* variables, no bytecode written, as ``/opt`` and ``/var/task`` are read-only):

- ``/var/task``: the function's code folder from template.yaml, as ``sam build`` ships it (no
  bytecode); the handler module is imported by name, as Lambda's bootstrap does;
- ``/opt/python``: the layer. ``sam build``'s layer (``.aws-sam/build/FalflowLayer``) when present
  and built for this machine's architecture; otherwise the same content assembled here: falflow's
  sources with bytecode compiled by the layer Makefile's own ``bytecode`` target, and the pinned
  third-party packages of ``layers/falflow/requirements.txt`` from this interpreter's environment,
  with bytecode, as the Makefile compiles the whole layer;
- the runtime's boto3/botocore (``/var/runtime``) from this interpreter's environment, with
  bytecode too (the strictest floor);
- the function's environment from template.yaml (resources named by placeholders; nothing is
  called at init, and ``AWS_ENDPOINT_URL`` points at a closed port so a call would fail at once)
  and Lambda's own runtime variables.

The kinds of run alternate, round by round; medians and ratios are printed. The time is the
handler's init, measured inside the process from before the first import (interpreter start-up,
the same for all, is left out, which makes the ratios stricter): wall clock, and the process's own
CPU time. The ratios are judged on CPU time: on a machine whose cores are shared (as CI's and
this project's are) wall time swings with the neighbours' load, while a Lambda init runs on a core
of its own, where the two agree.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from falflow_tools.template import REPO_ROOT, Resolver, function_specs, load_template, parameter_defaults

BUILT_LAYER = REPO_ROOT / ".aws-sam" / "build" / "FalflowLayer" / "python"
# What the Lambda Python runtime ships beside the interpreter (its /var/runtime).
RUNTIME_DISTRIBUTIONS = ("boto3", "botocore", "s3transfer", "jmespath", "python-dateutil", "six", "urllib3")
FLOOR = "boto3 + one client"
POWERTOOLS = "minimal Powertools handler"
LIBRARIES = "minimal handler on falflow's libraries"
REFERENCES = (FLOOR, POWERTOOLS, LIBRARIES)

# A handler with what Powertools' own docs put in one: Logger, Metrics, Tracer and one client.
MINIMAL_POWERTOOLS_HANDLER = """
import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer

logger, metrics, tracer = Logger(), Metrics(), Tracer()
s3 = boto3.client("s3")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event, context):
    return {}
"""

# A minimal handler on the libraries every falflow function loads at init, as falflow loads them:
# Powertools' Logger and Metrics (no X-Ray SDK: active tracing only, ADR 0024), a pydantic-settings
# class read from the environment, a pydantic model, an httpx client, and boto3 imported with no
# client built: the libraries alone. What a function costs beyond it is falflow's own.
MINIMAL_LIBRARIES_HANDLER = """
import boto3
import httpx
from aws_lambda_powertools import Logger, Metrics
from pydantic import BaseModel
from pydantic_settings import BaseSettings


class Settings(BaseSettings):
    bucket_name: str = "outputs"


class Message(BaseModel):
    job_id: str
    model: str


logger, metrics = Logger(), Metrics()
settings = Settings()
http = httpx.Client()


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event, context):
    return Message.model_validate(event).model_dump()
"""

# Runs in the fresh process; argv[1] is a JSON spec. Prints one JSON line.
_DRIVER = r"""
import json, sys, time
started, cpu_started = time.perf_counter(), time.process_time()
spec = json.loads(sys.argv[1])
sys.path[:0] = spec["path"]
if spec["kind"] == "floor":
    import boto3
    boto3.client("s3")
else:
    import importlib
    module, attribute = spec["handler"].rsplit(".", 1)
    getattr(importlib.import_module(module), attribute)
seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
modules = sorted(sys.modules) if spec.get("modules") else []
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "modules": modules}))
"""


class _Placeholders(dict[str, str]):
    """Physical ids for every resource of the template: nothing is called at init, so a name that
    looks right is all the settings need."""

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        if "Queue" in key:
            return f"https://sqs.us-east-1.amazonaws.com/123456789012/falflow-{key}"
        return f"falflow-{key}"


class _PlaceholderAttributes(dict[tuple[str, str], str]):
    def __missing__(self, key: tuple[str, str]) -> str:
        logical, attribute = key
        if attribute == "Arn":
            return f"arn:aws:sqs:us-east-1:123456789012:falflow-{logical}"
        return f"falflow-{logical}-{attribute}"


def template_environment(logical_id: str, parameters: Mapping[str, str] | None = None) -> dict[str, str]:
    """The function's environment as the template sets it (its defaults, placeholder resources)."""
    template = load_template()
    resolver = Resolver(
        template,
        {**parameter_defaults(template), **(parameters or {})},
        refs=_Placeholders(),
        attributes=_PlaceholderAttributes(),
        pseudo={
            "AWS::Region": "us-east-1",
            "AWS::AccountId": "123456789012",
            "AWS::StackName": "falflow",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        },
    )
    spec = function_specs(template)[logical_id]
    environment = {}
    for key, value in spec.environment.items():
        resolved = resolver.resolve(value)
        environment[key] = resolved if isinstance(resolved, str) else json.dumps(resolved)
    return environment


def lambda_runtime_environment(
    function_name: str, handler: str, memory: int, layout: LambdaLayout
) -> dict[str, str]:
    """What Lambda's python3.13 runtime sets for every function (credentials are fakes)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "_HANDLER": handler,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/01/01/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "ASIAFAKEFAKEFAKEFAKE",
        "AWS_SECRET_ACCESS_KEY": "fake",
        "AWS_SESSION_TOKEN": "fake",
        "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        "AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129:2000",
        "_AWS_XRAY_DAEMON_ADDRESS": "169.254.79.129",
        "_AWS_XRAY_DAEMON_PORT": "2000",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # closed: init must call nothing
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": str(layout.runtime),
    }


@dataclass(frozen=True)
class LambdaLayout:
    """Folders standing in for ``/var/task`` (one per function), ``/opt/python`` and ``/var/runtime``."""

    tasks: Path
    layer: Path
    runtime: Path
    layer_origin: str

    def task(self, logical_id: str) -> Path:
        return self.tasks / logical_id


def _distribution_roots(name: str) -> list[Path]:
    """The top-level files and folders a distribution installed (packages and single modules)."""
    distribution = importlib.metadata.distribution(name)
    roots: dict[str, Path] = {}
    for file in distribution.files or []:
        top = file.parts[0]
        if top.endswith((".dist-info", ".pth")) or top == ".." or top == "__pycache__":
            continue
        roots[top] = Path(str(distribution.locate_file(top)))
    return list(roots.values())


def _link_distributions(names: list[str], into: Path) -> None:
    """Links to the installed distributions, with their bytecode: the built layer ships bytecode
    for every package in it (the Makefile's ``bytecode`` target), and the floor is given it too,
    the strictest choice (the floor is cheapest with it). ``./scripts/setup`` installs with
    bytecode already; an environment without it gets it compiled here, as pip would have."""
    into.mkdir(parents=True, exist_ok=True)
    for name in names:
        for root in _distribution_roots(name):
            if root.is_dir():
                compileall.compile_dir(root, quiet=1)
            elif root.suffix == ".py":
                compileall.compile_file(root, quiet=1)
            target = into / root.name
            if not target.exists():
                target.symlink_to(root, target_is_directory=root.is_dir())
            if root.suffix == ".py":  # a single module: its bytecode sits in the shared __pycache__
                for compiled in (root.parent / "__pycache__").glob(f"{root.stem}.*.pyc"):
                    (into / "__pycache__").mkdir(exist_ok=True)
                    with contextlib.suppress(FileExistsError):
                        (into / "__pycache__" / compiled.name).symlink_to(compiled)


def layer_requirements() -> list[str]:
    lines = (REPO_ROOT / "layers" / "falflow" / "requirements.txt").read_text().splitlines()
    return [line.split("==")[0].strip() for line in lines if "==" in line and not line.startswith("#")]


def compile_layer_bytecode(layer: Path, python: str = sys.executable) -> None:
    """The layer Makefile's ``bytecode`` target: what ``sam build`` runs on the layer."""
    subprocess.run(
        ["make", "--no-print-directory", "-s", "-C", str(REPO_ROOT / "layers" / "falflow"), "bytecode"],
        env={**os.environ, "LAYER_DIR": str(layer), "PYTHON": python},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _built_layer_runs_here() -> bool:
    """sam build's layer is for arm64 Linux: its native modules load only on such a machine."""
    if not BUILT_LAYER.is_dir():
        return False
    machine = platform.machine().lower()
    native = [path.name for path in BUILT_LAYER.glob("pydantic_core/*.so")]
    return bool(native) and all(machine in name for name in native)


@contextlib.contextmanager
def lambda_layout(source: Path = REPO_ROOT) -> Iterator[LambdaLayout]:
    """A Lambda container's folders for every function of the template, from ``source``'s code."""
    with tempfile.TemporaryDirectory(prefix="falflow-cold-start-") as tmp:
        root = Path(tmp)
        tasks = root / "var-task"
        for logical_id, spec in function_specs().items():
            code = source / spec.code_dir.relative_to(REPO_ROOT)
            shutil.copytree(code, tasks / logical_id, ignore=shutil.ignore_patterns("__pycache__"))
        for folder, handler in (
            ("MinimalPowertools", MINIMAL_POWERTOOLS_HANDLER),
            ("MinimalLibraries", MINIMAL_LIBRARIES_HANDLER),
        ):
            (tasks / folder).mkdir(parents=True)
            (tasks / folder / "app.py").write_text(handler)
        layer = root / "opt-python"
        if source == REPO_ROOT and _built_layer_runs_here():
            shutil.copytree(BUILT_LAYER, layer, symlinks=True)
            origin = "sam build's layer"
        else:
            shutil.copytree(
                source / "layers" / "falflow" / "falflow",
                layer / "falflow",
                ignore=shutil.ignore_patterns("__pycache__"),
            )
            compile_layer_bytecode(layer)
            _link_distributions(layer_requirements(), layer)
            origin = "falflow + the layer Makefile's bytecode, pinned packages of this machine"
        runtime = root / "var-runtime"
        _link_distributions(list(RUNTIME_DISTRIBUTIONS), runtime)
        yield LambdaLayout(tasks=tasks, layer=layer, runtime=runtime, layer_origin=origin)


@dataclass(frozen=True)
class Subject:
    """One kind of fresh process: a function of the template, the minimal handler, or the floor."""

    name: str
    kind: str  # "handler" | "floor"
    handler: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()


def subjects(layout: LambdaLayout, parameters: Mapping[str, str] | None = None) -> list[Subject]:
    found = [Subject(FLOOR, "floor", environment=_runtime_only(layout), path=(str(layout.runtime),))]
    minimal_env = {
        **lambda_runtime_environment("MinimalPowertools", "app.handler", 512, layout),
        "POWERTOOLS_SERVICE_NAME": "minimal",
        "POWERTOOLS_METRICS_NAMESPACE": "minimal",
    }
    found.append(
        Subject(POWERTOOLS, "handler", "app.handler", minimal_env, _path(layout, "MinimalPowertools"))
    )
    found.append(Subject(LIBRARIES, "handler", "app.handler", minimal_env, _path(layout, "MinimalLibraries")))
    for logical_id, spec in function_specs().items():
        environment = {
            **lambda_runtime_environment(logical_id, spec.handler, spec.memory, layout),
            **template_environment(logical_id, parameters),
        }
        found.append(Subject(logical_id, "handler", spec.handler, environment, _path(layout, logical_id)))
    return found


def _runtime_only(layout: LambdaLayout) -> dict[str, str]:
    return lambda_runtime_environment("Floor", "app.handler", 512, layout)


def _path(layout: LambdaLayout, logical_id: str) -> tuple[str, ...]:
    # Lambda's order: the function's code, the layer, then the runtime's own packages.
    return (str(layout.task(logical_id)), str(layout.layer), str(layout.runtime))


def start(subject: Subject, *, modules: bool = False, importtime: bool = False) -> dict[str, Any]:
    """One cold start of ``subject`` in a fresh process: its init seconds (and modules loaded)."""
    spec = {"kind": subject.kind, "handler": subject.handler, "path": list(subject.path), "modules": modules}
    flags = ["-X", "importtime"] if importtime else []
    done = subprocess.run(
        [sys.executable, "-S", "-E", "-B", *flags, "-c", _DRIVER, json.dumps(spec)],
        env=subject.environment,
        cwd=subject.path[0],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{subject.name} failed to start:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if importtime:
        result["importtime"] = done.stderr
    return result


@dataclass(frozen=True)
class ColdStartResult:
    """Median init times per subject: wall clock, and the process's CPU time (user + system)."""

    wall: dict[str, float]
    cpu: dict[str, float]
    rounds: int
    layer_origin: str

    def ratio(self, name: str, baseline: str = FLOOR, *, cpu: bool = True) -> float:
        medians = self.cpu if cpu else self.wall
        return medians[name] / medians[baseline]

    @property
    def functions(self) -> list[str]:
        return [name for name in self.wall if name not in REFERENCES]

    def report(self) -> str:
        references = [name for name in (POWERTOOLS, LIBRARIES) if name in self.cpu]
        headings = {POWERTOOLS: "÷ Powertools", LIBRARIES: "÷ libraries"}
        lines = [
            f"cold start: init of a fresh process laid out as Lambda runs it; median of {self.rounds} "
            f"alternating rounds; layer: {self.layer_origin}",
            f"{'':40}{'CPU ms':>9}{'wall ms':>9}{'÷ floor (CPU)':>15}{'(wall)':>8}"
            + "".join(f"{headings[name]:>14}" for name in references),
        ]
        for name in self.wall:
            lines.append(
                f"{name:40}{self.cpu[name] * 1000:>9.1f}{self.wall[name] * 1000:>9.1f}"
                f"{self.ratio(name):>14.2f}x{self.ratio(name, cpu=False):>7.2f}x"
                + "".join(f"{self.ratio(name, reference):>13.2f}x" for reference in references)
            )
        return "\n".join(lines)


def run(rounds: int = 15, *, source: Path = REPO_ROOT) -> ColdStartResult:
    with lambda_layout(source) as layout:
        every = subjects(layout)
        for subject in every:  # once each before timing: the file system's caches are warm for all
            start(subject)
        wall: dict[str, list[float]] = {subject.name: [] for subject in every}
        cpu: dict[str, list[float]] = {subject.name: [] for subject in every}
        for round_number in range(rounds):
            # Alternate: each round runs them all, in an order rotated by one from the last.
            shift = round_number % len(every)
            for subject in every[shift:] + every[:shift]:
                started = start(subject)
                wall[subject.name].append(started["seconds"])
                cpu[subject.name].append(started["cpu_seconds"])
        return ColdStartResult(
            {name: statistics.median(values) for name, values in wall.items()},
            {name: statistics.median(values) for name, values in cpu.items()},
            rounds,
            layout.layer_origin,
        )


def import_profile(logical_id: str, *, source: Path = REPO_ROOT, top: int = 25) -> str:
    """``python -X importtime`` of one handler's cold start: the top-level imports by their cost."""
    with lambda_layout(source) as layout:
        (subject,) = [s for s in subjects(layout) if s.name == logical_id]
        start(subject)
        stderr = start(subject, importtime=True)["importtime"]
    return _format_profile(stderr, top)


def _format_profile(stderr: str, top: int) -> str:
    """The import time by top-level package (the sum of its modules' own times), largest first."""
    by_package: dict[str, int] = {}
    modules: dict[str, int] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|")
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(self_us)
        modules[package] = modules.get(package, 0) + 1
    total = sum(by_package.values())
    lines = [f"{'ms':>8}{'share':>7}{'modules':>9}  package   (all imports: {total / 1000:.0f} ms)"]
    for package, micros in sorted(by_package.items(), key=lambda item: -item[1])[:top]:
        lines.append(f"{micros / 1000:>8.1f}{micros / total:>7.0%}{modules[package]:>9}  {package}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--profile", metavar="FUNCTION", help="print the -X importtime profile of one function"
    )
    parser.add_argument("--source", type=Path, default=REPO_ROOT, help="a checkout whose code to measure")
    args = parser.parse_args(argv)
    if args.profile:
        print(import_profile(args.profile, source=args.source.resolve()))
        return
    print(run(args.rounds, source=args.source.resolve()).report())


if __name__ == "__main__":
    main()
