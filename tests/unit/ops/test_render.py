"""Tables for people: ids whole, long cells folded inside their column, colour only on request."""

from __future__ import annotations

from falflow_tools.ops.render import json_value, painted_state, table

LONG_ID = "s3-" + "0123456789abcdef" * 4  # 67 characters


def test_an_id_is_never_cut_even_on_a_narrow_terminal() -> None:
    rendered = table(["JOB", "STATE", "MODEL"], [[LONG_ID, "COMPLETED", "fal-ai/flux/dev"]], max_width=40)

    assert LONG_ID in rendered
    assert "COMPLETED" in rendered
    assert "…" not in rendered


def test_a_multi_line_value_stays_in_its_cell() -> None:
    rendered = table(["JOB", "ERROR"], [["job-1", "first line\nsecond line"], ["job-2", "ok"]], max_width=80)
    lines = rendered.splitlines()

    assert lines[0].split() == ["JOB", "ERROR"]
    assert lines[2].split() == ["job-1", "first", "line"]
    assert lines[3].split() == ["second", "line"]  # under ERROR, not a row of its own
    assert lines[3].startswith(" ")
    assert lines[4].split() == ["job-2", "ok"]


def test_a_long_cell_folds_instead_of_being_cut() -> None:
    where = "s3://falflow-outputbucket/outputs/" + "x" * 60 + "/image-0.png"
    rendered = table(["JOB", "OUTPUT"], [["job-1", where]], max_width=50)

    assert (
        "".join(
            line[line.index("s3://") :] if "s3://" in line else line.strip()
            for line in rendered.splitlines()[2:]
        )
        == where
    )


def test_markup_in_a_value_is_shown_as_it_is() -> None:
    rendered = table(["JOB", "ERROR"], [["job-1", "[bold]not markup[/bold]"]], max_width=80)

    assert "[bold]not markup[/bold]" in rendered


def test_states_are_coloured_only_when_asked() -> None:
    rows = [["job-1", "FAILED"]]

    assert "\x1b[" not in table(["JOB", "STATE"], rows, colour=False)
    assert "\x1b[" in table(["JOB", "STATE"], rows, colour=True)
    assert painted_state("COMPLETED", colour=False) == "COMPLETED"
    assert painted_state("COMPLETED", colour=True).startswith("\x1b[")


def test_nested_values_are_json_not_python_reprs() -> None:
    assert json_value({"prompt": "a", "n": None, "ok": True}) == '{"prompt": "a", "n": null, "ok": true}'
    assert json_value(["a"]) == '["a"]'
    assert json_value("plain") == "plain"
    assert json_value(3) == "3"


def test_columns_of_short_values_are_kept_whole_and_long_ones_fold() -> None:
    rows = [["job-1", "2026-12-01 23:10:50", "fal-ai/kling-video/v2/master/text-to-video"]]

    lines = table(["JOB", "CHANGED (UTC)", "MODEL"], rows, max_width=50).splitlines()

    assert "2026-12-01 23:10:50" in lines[2]
    assert "".join(line.split()[-1] for line in lines[2:]).endswith("text-to-video")
    assert len(lines) > 3  # the model folded onto more lines
