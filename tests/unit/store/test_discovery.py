"""Output discovery and naming: every nested file found; no name can leave the job's prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falflow.completion.keys import inbox_key, job_output_prefix, key_segment, output_key
from falflow.store.discovery import (
    OutputFile,
    UnsafeNameError,
    checked_name,
    find_output_files,
    output_names,
    rewrite_urls,
    safe_content_type,
)

PAYLOAD = {
    "images": [
        {"url": "https://v3.fal.media/files/a/image-0.png", "content_type": "image/png", "width": 1},
        {"url": "https://v3.fal.media/files/a/image-1.png", "content_type": "image/png"},
    ],
    "video": {"url": "https://v3b.fal.media/files/b/output.mp4", "file_name": "clip.mp4", "file_size": 42},
    "audio_file": {"url": "https://v3.fal.media/files/c/audio.wav", "content_type": "audio/wav"},
    "nested": {"deep": [{"archive": {"url": "https://v3.fal.media/files/d/bundle.zip"}}]},
    "seed": 7,
    "timings": {"inference": 1.2},
    "prompt": "no url here",
}


def test_every_file_is_found_with_its_place_and_hints() -> None:
    files = find_output_files(PAYLOAD)
    assert [f.path for f in files] == [
        "/images/0",
        "/images/1",
        "/video",
        "/audio_file",
        "/nested/deep/0/archive",
    ]
    video = files[2]
    assert (video.file_name, video.file_size, video.content_type) == ("clip.mp4", 42, None)
    assert files[0].content_type == "image/png"


def test_names_are_distinct_and_deterministic() -> None:
    files = find_output_files(PAYLOAD)
    names = output_names(files)
    assert names == ["image-0.png", "image-1.png", "clip.mp4", "audio.wav", "bundle.zip"]
    assert output_names(find_output_files(PAYLOAD)) == names
    same = [OutputFile((i,), "https://v3.fal.media/x/result.json") for i in range(3)]
    assert output_names(same) == ["0-result.json", "1-result.json", "2-result.json"]  # result.json is ours


def test_rewrite_replaces_only_the_urls_and_leaves_the_payload_alone() -> None:
    files = find_output_files(PAYLOAD)
    rewritten = rewrite_urls(PAYLOAD, {f.pointer: f"s3://b/{i}" for i, f in enumerate(files)})
    assert rewritten["images"][1]["url"] == "s3://b/1"
    assert rewritten["nested"]["deep"][0]["archive"]["url"] == "s3://b/4"
    assert rewritten["images"][0]["width"] == 1
    assert PAYLOAD["images"][0]["url"].startswith("https://")  # the original is untouched


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "..", "../x", "a/b.png", "a\\b.png", "..\\..\\win.ini", "x\x00.png", "..hidden"],
)
def test_path_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        checked_name(name)
    with pytest.raises(UnsafeNameError):
        output_names([OutputFile((), "https://v3.fal.media/f/a.png", file_name=name)])


def test_an_encoded_path_in_the_url_is_refused_too() -> None:
    with pytest.raises(UnsafeNameError):
        output_names([OutputFile((), "https://v3.fal.media/files/..%2F..%2Foutputs%2Fother-job%2Fx.png")])


def test_odd_but_harmless_names_are_made_key_safe() -> None:
    assert checked_name("my image (1).png") == "my_image_1_.png"
    assert checked_name(".env") == "env"
    assert len(checked_name("a" * 500 + ".png")) <= 120
    assert checked_name("a" * 500 + ".png").endswith(".png")


@given(st.text(min_size=1, max_size=80))
def test_no_id_or_name_ever_leaves_its_prefix(text: str) -> None:
    prefix = job_output_prefix(text, output_prefix=text)
    assert prefix.startswith("outputs/")
    assert ".." not in prefix.split("/")
    assert "/" not in key_segment(text)
    try:
        name = checked_name(text)
    except UnsafeNameError:
        return
    if name:
        key = output_key(prefix, name)
        assert key.startswith(prefix)
        assert "/" not in key[len(prefix) :]
    assert inbox_key(text, text, "reconcile").startswith("inbox/")


def test_content_types_must_be_well_formed() -> None:
    assert safe_content_type(None, "video/mp4") == "video/mp4"
    assert safe_content_type("text/html\r\nx: y", "image/png") == "image/png"
    assert safe_content_type("image/png; charset=binary") == "image/png; charset=binary"
    assert safe_content_type("nonsense", None) is None
