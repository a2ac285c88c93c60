"""Loads a function's handler the way the Lambda runtime does: from its code folder, by the
template's `Handler` string, after its environment is in place (Powertools reads it at import)."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities import parameters
from aws_lambda_powertools.utilities.parameters import base as parameters_base

from falflow.aws.clients import aws_client
from falflow_tools.template import FunctionSpec, function_specs

Handler = Callable[[dict[str, Any], Any], Any]


def forget_cached_configuration() -> None:
    """Secrets and clients are cached per container; each loaded handler is a new container (its
    settings are validated anew by its app, so no settings cache is left to forget). Powertools'
    default secrets provider keeps the client of the endpoint it first saw, so it goes too."""
    parameters.clear_caches()  # type: ignore[no-untyped-call]  # Powertools leaves it unannotated
    parameters_base.DEFAULT_PROVIDERS.clear()  # type: ignore[attr-defined]  # not in its __all__
    aws_client.cache_clear()


def load_handler(logical_id: str, *, fresh: bool = True) -> Handler:
    """Import `functions/<name>/<module>.py` of the template's function and return its handler.

    `fresh` re-imports the module, as a new Lambda container would (a cold start).
    """
    spec: FunctionSpec = function_specs()[logical_id]
    return load_handler_at(spec.code_dir, spec.handler, name=logical_id, fresh=fresh)


def load_handler_at(code_dir: Path, handler: str, *, name: str, fresh: bool = True) -> Handler:
    """Import `<code_dir>/<module>.py` and return the attribute named by a Lambda `Handler` string
    ("module.function"); `name` keeps modules of different functions apart in `sys.modules`."""
    module_name, attribute = handler.rsplit(".", 1)
    qualified = f"falflow_function_{name}_{module_name}"
    if fresh or qualified not in sys.modules:
        path = code_dir / f"{module_name.replace('.', '/')}.py"
        module_spec = importlib.util.spec_from_file_location(qualified, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[qualified] = module
        module_spec.loader.exec_module(module)
    loaded: Handler = getattr(sys.modules[qualified], attribute)
    return loaded


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that Powertools and our handlers read."""

    function_name: str
    memory_limit_in_mb: int = 512
    timeout_s: float = 30.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"
    _deadline: float | None = None

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout_s
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


def context_for(logical_id: str) -> LambdaContext:
    spec = function_specs()[logical_id]
    return LambdaContext(function_name=logical_id, memory_limit_in_mb=spec.memory, timeout_s=spec.timeout)
