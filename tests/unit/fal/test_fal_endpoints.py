from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falflow.fal.endpoints import EndpointId


@pytest.mark.parametrize(
    ("endpoint_id", "owner", "alias", "path", "namespace", "submit_path", "app_path"),
    [
        ("fal-ai/flux/dev", "fal-ai", "flux", "dev", None, "fal-ai/flux/dev", "fal-ai/flux"),
        ("fal-ai/flux", "fal-ai", "flux", None, None, "fal-ai/flux", "fal-ai/flux"),
        (
            "fal-ai/wan/v2.2-a14b/text-to-video",
            "fal-ai",
            "wan",
            "v2.2-a14b/text-to-video",
            None,
            "fal-ai/wan/v2.2-a14b/text-to-video",
            "fal-ai/wan",
        ),
        (
            "workflows/fal-ai/my-flow",
            "fal-ai",
            "my-flow",
            None,
            "workflows",
            "workflows/fal-ai/my-flow",
            "workflows/fal-ai/my-flow",
        ),
        (
            "comfy/someone/graph/run",
            "someone",
            "graph",
            "run",
            "comfy",
            "comfy/someone/graph/run",
            "comfy/someone/graph",
        ),
        ("123-myapp", "123", "myapp", None, None, "123/myapp", "123/myapp"),
        ("42-my-app-v2", "42", "my-app-v2", None, None, "42/my-app-v2", "42/my-app-v2"),
        (
            "owner/app_name/sub_path",
            "owner",
            "app_name",
            "sub_path",
            None,
            "owner/app_name/sub_path",
            "owner/app_name",
        ),
    ],
)
def test_parse_splits_like_fals_clients(
    endpoint_id: str,
    owner: str,
    alias: str,
    path: str | None,
    namespace: str | None,
    submit_path: str,
    app_path: str,
) -> None:
    parsed = EndpointId.parse(endpoint_id)

    assert (parsed.owner, parsed.alias, parsed.path, parsed.namespace) == (owner, alias, path, namespace)
    assert parsed.submit_path == submit_path
    assert parsed.app_path == app_path
    assert str(parsed) == submit_path


@pytest.mark.parametrize(
    "endpoint_id",
    [
        "",
        "flux",
        "abc-myapp",  # legacy form needs a numeric owner
        "123-",
        "fal-ai/",
        "/flux",
        "fal-ai//dev",
        "fal-ai/flux/",
        "workflows",
        "workflows/fal-ai",
        "comfy/",
        "fal ai/flux",
        "fal-ai/flux?x=1",
        "fal-ai/flux#frag",
        "fal-ai/flux/../../admin",
        "fal-ai/./flux",
        "fal-ai/flüx",
    ],
)
def test_invalid_ids_raise_value_error_naming_the_id(endpoint_id: str) -> None:
    with pytest.raises(ValueError, match="invalid fal endpoint id") as raised:
        EndpointId.parse(endpoint_id)
    assert repr(endpoint_id) in str(raised.value)


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=12).filter(
    lambda s: s not in {".", ".."}
)


@given(
    namespace=st.sampled_from([None, "workflows", "comfy"]),
    owner=_segment.filter(lambda s: s not in {"workflows", "comfy"}),
    alias=_segment,
    path=st.lists(_segment, max_size=3),
)
def test_parse_round_trips_and_app_path_drops_only_the_subpath(
    namespace: str | None, owner: str, alias: str, path: list[str]
) -> None:
    endpoint_id = "/".join([*([namespace] if namespace else []), owner, alias, *path])

    parsed = EndpointId.parse(endpoint_id)

    assert parsed.submit_path == endpoint_id
    assert parsed.namespace == namespace
    assert (parsed.owner, parsed.alias) == (owner, alias)
    assert parsed.path == ("/".join(path) or None)
    assert parsed.app_path == "/".join([*([namespace] if namespace else []), owner, alias])
    assert EndpointId.parse(parsed.submit_path) == parsed
