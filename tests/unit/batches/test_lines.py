"""The manifest reader: lines and their byte offsets whatever the chunking, overlong lines kept short,
and the batch's name from its object version."""

from __future__ import annotations

import json

import pytest

from falflow.batches.lines import MAX_LINE_BYTES, RawLine, batch_name, is_defaults, line_names, read_lines

TEXT = b'{"a": 1}\n\n  {"b": 2}  \n{"c": 3}'


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 4096])
def test_lines_and_offsets_do_not_depend_on_how_the_stream_is_chunked(size: int) -> None:
    lines = list(read_lines(chunked(TEXT, size)))
    assert [(line.number, line.text) for line in lines] == [
        (1, b'{"a": 1}'),
        (3, b'{"b": 2}'),
        (4, b'{"c": 3}'),
    ]
    for line in lines:
        assert TEXT[line.start : line.end].strip() == line.text
    assert lines[-1].end == len(TEXT)


def test_reading_from_an_offset_resumes_the_numbering_where_it_stopped() -> None:
    first = list(read_lines([TEXT]))
    resumed = list(read_lines([TEXT[first[0].end :]], start=first[0].end, first_number=2))
    assert resumed == first[1:]


def test_an_overlong_line_is_kept_short_and_the_next_line_keeps_its_offset() -> None:
    long = b'{"x": "' + b"y" * (MAX_LINE_BYTES * 2) + b'"}'
    data = long + b"\n" + b'{"after": 1}\n'
    lines = list(read_lines(chunked(data, 65536)))
    assert len(lines[0].text) == MAX_LINE_BYTES + 1
    assert lines[0].end == len(long) + 1
    assert lines[1] == RawLine(number=2, start=len(long) + 1, end=len(data), text=b'{"after": 1}')


def test_a_defaults_line_is_told_from_a_job_line() -> None:
    defaults = RawLine(1, 0, 1, json.dumps({"defaults": {"model": "fal-ai/flux/dev"}}).encode())
    job = RawLine(1, 0, 1, json.dumps({"custom_id": "a", "defaults": 1}).encode())
    assert is_defaults(defaults)
    assert not is_defaults(job)
    assert not is_defaults(RawLine(1, 0, 1, b'{"defaults": '))


def test_a_line_names_its_custom_id_and_model_or_takes_the_defaults_model() -> None:
    line = RawLine(2, 0, 1, b'{"custom_id": "c-1", "input": {}}')
    assert line_names(line, {"model": "fal-ai/flux/dev"}) == ("c-1", "fal-ai/flux/dev")
    assert line_names(RawLine(3, 0, 1, b"not json"), {}) == (None, None)


def test_a_batch_is_named_by_its_file_and_version() -> None:
    name = batch_name("bucket", "batches/My Cats!.jsonl", "v1")
    assert name.startswith("My-Cats-")
    assert name == batch_name("bucket", "batches/My Cats!.jsonl", "v1")
    assert name != batch_name("bucket", "batches/My Cats!.jsonl", "v2")
