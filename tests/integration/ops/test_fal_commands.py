"""`falflow analytics`, `falflow compute …` and `falflow run` against the fal emulator over
loopback HTTP (the stack's AWS side is not needed: the target hands out the emulator's keys)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from falflow.settings import FalSettings
from falflow_tools.cli import main
from falflow_tools.emulator import RunningEmulator
from falflow_tools.emulator.media import png_dimensions
from falflow_tools.ops.target import Target
from tests.fixtures.fal_emulator import EmulatorFactory

FLUX = "fal-ai/flux/dev"


@dataclass
class EmulatorTarget(Target):
    """A stack whose fal keys are the emulator's (a deployed stack reads them from Secrets Manager)."""

    api_key: str = ""
    admin_key: str = ""

    def fal_api_key(self) -> str:
        return self.api_key

    def fal_admin_key(self) -> str:
        return self.admin_key


def target_for(fal: RunningEmulator, routes: dict[str, Any] | None = None) -> EmulatorTarget:
    return EmulatorTarget(
        name="emulated",
        region="us-east-1",
        outputs={},
        parameters={"Routes": json.dumps(routes or {})},
        fal=FalSettings.model_validate(
            {k.removeprefix("FAL_").lower(): v for k, v in fal.env().items() if k != "FAL_JWKS_URLS"}
        ),
        endpoint_url="http://127.0.0.1:1",  # local: the emulator's plain-http CDN is trusted
        api_key=fal.api_key,
        admin_key=fal.admin_key,
    )


@pytest.fixture
def falflow(monkeypatch: pytest.MonkeyPatch) -> Any:
    def run(target: Target, *args: str, input: str | None = None) -> Result:
        monkeypatch.setattr("falflow_tools.commands.common.resolve_target", lambda *a, **k: target)
        return CliRunner().invoke(main, list(args), input=input)

    return run


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_jobs(fal: RunningEmulator, count: int, payload: dict[str, Any]) -> None:
    with httpx.Client(headers={"Authorization": f"Key {fal.api_key}"}) as client:
        for _ in range(count):
            client.post(f"{fal.urls.run_url}/{FLUX}", json=payload)


def test_analytics_reports_requests_success_rate_and_latencies(
    fal_emulator: RunningEmulator, falflow: Any
) -> None:
    run_jobs(fal_emulator, 3, {"prompt": "a"})
    run_jobs(fal_emulator, 1, {"num_images": 3})  # no prompt: a 422 from the model

    (line,) = ok_json(
        falflow(target_for(fal_emulator), "analytics", "--model", FLUX, "--since", "1h", "--json")
    )

    assert (line["endpoint_id"], line["requests"], line["successes"], line["user_errors"]) == (FLUX, 4, 3, 1)
    assert line["success_rate"] == pytest.approx(0.75)
    assert set(line["percentiles"]) >= {"p50_duration", "p90_duration", "p99_duration"}
    shown = falflow(target_for(fal_emulator), "analytics", "--model", FLUX)
    assert shown.exit_code == 0, shown.output
    assert "75.0%" in shown.output


def test_analytics_defaults_to_the_routes_models_and_says_when_there_are_none(
    fal_emulator: RunningEmulator, falflow: Any
) -> None:
    run_jobs(fal_emulator, 1, {"prompt": "a"})
    routed = target_for(fal_emulator, {"img/": {"model": FLUX, "input": {"prompt": "{file_text}"}}})

    assert [line["endpoint_id"] for line in ok_json(falflow(routed, "analytics", "--json"))] == [FLUX]
    refused = falflow(target_for(fal_emulator), "analytics")
    assert refused.exit_code != 0
    assert "--model" in refused.output


def test_compute_create_asks_first_then_show_list_and_delete(
    fal_emulator: RunningEmulator, falflow: Any
) -> None:
    target = target_for(fal_emulator)
    declined = falflow(
        target, "compute", "create", "--type", "gpu_1x_h100_sxm5", "--ssh-key", "k", input="n\n"
    )
    assert declined.exit_code != 0
    assert ok_json(falflow(target, "compute", "list", "--json")) == []

    created = ok_json(
        falflow(
            target, "compute", "create", "--type", "gpu_1x_h100_sxm5", "--ssh-key", "k", "--yes", "--json"
        )
    )
    assert ok_json(falflow(target, "compute", "show", created["id"], "--json"))["id"] == created["id"]
    assert [i["id"] for i in ok_json(falflow(target, "compute", "list", "--json"))] == [created["id"]]
    kept = falflow(target, "compute", "delete", created["id"], input="n\n")
    assert kept.exit_code != 0
    assert ok_json(falflow(target, "compute", "delete", created["id"], "--yes", "--json")) == {
        "deleted": created["id"]
    }
    missing = falflow(target, "compute", "show", created["id"])
    assert missing.exit_code != 0
    assert "not found" in missing.output.lower()


def test_compute_needs_the_admin_key(fal_emulator: RunningEmulator, falflow: Any) -> None:
    target = target_for(fal_emulator)
    target.admin_key = fal_emulator.api_key

    refused = falflow(target, "compute", "list")

    assert refused.exit_code != 0
    assert "ADMIN" in refused.output


def test_run_calls_the_sync_api_once_and_saves_the_outputs(
    fal_emulator: RunningEmulator, falflow: Any, tmp_path: Path
) -> None:
    out = tmp_path / "tried"

    shown = ok_json(
        falflow(
            target_for(fal_emulator),
            "run",
            FLUX,
            "--input",
            json.dumps({"prompt": "a try", "num_images": 2, "image_size": {"width": 96, "height": 64}}),
            "--out",
            str(out),
            "--json",
        )
    )

    assert [Path(p).name for p in shown["files"]] == ["image-0.png", "image-1.png"]
    assert png_dimensions((out / "image-0.png").read_bytes()[:24]) == (96, 64)
    assert json.loads((out / "result.json").read_text())["served_from"] == FLUX
    (job,) = fal_emulator.control.jobs()
    assert job.sync
    assert not job.fallbacks_allowed


def test_run_reads_private_outputs_through_a_signed_url(
    fal_emulator: RunningEmulator, falflow: Any, tmp_path: Path
) -> None:
    httpx.put(
        f"{fal_emulator.urls.api_url}/storage/settings",
        json={"initial_acl": {"default": "forbid"}},
        headers={"Authorization": f"Key {fal_emulator.api_key}"},
    ).raise_for_status()

    result = falflow(
        target_for(fal_emulator), "run", FLUX, "--input", '{"prompt": "p"}', "--out", str(tmp_path)
    )

    assert result.exit_code == 0, result.output
    assert (tmp_path / "image-0.png").read_bytes().startswith(b"\x89PNG")


def test_run_says_what_fal_refused(
    fal_emulator_factory: EmulatorFactory, falflow: Any, tmp_path: Path
) -> None:
    fal = fal_emulator_factory()

    refused = falflow(target_for(fal), "run", FLUX, "--input", '{"num_images": 2}', "--out", str(tmp_path))

    assert refused.exit_code != 0
    assert "fal did not run fal-ai/flux/dev" in refused.output
