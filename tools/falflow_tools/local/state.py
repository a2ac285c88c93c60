"""The local stack's state file: where a running `falflow local up` can be reached.

The operator commands read it to target the local stack the way `--stack NAME` targets a deployed
one: the template's outputs (same names as CloudFormation's), the AWS endpoint and fal's URLs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from falflow_tools.template import REPO_ROOT

DEFAULT_STATE_FILE = REPO_ROOT / ".falflow" / "local.json"
STATE_FILE_ENV = "FALFLOW_LOCAL_STATE"


class FalEndpoints(BaseModel):
    """fal's base URLs as `falflow.settings.FalSettings` names them."""

    queue_url: str
    run_url: str
    rest_url: str
    api_url: str
    cdn_url: str
    # The emulator's stand-in for fal's backup origins ("" for none: never fall back to real fal).
    queue_backup_url: str = ""
    run_backup_url: str = ""


class LocalState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pid: int
    started_at: str
    region: str
    aws_endpoint_url: str
    front_door_url: str
    outputs: dict[str, str]
    parameters: dict[str, str] = Field(default_factory=dict)
    events_queue_url: str | None = None
    fal: FalEndpoints | None = None  # None: real fal at its default URLs
    emulator_url: str | None = None
    log_dir: str | None = None

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(self.model_dump_json(indent=2))
        temporary.replace(path)  # readers never see half a file

    @classmethod
    def read(cls, path: Path) -> LocalState:
        return cls.model_validate(json.loads(path.read_text()))

    def is_alive(self) -> bool:
        """Whether the process that wrote the file still runs (a killed stack leaves its file)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def state_file_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    from_env = os.environ.get(STATE_FILE_ENV)
    return Path(from_env) if from_env else DEFAULT_STATE_FILE
