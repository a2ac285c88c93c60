"""Log lines for people, and function names as people type them."""

from __future__ import annotations

import json

import pytest

from falflow_tools.ops.logs import function_logical_id, readable
from falflow_tools.ops.target import OpsError


def test_a_powertools_line_reads_as_time_level_message_and_its_own_keys() -> None:
    line = json.dumps(
        {
            "level": "WARNING",
            "location": "x:1",
            "message": "record failed",
            "timestamp": "2026-12-01 20:26:47,588+0000",
            "service": "falflow-store",
            "cold_start": True,
            "function_request_id": "r-1",
            "job_id": "msg-1",
            "error": {"type": "ValueError"},
        }
    )

    assert readable(line) == (
        '2026-12-01 20:26:47,588+0000 WARNING record failed  job_id=msg-1 error={"type": "ValueError"}'
    )


def test_other_lines_are_left_as_they_are() -> None:
    assert readable("Traceback (most recent call last):") == "Traceback (most recent call last):"
    assert readable("[1, 2]") == "[1, 2]"


@pytest.mark.parametrize("name", ["submit", "Submit", "SubmitFunction", "submitfunction"])
def test_a_function_is_found_by_its_short_or_logical_name(name: str) -> None:
    assert function_logical_id(name) == "SubmitFunction"


def test_an_unknown_function_names_the_known_ones() -> None:
    with pytest.raises(OpsError, match=r"no function 'billing'.*collect, reconcile, store, submit, webhook"):
        function_logical_id("billing")
