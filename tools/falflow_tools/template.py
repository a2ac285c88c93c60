"""Reads template.yaml so tests and the local stack build exactly what the template declares.

Only what falflow's template uses is understood: the short-form intrinsics (!Ref, !GetAtt, !Sub,
!If, !Not, !Equals, !Join), parameters with defaults, conditions, Globals, and the resource types
the local stack emulates. Anything else is an error, so the template cannot quietly drift ahead.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = REPO_ROOT / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@cache
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as handle:
        # _CfnLoader is a SafeLoader subclass (CloudFormation's tags only).
        data: dict[str, Any] = yaml.load(handle, Loader=_CfnLoader)  # noqa: S506  # nosec B506
    return data


class UnsupportedIntrinsicError(ValueError):
    pass


@dataclass
class Resolver:
    """Resolves intrinsics against parameter values and the physical ids of created resources."""

    template: Mapping[str, Any]
    parameters: dict[str, Any]
    refs: dict[str, str] = field(default_factory=dict)
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)
    pseudo: dict[str, str] = field(default_factory=dict)

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def _ref(self, name: str) -> Any:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"!Ref {name}: not a parameter or a created resource")

    def _sub(self, text: str, extra: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token in extra:
                return str(extra[token])
            if "." in token:
                logical, attribute = token.split(".", 1)
                return self.attributes[(logical, attribute)]
            return str(self._ref(token))

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value if v != _NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            intrinsic = _INTRINSICS.get(key)
            if intrinsic is not None:
                return intrinsic(self, arg)
            if key.startswith("Fn::") or key == "Condition":
                raise UnsupportedIntrinsicError(key)
        return {k: self.resolve(v) for k, v in value.items() if v != _NO_VALUE}

    def _get_att(self, arg: Any) -> Any:
        logical, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
        return self.attributes[(logical, attribute)]

    def _fn_sub(self, arg: Any) -> Any:
        if isinstance(arg, list):
            return self._sub(arg[0], {k: self.resolve(v) for k, v in arg[1].items()})
        return self._sub(arg, {})

    def _fn_if(self, arg: Any) -> Any:
        name, when_true, when_false = arg
        return self.resolve(when_true if self.condition(name) else when_false)

    def _fn_not(self, arg: Any) -> Any:
        return not self.resolve(arg[0])

    def _fn_equals(self, arg: Any) -> Any:
        left, right = (self.resolve(v) for v in arg)
        return str(left) == str(right)

    def _fn_join(self, arg: Any) -> Any:
        separator, items = arg
        return separator.join(str(v) for v in self.resolve(items))


_NO_VALUE = {"Ref": "AWS::NoValue"}

# The intrinsics understood, by their long-form key; any other "Fn::" key is an error.
_INTRINSICS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": Resolver._ref,
    "Fn::GetAtt": Resolver._get_att,
    "Fn::Sub": Resolver._fn_sub,
    "Fn::If": Resolver._fn_if,
    "Fn::Not": Resolver._fn_not,
    "Fn::Equals": Resolver._fn_equals,
    "Fn::Join": Resolver._fn_join,
}


def parameter_defaults(template: Mapping[str, Any]) -> dict[str, Any]:
    return {name: spec.get("Default", "") for name, spec in template.get("Parameters", {}).items()}


def condition_branches(node: Any) -> Iterator[Any]:
    """Both sides of an `!If` (an `AWS::NoValue` side dropped), nested too; else the node itself."""
    if isinstance(node, dict) and "Fn::If" in node:
        for branch in node["Fn::If"][1:]:
            if branch != {"Ref": "AWS::NoValue"}:
                yield from condition_branches(branch)
    else:
        yield node


def resources_of_type(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical: spec
        for logical, spec in template.get("Resources", {}).items()
        if spec.get("Type") == resource_type
    }


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    code_dir: Path
    handler: str
    timeout: int
    memory: int
    environment: dict[str, Any]
    events: dict[str, Any]


def function_specs(template: Mapping[str, Any] | None = None) -> dict[str, FunctionSpec]:
    """The functions with Globals merged in, environment still unresolved."""
    template = template or load_template()
    globals_ = template.get("Globals", {}).get("Function", {})
    specs = {}
    for logical, spec in resources_of_type(template, "AWS::Serverless::Function").items():
        props = spec["Properties"]
        environment = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        specs[logical] = FunctionSpec(
            logical_id=logical,
            code_dir=REPO_ROOT / props["CodeUri"],
            handler=props["Handler"],
            timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
            memory=int(props.get("MemorySize", globals_.get("MemorySize", 128))),
            environment=environment,
            events=props.get("Events", {}),
        )
    return specs


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
