"""OpenAPI description of the V2 routes, which are plain Starlette routes and so not introspected."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

__all__ = ["install_v2_openapi"]

_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BF16",
                "BYTES",
            ],
        },
        "shape": {"type": "array", "items": {"type": "integer"}},
        "parameters": {"type": "object"},
        "data": {"description": "Row-major data, flat or nested (absent when binary_data_size is set)"},
    },
}
_SCHEMAS: dict[str, Any] = {
    "V2Tensor": _TENSOR,
    "V2InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                },
            },
        },
    },
    "V2InferenceResponse": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
        },
    },
    "V2Error": {"type": "object", "properties": {"error": {"type": "string"}}},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _get(summary: str, ok: str = "OK") -> dict[str, Any]:
    return {
        "get": {
            "tags": ["v2"],
            "summary": summary,
            "responses": {
                "200": {"description": ok, "content": {"application/json": {"schema": {"type": "object"}}}},
                "404": {
                    "description": "Unknown model or version",
                    "content": {"application/json": {"schema": _ref("V2Error")}},
                },
                "503": {
                    "description": "Not ready",
                    "content": {"application/json": {"schema": _ref("V2Error")}},
                },
            },
        }
    }


def _infer() -> dict[str, Any]:
    errors = {
        str(code): {"description": text, "content": {"application/json": {"schema": _ref("V2Error")}}}
        for code, text in [
            (400, "Invalid input"),
            (404, "Unknown model or version"),
            (413, "Body too large"),
            (500, "Model failed"),
            (503, "Not ready"),
        ]
    }
    return {
        "post": {
            "tags": ["v2"],
            "summary": "Run an inference (JSON, or a JSON header + binary tensors)",
            "parameters": [
                {
                    "name": "Inference-Header-Content-Length",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("V2InferenceRequest")},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": {
                    "description": "Inference result",
                    "content": {"application/json": {"schema": _ref("V2InferenceResponse")}},
                },
                **errors,
            },
        }
    }


def _paths() -> dict[str, Any]:
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "Version number or alias",
    }
    paths: dict[str, Any] = {
        "/v2/health/live": _get("Server liveness"),
        "/v2/health/ready": _get("Server readiness"),
        "/v2": _get("Server metadata"),
        "/v2/models/{model}": _get("Model metadata (default version)"),
        "/v2/models/{model}/versions/{version}": _get("Model version metadata"),
        "/v2/models/{model}/ready": _get("Model readiness"),
        "/v2/models/{model}/versions/{version}/ready": _get("Model version readiness"),
        "/v2/models/{model}/infer": _infer(),
        "/v2/models/{model}/versions/{version}/infer": _infer(),
    }
    for path, item in paths.items():
        params = ([model] if "{model}" in path else []) + ([version] if "{version}" in path else [])
        for operation in item.values():
            operation["parameters"] = params + operation.get("parameters", [])
    return paths


def install_v2_openapi(app: FastAPI) -> None:
    """Make ``/openapi.json`` (and so ``/docs``) describe the V2 routes next to the management API."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema["paths"] = {**_paths(), **schema.get("paths", {})}
            schema.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
