"""A fal.ai emulator: a real HTTP server on loopback that behaves like fal's queue, sync, storage,
CDN, webhook and Platform APIs, with fault injection, so falflow runs and is tested without a key.

    with run_emulator(EmulatorConfig(run_time_s=0.2)) as fal:
        os.environ.update(fal.env())
        ...
        fal.control.set_faults(submit={"rate_503": 0.3})

The model (``core.FalEmulator`` and what it is made of: state, catalogue, runner, webhooks,
storage, faults, ...) knows nothing of HTTP. The web layer is built from it: each ``*_api``
module's ``*_routes(emulator)``, the ``gateway`` and the ``errors`` responses, composed by
``app.build_app`` and served by ``server``.
"""

from falflow_tools.emulator.account import AccountView
from falflow_tools.emulator.config import (
    ComputeInstance,
    EmulatorConfig,
    FaultConfig,
    HttpFaults,
    WebhookFaults,
)
from falflow_tools.emulator.control import EmulatorControl
from falflow_tools.emulator.core import FalEmulator
from falflow_tools.emulator.server import RunningEmulator, run_emulator
from falflow_tools.emulator.signing import webhook_message
from falflow_tools.emulator.state import JobView, RequestRecord, Stats, WebhookAttempt
from falflow_tools.emulator.urls import FalUrls

__all__ = [
    "AccountView",
    "ComputeInstance",
    "EmulatorConfig",
    "EmulatorControl",
    "FalEmulator",
    "FalUrls",
    "FaultConfig",
    "HttpFaults",
    "JobView",
    "RequestRecord",
    "RunningEmulator",
    "Stats",
    "WebhookAttempt",
    "WebhookFaults",
    "run_emulator",
    "webhook_message",
]
