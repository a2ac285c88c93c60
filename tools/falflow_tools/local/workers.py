"""Function workers: each function runs in its own process, like a Lambda execution environment.

Functions need different environments and Powertools reads its configuration at import time, so a
handler cannot share an interpreter with another function (or with the local stack). A worker is a
spawned process that sets the function's environment, imports the handler once (the cold start)
and then serves invocations one at a time over a pipe: event in, JSON result or error out.

A worker that dies mid-invocation or overruns the function's timeout is killed, reported and
replaced on the next invocation, the way Lambda replaces a broken execution environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

log = logging.getLogger("falflow.local")

# A spawned interpreter shares nothing with the stack's process (fork would copy its threads,
# sockets and already-imported Powertools configuration).
_SPAWN = multiprocessing.get_context("spawn")
_STOP = None


@dataclass(frozen=True)
class FunctionRuntime:
    """Everything a worker needs to become one function's execution environment."""

    name: str
    code_dir: Path
    handler: str
    environment: Mapping[str, str]
    timeout_s: float
    memory_mb: int = 512
    log_path: Path | None = None
    # How long the cold start (interpreter, imports, handler module) may take; at least the timeout.
    init_timeout_s: float = 30.0


@dataclass(frozen=True)
class InvocationResult:
    """What one invocation gave back: the handler's JSON result, or the error Lambda would report."""

    request_id: str
    payload: Any = None
    error: dict[str, str] | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _error(error_type: str, message: str) -> dict[str, str]:
    return {"errorType": error_type, "errorMessage": message}


# ------------------------------------------------------------------------------ worker process


def _redirect_output(log_path: Path) -> None:
    """Send everything the function prints (Powertools' JSON logs, EMF metrics) to its log file."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def serve(runtime: FunctionRuntime, conn: Connection) -> None:
    """The worker process's main loop (module level so that spawn can import it)."""
    # Ctrl-C reaches every process of the terminal's group; the stack stops its workers itself,
    # after their invocations, rather than having them die in the middle of one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if runtime.log_path is not None:
        _redirect_output(runtime.log_path)
    # The function sees its own environment and nothing of the process that started it.
    os.environ.clear()
    os.environ.update(runtime.environment)
    from falflow_tools.local.handlers import LambdaContext, load_handler_at  # noqa: PLC0415

    try:
        handler = load_handler_at(runtime.code_dir, runtime.handler, name=runtime.name)
    except Exception as error:  # noqa: BLE001 - an import-time failure is Lambda's ImportModuleError
        traceback.print_exc()
        conn.send(("init_error", _error(type(error).__name__, str(error))))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            message = _STOP
        if message is _STOP:
            # Like a retired Lambda environment: no interpreter teardown (it takes a second).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        request_id, event = message
        context = LambdaContext(
            function_name=runtime.name,
            memory_limit_in_mb=runtime.memory_mb,
            timeout_s=runtime.timeout_s,
            aws_request_id=request_id,
            log_group_name=f"/aws/lambda/{runtime.name}",
            _deadline=time.monotonic() + runtime.timeout_s,
        )
        try:
            result = handler(event, context)
            # Lambda serialises the result as JSON; a result it could not serialise is an error.
            reply: tuple[str, Any] = ("ok", json.dumps(result))
        except Exception as error:  # noqa: BLE001 - whatever the handler raises is the invocation's error
            traceback.print_exc()
            reply = ("error", _error(type(error).__name__, str(error)))
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(reply)


# ------------------------------------------------------------------------------ stack side


