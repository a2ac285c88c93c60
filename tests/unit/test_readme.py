"""The README's reference sections cannot fall behind the template or the settings."""

from __future__ import annotations

import importlib
import pkgutil
import re

from pydantic import AliasChoices
from pydantic_settings import BaseSettings

import falflow
from falflow_tools.template import REPO_ROOT, function_specs, load_template

README = (REPO_ROOT / "README.md").read_text()


def settings_variables() -> set[str]:
    """Every environment variable a settings class of the falflow package reads."""
    names: set[str] = set()
    for module_info in pkgutil.walk_packages(falflow.__path__, "falflow."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseSettings) and value is not BaseSettings:
                prefix = str(value.model_config.get("env_prefix", ""))
                for field, info in value.model_fields.items():
                    names.update(
                        f"{prefix}{name}".upper() for name in _env_names(field, info.validation_alias)
                    )
    return names


def _env_names(field: str, alias: object) -> list[str]:
    """The names a field is read from: its validation alias (or its choices) where it has one."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    return [field]


def test_every_template_parameter_is_documented() -> None:
    missing = [name for name in load_template()["Parameters"] if f"`{name}`" not in README]
    assert not missing


def test_every_function_environment_variable_is_documented() -> None:
    template_variables = {name for spec in function_specs().values() for name in spec.environment}
    missing = sorted(name for name in template_variables | settings_variables() if f"`{name}`" not in README)
    assert not missing


def test_the_two_commands_of_the_first_screen_exist() -> None:
    first_screen = README.split("---", 1)[0]
    commands = re.findall(r"^\./scripts/(\w+)", first_screen, re.MULTILINE)
    assert commands == ["demo", "test"]
    for command in commands:
        assert (REPO_ROOT / "scripts" / command).stat().st_mode & 0o111
    assert "./scripts/test" in (REPO_ROOT / ".ci" / "run").read_text()
