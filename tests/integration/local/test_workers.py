"""Function workers: one process per function, its own environment, crashes and timeouts survived."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from falflow_tools.local.workers import FunctionRuntime, FunctionWorker, LocalFunction

FAKE = Path(__file__).parent / "fake_function"


def runtime(
    name: str = "Fake", *, env: dict[str, str] | None = None, timeout_s: float = 5.0
) -> FunctionRuntime:
    return FunctionRuntime(
        name=name,
        code_dir=FAKE,
        handler="app.handler",
        environment={"PATH": os.environ["PATH"], **(env or {})},
        timeout_s=timeout_s,
        memory_mb=256,
    )


@pytest.fixture
def worker() -> Iterator[FunctionWorker]:
    crashes: list[str] = []
    worker = FunctionWorker(runtime(timeout_s=2.0), on_crash=crashes.append)
    worker.crashes = crashes  # type: ignore[attr-defined]
    yield worker
    worker.stop()


def test_each_function_sees_only_its_own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONLY_IN_THE_STACK_PROCESS", "leak")
    first = LocalFunction(runtime("First", env={"POWERTOOLS_SERVICE_NAME": "first", "ONLY_FIRST": "1"}))
    second = LocalFunction(runtime("Second", env={"POWERTOOLS_SERVICE_NAME": "second"}))
    try:
        seen_first = first.invoke({}).payload
        seen_second = second.invoke({}).payload
    finally:
        first.stop()
        second.stop()

    # The environment was in place before the handler module was imported (Powertools reads it then).
    assert seen_first["env_at_import"]["POWERTOOLS_SERVICE_NAME"] == "first"
    assert seen_second["env_at_import"]["POWERTOOLS_SERVICE_NAME"] == "second"
    assert "ONLY_FIRST" not in seen_second["env_at_import"]
    assert "ONLY_IN_THE_STACK_PROCESS" not in seen_first["env_at_import"]
    assert seen_first["pid"] != seen_second["pid"] != os.getpid()
    assert seen_first["function_name"] == "First"


def test_a_warm_worker_serves_many_invocations_in_one_process(worker: FunctionWorker) -> None:
    first = worker.invoke({}, request_id="req-1")
    second = worker.invoke({})

    assert first.ok
    assert second.ok
    assert first.payload["request_id"] == "req-1"
    assert first.payload["pid"] == second.payload["pid"] == second.payload["cold_start_pid"]
    assert worker.cold_starts == 1
    assert 0 < first.payload["remaining_ms"] <= 2000


def test_a_handler_error_is_the_invocations_error_and_the_worker_stays(worker: FunctionWorker) -> None:
    failed = worker.invoke({"raise": "bad input"})
    after = worker.invoke({})

    assert not failed.ok
    assert failed.error == {"errorType": "ValueError", "errorMessage": "bad input"}
    assert after.ok
    assert worker.cold_starts == 1


def test_a_crashed_worker_is_reported_and_replaced(worker: FunctionWorker) -> None:
    first_pid = worker.invoke({}).payload["pid"]

    crashed = worker.invoke({"crash": True})
    after = worker.invoke({})

    assert not crashed.ok
    assert crashed.error is not None
    assert crashed.error["errorType"] == "Runtime.ExitError"
    assert "exit code 3" in crashed.error["errorMessage"]
    assert len(worker.crashes) == 1  # type: ignore[attr-defined]
    assert "crashed" in worker.crashes[0]  # type: ignore[attr-defined]
    assert after.ok
    assert after.payload["pid"] != first_pid
    assert worker.cold_starts == 2


def test_an_invocation_over_the_timeout_is_killed_like_lambda_does(worker: FunctionWorker) -> None:
    timed_out = worker.invoke({"sleep": 30})
    after = worker.invoke({})

    assert timed_out.error is not None
    assert timed_out.error["errorType"] == "Sandbox.Timedout"
    assert 1.9 < timed_out.duration_s < 10
    assert after.ok
    assert worker.cold_starts == 2


def test_the_result_travels_as_json_and_one_that_is_not_json_is_an_error(worker: FunctionWorker) -> None:
    result = worker.invoke({"reply": {"ok": True, "n": 1.5}})
    unserialisable = worker.invoke({"unserialisable": True})

    assert result.ok
    assert result.payload == {"ok": True, "n": 1.5}
    assert unserialisable.error is not None
    assert unserialisable.error["errorType"] == "TypeError"


def test_an_import_error_fails_the_invocation_and_is_retried_on_the_next() -> None:
    broken = FunctionWorker(
        FunctionRuntime(name="Broken", code_dir=FAKE, handler="broken.handler", environment={}, timeout_s=5)
    )
    try:
        first = broken.invoke({})
        second = broken.invoke({})
    finally:
        broken.stop()

    assert first.error is not None
    assert first.error["errorType"] == "Runtime.ImportModuleError"
    assert "configuration is missing" in first.error["errorMessage"]
    assert second.error == first.error
    assert broken.cold_starts == 2


def test_function_output_goes_to_its_log_file(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "Fake.log"
    worker = FunctionWorker(
        FunctionRuntime(
            name="Fake", code_dir=FAKE, handler="app.handler", environment={}, timeout_s=5, log_path=log_path
        )
    )
    try:
        result = worker.invoke({"raise": "written to the log"})
    finally:
        worker.stop()
    assert not result.ok
    assert "ValueError: written to the log" in log_path.read_text()
