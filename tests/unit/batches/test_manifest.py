"""A manifest line becomes a job message of its batch, or a bad line with its reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from falflow.batches.lines import RawLine
from falflow.jobs.batch import batch_job_id, batch_of_job
from falflow.submit.batches.manifest import BadLine, GoodLine, LineParser
from falflow.submit.request import RequestRejectedError, validate_request

MODEL = "fal-ai/flux/dev"


def raw(data: Any, number: int = 2) -> RawLine:
    text = data if isinstance(data, bytes) else json.dumps(data).encode()
    return RawLine(number, 0, len(text), text)


def test_a_line_takes_the_defaults_and_its_job_id_derives_from_the_batch_and_custom_id() -> None:
    parser = LineParser("cats-1234abcd", {"priority": "low"})
    assert (
        parser.take_defaults(raw({"defaults": {"model": MODEL, "metadata": {"team": "art", "x": 1}}}, 1))
        is None
    )
    line = parser.parse(raw({"custom_id": "c-1", "input": {"prompt": "a cat"}, "metadata": {"x": 2}}))
    assert isinstance(line, GoodLine)
    assert line.job_id == batch_job_id("cats-1234abcd", "c-1")
    assert batch_of_job(line.job_id) == "cats-1234abcd"
    assert line.request.model == MODEL
    assert line.request.priority == "low"
    assert line.request.metadata == {"team": "art", "x": 2}
    assert validate_request(line.message) == line.request  # the message is a valid job message


@pytest.mark.parametrize(
    ("text", "error_type"),
    [
        (b"{nope", "malformed_json"),
        (b"[1, 2]", "invalid_line"),
        (json.dumps({"model": MODEL, "input": {}}).encode(), "invalid_custom_id"),
        (json.dumps({"custom_id": "", "model": MODEL, "input": {}}).encode(), "invalid_custom_id"),
        (json.dumps({"custom_id": "a", "job_id": "x", "model": MODEL, "input": {}}).encode(), "invalid_line"),
        (
            json.dumps({"custom_id": "a", "model": MODEL, "input": {}, "priority": "urgent"}).encode(),
            "invalid_request",
        ),
    ],
)
def test_a_bad_line_says_why(text: bytes, error_type: str) -> None:
    line = LineParser("cats-1234abcd").parse(raw(text))
    assert isinstance(line, BadLine)
    assert line.error_type == error_type
    assert line.as_error()["message"]


def test_a_defaults_line_of_unknown_fields_is_refused() -> None:
    refused = LineParser("b").take_defaults(raw({"defaults": {"input": {"prompt": "x"}}}, 1))
    assert refused is not None
    assert refused.error_type == "invalid_defaults"


def test_job_ids_of_batch_lines_are_reserved() -> None:
    with pytest.raises(RequestRejectedError, match="reserved for batch lines"):
        validate_request({"job_id": "b:cats-1234abcd:0123456789abcdef01234567", "model": MODEL, "input": {}})
    with pytest.raises(RequestRejectedError, match="its batch and custom_id derive"):
        validate_request(
            {
                "job_id": "b:cats-1234abcd:0123456789abcdef01234567",
                "model": MODEL,
                "input": {},
                "batch": {"name": "cats-1234abcd", "custom_id": "c-1", "line": 2},
            }
        )
