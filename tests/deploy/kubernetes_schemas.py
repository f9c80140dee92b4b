"""Kubernetes JSON schemas, offline: the API's own (bundled by ``kubernetes-validate``) and ours for CRDs.

``kubernetes-validate`` ships the OpenAPI schemas of every Kubernetes release it supports, converted
to JSON Schema, inside the package — nothing is fetched. The same files carry the strategic-merge
metadata (``x-kubernetes-patch-strategy``, ``x-kubernetes-patch-merge-key``) that
``strategic_merge.py`` follows. Custom resources (ServiceMonitor, ScaledObject) have no bundled
schema: ``schemas/`` holds small ones written from the CRDs' documented fields, covering the fields
we use and refusing unknown ones (so a typo fails), not the whole CRD.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

#: The Kubernetes releases every manifest is validated against: the oldest we support and the
#: newest whose schemas the pinned ``kubernetes-validate`` bundles.
PINNED_VERSIONS = ("1.29", "1.37")

#: The release whose patch metadata the strategic merge follows (it has not changed in years).
MERGE_SCHEMA_VERSION = PINNED_VERSIONS[-1]

CRD_SCHEMA_DIR = Path(__file__).parent / "schemas"

#: Custom resources we validate with our own schemas: (apiVersion, kind) → file in ``schemas/``.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
}

_DEFINITIONS_PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")


class SchemaMissing(Exception):
    """No schema, bundled or ours, for this apiVersion and kind."""


def _schema_dir(version: str) -> Path:
    root = importlib.resources.files(kubernetes_validate).joinpath("kubernetes-json-schema")
    return Path(str(root)) / f"v{version}.0-local"


@functools.cache
def _definitions(version: str) -> dict[str, Any]:
    path = _schema_dir(version) / "_definitions.json"
    if not path.is_file():
        raise SchemaMissing(f"kubernetes-validate bundles no schemas for Kubernetes {version}")
    defs: dict[str, Any] = json.loads(path.read_text())["$defs"]
    return defs


def _resolve(node: dict[str, Any] | None, version: str) -> dict[str, Any] | None:
    """Follow ``$ref`` into the definitions until a node without one."""
    while node is not None and "$ref" in node:
        ref = node["$ref"]
        for prefix in _DEFINITIONS_PREFIXES:
            if ref.startswith(prefix):
                node = _definitions(version).get(ref[len(prefix) :])
                break
        else:
            raise SchemaMissing(f"unexpected $ref {ref}")
    return node


def _schema_file_name(api_version: str, kind: str) -> str:
    group, _, api = api_version.rpartition("/")
    group = group.split(".")[0]
    return f"{kind.lower()}-{group}-{api}.json" if group else f"{kind.lower()}-{api}.json"


@functools.cache
def object_schema(api_version: str, kind: str, version: str = MERGE_SCHEMA_VERSION) -> dict[str, Any] | None:
    """The bundled schema of a built-in kind (None for custom resources)."""
    path = _schema_dir(version) / _schema_file_name(api_version, kind)
    if not path.is_file():
        return None
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


class PatchSchema:
    """A position in an object's schema, for reading the patch strategy of the field under it."""

    def __init__(self, node: dict[str, Any] | None, version: str = MERGE_SCHEMA_VERSION) -> None:
        self._node = node
        self._version = version

    @classmethod
    def for_object(cls, api_version: str, kind: str) -> PatchSchema:
        """The root of a kind's schema; an unknown kind (a CRD) gives a schema that knows nothing."""
        return cls(object_schema(api_version, kind))

    def field(self, name: str) -> PatchSchema:
        """The schema of field ``name`` (the node keeps its own patch annotations)."""
        node = _resolve(self._node, self._version)
        child = (node or {}).get("properties", {}).get(name)
        return PatchSchema(child, self._version)

    def items(self) -> PatchSchema:
        """The schema of this list's items."""
        return PatchSchema((self._node or {}).get("items"), self._version)

    @property
    def list_strategy(self) -> tuple[bool, str | None]:
        """(merge this list instead of replacing it, the key that identifies its items)."""
        node = self._node or {}
        strategies = str(node.get("x-kubernetes-patch-strategy", "")).split(",")
        return "merge" in strategies, node.get("x-kubernetes-patch-merge-key")


@functools.cache
def _crd_validator(file_name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CRD_SCHEMA_DIR / file_name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validation_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Every schema error of ``obj`` for Kubernetes ``version`` (strict: unknown fields are errors)."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    where = f"{key[1]}/{obj.get('metadata', {}).get('name', '?')}"
    if key in CRD_SCHEMAS:
        errors = sorted(_crd_validator(CRD_SCHEMAS[key]).iter_errors(obj), key=lambda e: list(e.path))
        return [f"{where}: {'.'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise SchemaMissing(f"{where}: {exc.message}") from exc
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    return []