class FunctionWorker:
    """One execution environment: a process serving one invocation at a time."""

    def __init__(self, runtime: FunctionRuntime, *, on_crash: Callable[[str], None] | None = None) -> None:
        self.runtime = runtime
        self._on_crash = on_crash
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.cold_starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def busy(self) -> bool:
        """In the middle of an invocation (or its cold start) right now."""
        return self._lock.locked()

    def _start(self) -> Connection:
        parent, child = _SPAWN.Pipe()
        process = _SPAWN.Process(
            target=serve, args=(self.runtime, child), name=f"falflow-{self.runtime.name}", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self.cold_starts += 1
        # The cold start (interpreter, imports, handler module) counts against the first invocation.
        init_timeout = max(self.runtime.timeout_s, self.runtime.init_timeout_s)
        if not parent.poll(init_timeout):
            self._kill()
            raise WorkerError(_error("Runtime.InitTimeout", "did not start in time"), self.runtime.name)
        try:
            kind, detail = parent.recv()
        except EOFError:
            code = process.exitcode
            self._kill()
            detail = _error("Runtime.ExitError", f"exited during init (code {code})")
            raise WorkerError(detail, self.runtime.name) from None
        if kind != "ready":
            self._kill()
            why = f"{detail['errorType']}: {detail['errorMessage']}"
            raise WorkerError(_error("Runtime.ImportModuleError", why), self.runtime.name)
        return parent

    def _kill(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(5)

    def start(self) -> None:
        """Start the process now rather than on the first invocation (a warm pool)."""
        with self._lock:
            if self._conn is None:
                self._start()

    def invoke(self, event: Any, *, request_id: str | None = None) -> InvocationResult:
        request_id = request_id or str(uuid.uuid4())
        with self._lock:
            started = time.monotonic()
            try:
                conn = self._conn or self._start()
            except WorkerError as error:
                return InvocationResult(request_id, error=error.detail, duration_s=time.monotonic() - started)
            # The invocation's clock starts after the cold start, as Lambda's timeout does.
            invoked = time.monotonic()
            try:
                conn.send((request_id, event))
            except (OSError, ValueError) as error:  # the process died between invocations
                return self._crashed(request_id, started, f"could not send the event ({error})")
            if not conn.poll(self.runtime.timeout_s):
                self._report(f"{self.runtime.name} timed out after {self.runtime.timeout_s:g} s; restarting")
                self._kill()
                return InvocationResult(
                    request_id,
                    error=_error(
                        "Sandbox.Timedout", f"Task timed out after {self.runtime.timeout_s:.2f} seconds"
                    ),
                    duration_s=time.monotonic() - started,
                )
            try:
                kind, detail = conn.recv()
            except (EOFError, OSError):
                return self._crashed(request_id, started, "the process exited during the invocation")
            duration = time.monotonic() - invoked
            if kind == "ok":
                return InvocationResult(request_id, payload=json.loads(detail), duration_s=duration)
            return InvocationResult(request_id, error=detail, duration_s=duration)

    def _crashed(self, request_id: str, started: float, why: str) -> InvocationResult:
        code = None
        if self._process is not None:
            self._process.join(2)  # the pipe closes a moment before the exit status is there
            code = self._process.exitcode
        self._report(f"{self.runtime.name} worker crashed: {why} (exit code {code}); it restarts")
        self._kill()
        return InvocationResult(
            request_id,
            error=_error("Runtime.ExitError", f"{why} (exit code {code})"),
            duration_s=time.monotonic() - started,
        )

    def _report(self, message: str) -> None:
        log.warning(message)
        if self._on_crash is not None:
            self._on_crash(message)

    def request_stop(self) -> None:
        """Ask the process to exit after its current invocation (see `stop`)."""
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(_STOP)

    def stop(self, timeout: float = 2.0) -> None:
        self.request_stop()
        with self._lock:
            if self._process is not None:
                self._process.join(timeout)
            self._kill()


class WorkerError(Exception):
    """A worker could not become ready (its handler failed to import, or the process died)."""

    def __init__(self, detail: dict[str, str], function: str = "") -> None:
        super().__init__(f"{function}: {detail['errorType']}: {detail['errorMessage']}".lstrip(": "))
        self.detail = detail
        self.function = function


@dataclass
class LocalFunction:
    """A function with a small pool of workers: its concurrency, as Lambda would scale it."""

    runtime: FunctionRuntime
    concurrency: int = 1
    on_crash: Callable[[str], None] | None = None
    _idle: queue.Queue[FunctionWorker] = field(default_factory=queue.Queue, init=False)
    _workers: list[FunctionWorker] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        for _ in range(self.concurrency):
            worker = FunctionWorker(self.runtime, on_crash=self.on_crash)
            self._workers.append(worker)
            self._idle.put(worker)

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def workers(self) -> list[FunctionWorker]:
        return list(self._workers)

    def warm(self) -> None:
        """Start every worker (cold starts up front, so the first events are not slowed)."""
        errors = []
        for worker in self._workers:
            try:
                worker.start()
            except WorkerError as error:
                errors.append(error)
        if errors:
            raise errors[0]

    @contextlib.contextmanager
    def _worker(self) -> Iterator[FunctionWorker]:
        worker = self._idle.get()
        try:
            yield worker
        finally:
            self._idle.put(worker)

    def invoke(self, event: Any, *, request_id: str | None = None) -> InvocationResult:
        with self._worker() as worker:
            return worker.invoke(event, request_id=request_id)

    def stop(self) -> None:
        for worker in self._workers:
            worker.request_stop()
        for worker in self._workers:
            worker.stop()
