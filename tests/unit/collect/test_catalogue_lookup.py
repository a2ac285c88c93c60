"""How an endpoint id is judged by the catalogue: itself first, then its listed parents in the app."""

from __future__ import annotations

import pytest

from falflow.catalogue import catalogue_status, lookup_ids


@pytest.mark.parametrize(
    ("endpoint_id", "expected"),
    [
        ("fal-ai/flux/dev", ["fal-ai/flux/dev", "fal-ai/flux"]),
        (
            "fal-ai/flux/dev/image-to-image",
            ["fal-ai/flux/dev/image-to-image", "fal-ai/flux/dev", "fal-ai/flux"],
        ),
        ("fal-ai/fast-sdxl", ["fal-ai/fast-sdxl"]),
        ("workflows/falflow/text-to-image", ["workflows/falflow/text-to-image"]),
        ("workflows/falflow/t2i/step", ["workflows/falflow/t2i/step", "workflows/falflow/t2i"]),
        ("110602490-lora", ["110602490-lora"]),
    ],
)
def test_lookup_ids_walk_up_to_the_app_never_above(endpoint_id: str, expected: list[str]) -> None:
    assert lookup_ids(endpoint_id) == expected


@pytest.mark.parametrize("bad", ["", "flux", "fal-ai/../x", "fal-ai//dev", "workflows/only"])
def test_ids_fal_would_refuse_have_no_candidates(bad: str) -> None:
    assert lookup_ids(bad) == []


@pytest.mark.parametrize(
    ("fal_status", "expected"),
    [
        ("active", "active"),
        ("deprecated", "deprecated"),
        (" Deprecated ", "deprecated"),
        (None, "active"),
        ("beta", "active"),
    ],
)
def test_fal_status_maps_onto_two_values(fal_status: str | None, expected: str) -> None:
    assert catalogue_status(fal_status) == expected
