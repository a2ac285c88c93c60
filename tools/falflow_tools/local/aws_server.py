"""moto's server in a process of its own: the local stack's AWS.

moto is pure Python, and each response is built and serialised under the GIL. In the stack's own
process it shared one core with the SQS pollers, the schedules, the front door and the fal
emulator, and under load every AWS call of every function queued behind them (a store batch that
makes ~40 calls overran its timeout). In its own process it has a core to itself, as AWS would.

The process applies `faithful_moto()` (moto made to behave like AWS where falflow depends on it)
and, when asked, delivers every S3 event notification more than once (S3 delivers at least once;
the reliability suite makes it always). It serves until the stack closes its pipe.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from falflow_tools.local.fidelity import faithful_moto

# Spawned, not forked: the stack's process has threads and sockets a fork would copy.
_SPAWN = multiprocessing.get_context("spawn")
_STATS = "stats"


@dataclass(frozen=True)
class AwsServerStats:
    """What the server did that the stack cannot see from outside."""

    # S3 event notifications moto sent (each `copies` times).
    s3_notifications: int


@contextlib.contextmanager
def _repeated_s3_notifications(copies: int, sent: list[int]) -> Iterator[None]:
    """Send each S3 event notification `copies` times (moto sends them all through one function)."""
    from moto.s3 import notifications  # noqa: PLC0415 - moto loads only in the server process

    original: Callable[..., None] = notifications._send_sqs_message

    def repeated(*args: Any, **kwargs: Any) -> None:
        for _ in range(copies):
            original(*args, **kwargs)
        sent[0] += 1

    notifications._send_sqs_message = repeated
    try:
        yield
    finally:
        notifications._send_sqs_message = original


def _serve(host: str, port: int, s3_notification_copies: int, conn: Connection) -> None:
    """The server process: start moto, say where it listens, answer the stack until it hangs up."""
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - moto loads only in the server process

    # Ctrl-C reaches the whole process group: the stack decides when its AWS goes away.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # moto's server logs every request through werkzeug; the stack reports what matters.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    sent = [0]
    with faithful_moto(), _repeated_s3_notifications(s3_notification_copies, sent):
        server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        server.start()
        conn.send(server.get_host_and_port())
        with contextlib.suppress(EOFError, OSError):
            while conn.recv() == _STATS:
                conn.send(AwsServerStats(s3_notifications=sent[0]))
        server.stop()


class AwsServer:
    """Start with `server.start()`; `url` is where it listens; `stop()` ends the process."""

    def __init__(self, host: str, port: int = 0, *, s3_notification_copies: int = 1) -> None:
        self._args = (host, port, s3_notification_copies)
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self.url = ""

    def start(self, timeout_s: float = 60.0) -> None:
        parent, child = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_serve, args=(*self._args, child), name="falflow-aws", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(timeout_s):
            self.stop()
            raise RuntimeError(f"the local AWS server did not start within {timeout_s:.0f} s")
        try:
            host, port = parent.recv()
        except EOFError:
            code = self._process.exitcode if self._process else None
            self.stop()
            raise RuntimeError(f"the local AWS server exited while starting (code {code})") from None
        self.url = f"http://{host}:{port}"

    def stats(self) -> AwsServerStats:
        if self._conn is None:
            raise RuntimeError("the local AWS server is not running")
        with self._lock:
            self._conn.send(_STATS)
            stats: AwsServerStats = self._conn.recv()
        return stats

    def stop(self) -> None:
        """Hang up (the server stops itself), then make sure the process is gone."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
