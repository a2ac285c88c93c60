"""`models show`: a model's input fields from its OpenAPI document."""

from __future__ import annotations

from typing import Any

from falflow.fal import ModelInfo
from falflow_tools.ops.models import input_fields


def openapi(input_schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.0.4",
        "paths": {
            "/fal-ai/x": {
                "post": {"requestBody": {"content": {"application/json": {"schema": input_schema}}}}
            }
        },
        "components": {"schemas": components},
    }


def test_fields_give_name_type_required_and_default() -> None:
    document = openapi(
        {"$ref": "#/components/schemas/XInput"},
        {
            "XInput": {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"type": "string", "description": "What to draw"},
                    "size": {
                        "anyOf": [
                            {"enum": ["square", "wide"], "type": "string"},
                            {"$ref": "#/components/schemas/Size"},
                        ],
                        "default": "square",
                    },
                    "seed": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
                    "loras": {"type": "array", "items": {"$ref": "#/components/schemas/Lora"}},
                    "format": {"allOf": [{"$ref": "#/components/schemas/Format"}], "default": "png"},
                },
            },
            "Size": {"type": "object"},
            "Lora": {"type": "object"},
            "Format": {"enum": ["png", "jpeg"], "type": "string"},
        },
    )

    fields = input_fields(ModelInfo(endpoint_id="fal-ai/x", openapi=document))

    assert [(f.name, f.type, f.required) for f in fields] == [
        ("prompt", "string", True),
        ("size", "enum(square|wide) | Size", False),
        ("seed", "integer", False),
        ("loras", "array[Lora]", False),
        ("format", "enum(png|jpeg)", False),
    ]
    assert fields[0].description == "What to draw"
    assert fields[0].to_json() == {
        "name": "prompt",
        "type": "string",
        "required": True,
        "description": "What to draw",
    }
    assert fields[2].to_json()["default"] is None  # a default of null is still a default
    assert "default" not in fields[3].to_json()
