"""An SQS endpoint that takes messages and counts them, for bench/batch_fanout.py.

    python -m bench.sqs_sink PORT        (what sqs_sink() runs; GET /stats/QUEUE_NAME counts)

Why not moto's SQS: moto works out every queue attribute, ApproximateNumberOfMessages among them,
for each message it takes, by scanning the queue, so sending n messages costs O(n²) — at 2,000
messages on the queue a SendMessageBatch call took ~0.4 s (moto 5.2.5), and a 100,000-line
fan-out would measure moto, not the fan-out. This answers SendMessage and SendMessageBatch as SQS
does (the JSON protocol, an MD5 of each body that botocore checks) at once, and keeps per queue
how many messages it took and how many distinct jobs they name, so a message sent twice shows.
S3 and DynamoDB stay moto's.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.services import process
from falflow_tools.net import free_port

_lock = threading.Lock()
_messages: Counter[str] = Counter()  # queue name -> messages taken
_jobs: dict[str, set[str]] = {}  # queue name -> the distinct job ids (or custom_ids) they name
_continuations: Counter[str] = Counter()


def _take(queue_url: str, body: str) -> dict[str, str]:
    queue = queue_url.rstrip("/").rsplit("/", 1)[-1]
    message = json.loads(body)
    with _lock:
        _messages[queue] += 1
        if "batch_continue" in message:
            _continuations[queue] += 1
        else:
            _jobs.setdefault(queue, set()).add(str(message.get("job_id") or message.get("custom_id")))
    return {"MessageId": str(uuid.uuid4()), "MD5OfMessageBody": hashlib.md5(body.encode()).hexdigest()}


class _Sqs(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        action = self.headers.get("X-Amz-Target", "").removeprefix("AmazonSQS.")
        if action == "SendMessage":
            self._answer(200, _take(request["QueueUrl"], request["MessageBody"]))
        elif action == "SendMessageBatch":
            taken = [
                {"Id": entry["Id"], **_take(request["QueueUrl"], entry["MessageBody"])}
                for entry in request["Entries"]
            ]
            self._answer(200, {"Successful": taken, "Failed": []})
        else:
            self._answer(400, {"__type": "com.amazonaws.sqs#UnsupportedOperation", "message": action})

    def do_GET(self) -> None:
        queue = self.path.rstrip("/").rsplit("/", 1)[-1]
        with _lock:
            stats = {
                "messages": _messages[queue],
                "jobs": len(_jobs.get(queue, ())),
                "continuations": _continuations[queue],
            }
        self._answer(200, stats)

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def sqs_sink() -> Iterator[str]:
    """The sink in a process of its own; yields its endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process([sys.executable, "-m", "bench.sqs_sink", str(port)], f"{url}/stats/ready"):
        yield url


def stats(endpoint: str, queue: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{endpoint}/stats/{queue}", timeout=10) as answer:
        counted: dict[str, int] = json.load(answer)
    return counted


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), _Sqs).serve_forever()
