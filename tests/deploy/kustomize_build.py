"""``kustomize build`` for the subset of kustomization features that deploy/kubernetes uses.

There is no kustomize or kubectl binary here, and the PyPI package named ``kustomize`` writes
kustomizations rather than building them, so this renders them itself. Supported, with kustomize's
semantics:

- ``resources``: YAML files (several documents each) inside the kustomization's folder, and other
  kustomization folders anywhere (bases, overlays) — a file outside the folder is refused, as
  kustomize's default load restrictor refuses it.
- ``configMapGenerator``: ``envs`` (``KEY=VALUE`` lines) and ``files``; ``behavior`` create or merge
  (an overlay adding keys to a base's generated ConfigMap). The name gets kustomize's content hash
  suffix (same algorithm, checked against kustomize's own test vectors) and every reference to it
  from a pod template is renamed to match.
- ``patches``: strategic merge patches from ``path`` or inline ``patch``, aimed by the patch's own
  kind and ``metadata.name`` (not ``target``); see ``strategic_merge.py``.

Anything else in a kustomization is refused with its name, so a manifest never silently depends
on a feature this renderer would have skipped. What it cannot promise: that real kustomize orders
the output the same way (order does not matter to ``kubectl apply``), or renames generated names in
places other than pod templates (we reference generated ConfigMaps only from pod templates).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.strategic_merge import DELETE, strategic_merge

__all__ = ["KustomizeError", "build", "configmap_hash", "pod_specs"]

KUSTOMIZATION_FILE = "kustomization.yaml"
SUPPORTED_FIELDS = {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}
GENERATOR_FIELDS = {"name", "behavior", "envs", "files"}
PATCH_FIELDS = {"path", "patch"}


class KustomizeError(Exception):
    """A kustomization this renderer refuses (or kustomize would)."""


@dataclass
class _Resource:
    obj: dict[str, Any]
    hashed_name: bool = False
    """A generated ConfigMap whose name still needs its content-hash suffix."""

    @property
    def key(self) -> tuple[str, str]:
        return self.obj["kind"], self.obj["metadata"]["name"]


def build(folder: Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``folder``: the objects ``kustomize build folder`` prints."""
    resources = _build(folder.resolve(), ())
    renames: dict[str, str] = {}
    for resource in resources:
        if resource.hashed_name:
            name = resource.obj["metadata"]["name"]
            renames[name] = f"{name}-{configmap_hash(resource.obj)}"
            resource.obj["metadata"]["name"] = renames[name]
    objects = [resource.obj for resource in resources]
    for obj in objects:
        for spec in pod_specs(obj):
            _rename_configmap_references(spec, renames)
    return objects


def configmap_hash(configmap: dict[str, Any]) -> str:
    """kustomize's name suffix for a ConfigMap: sha256 of its kind, name and data, ten letters."""
    encoded = {"kind": "ConfigMap", "name": configmap["metadata"]["name"], "data": configmap.get("data", "")}
    if configmap.get("binaryData"):
        encoded["binaryData"] = configmap["binaryData"]
    # Go's json.Marshal: sorted keys, no spaces, HTML characters escaped.
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a workload object (Deployment, Job, CronJob, …); none for other kinds."""
    spec = obj.get("spec", {})
    if obj.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template", {}).get("spec")
    return [template] if isinstance(template, dict) else []


def _build(folder: Path, seen: tuple[Path, ...]) -> list[_Resource]:
    if folder in seen:
        raise KustomizeError(f"cycle through {folder}")
    kustomization = _read_kustomization(folder)
    resources: list[_Resource] = []
    for entry in kustomization.get("resources", []):
        path = (folder / entry).resolve()
        if path.is_dir():
            resources.extend(_build(path, (*seen, folder)))
        else:
            _check_inside(folder, path)
            resources.extend(_Resource(obj) for obj in _load_documents(path))
    for generator in kustomization.get("configMapGenerator", []):
        _generate_configmap(folder, generator, resources)
    for entry in kustomization.get("patches", []):
        _apply_patch(folder, entry, resources)
    keys = [resource.key for resource in resources]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise KustomizeError(f"{folder}: duplicate objects {duplicates}")
    return resources


def _read_kustomization(folder: Path) -> dict[str, Any]:
    path = folder / KUSTOMIZATION_FILE
    if not path.is_file():
        raise KustomizeError(f"{folder}: no {KUSTOMIZATION_FILE}")
    kustomization = yaml.safe_load(path.read_text()) or {}
    if kustomization.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{path}: kind must be Kustomization")
    unsupported = sorted(set(kustomization) - SUPPORTED_FIELDS)
    if unsupported:
        raise KustomizeError(f"{path}: fields this renderer does not implement: {unsupported}")
    result: dict[str, Any] = kustomization
    return result


def _check_inside(folder: Path, path: Path) -> None:
    if not path.is_relative_to(folder):
        raise KustomizeError(f"{path} is not in or below {folder} (kustomize's load restrictor refuses it)")
    if not path.is_file():
        raise KustomizeError(f"{path}: no such file")


def _load_documents(path: Path) -> list[dict[str, Any]]:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= set(doc):
            raise KustomizeError(f"{path}: every document needs apiVersion, kind and metadata")
        if not doc["metadata"].get("name"):
            raise KustomizeError(f"{path}: a {doc['kind']} without metadata.name")
    return documents


def _parse_env_file(path: Path) -> dict[str, str]:
    data: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            # kustomize would copy the variable from the environment of whoever builds: never wanted here
            raise KustomizeError(f"{path}:{number}: expected KEY=VALUE")
        if key != key.strip() or not key:
            raise KustomizeError(f"{path}:{number}: malformed key {key!r}")
        if key in data:
            raise KustomizeError(f"{path}:{number}: {key} given twice")
        data[key] = value
    return data


def _generate_configmap(folder: Path, generator: dict[str, Any], resources: list[_Resource]) -> None:
    unsupported = sorted(set(generator) - GENERATOR_FIELDS)
    if unsupported:
        raise KustomizeError(f"{folder}: configMapGenerator fields not implemented: {unsupported}")
    name = generator["name"]
    data: dict[str, str] = {}
    for entry in generator.get("envs", []):
        path = (folder / entry).resolve()
        _check_inside(folder, path)
        data.update(_parse_env_file(path))
    for entry in generator.get("files", []):
        key, _, source = entry.rpartition("=")
        path = (folder / source).resolve()
        _check_inside(folder, path)
        data[key or path.name] = path.read_text()
    behavior = generator.get("behavior", "create")
    existing = [r for r in resources if r.key == ("ConfigMap", name)]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{folder}: ConfigMap {name} exists already (use behavior: merge)")
        configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        resources.append(_Resource(configmap, hashed_name=True))
    elif behavior == "merge":
        if not existing or not existing[0].hashed_name:
            raise KustomizeError(f"{folder}: behavior merge needs a generated ConfigMap {name} from a base")
        existing[0].obj.setdefault("data", {}).update(data)
    else:
        raise KustomizeError(f"{folder}: configMapGenerator behavior {behavior!r} not implemented")


def _apply_patch(folder: Path, entry: dict[str, Any], resources: list[_Resource]) -> None:
    unsupported = sorted(set(entry) - PATCH_FIELDS)
    if unsupported:
        raise KustomizeError(f"{folder}: patch fields not implemented: {unsupported}")
    if ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{folder}: a patch needs exactly one of path and patch")
    if "path" in entry:
        path = (folder / entry["path"]).resolve()
        _check_inside(folder, path)
        text = path.read_text()
    else:
        text = entry["patch"]
    patch = yaml.safe_load(text)
    if not isinstance(patch, dict):
        raise KustomizeError(f"{folder}: only strategic merge patches are implemented (JSON 6902 is not)")
    kind, name = patch.get("kind"), patch.get("metadata", {}).get("name")
    if not kind or not name:
        raise KustomizeError(f"{folder}: a patch names its target with kind and metadata.name")
    matches = [r for r in resources if r.key == (kind, name)]
    if not matches:
        raise KustomizeError(f"{folder}: patch for {kind}/{name} matches no object")
    resource = matches[0]
    if patch.get("apiVersion") != resource.obj["apiVersion"]:
        raise KustomizeError(f"{folder}: patch for {kind}/{name} has apiVersion {patch.get('apiVersion')}")
    result = strategic_merge(resource.obj, patch)
    if result is DELETE:
        resources.remove(resource)
    else:
        resource.obj = result


def _rename_configmap_references(spec: dict[str, Any], renames: dict[str, str]) -> None:
    def rename(holder: dict[str, Any] | None) -> None:
        if holder is not None and holder.get("name") in renames:
            holder["name"] = renames[holder["name"]]

    for container in spec.get("containers", []) + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            rename(source.get("configMapRef"))
        for variable in container.get("env", []):
            rename(variable.get("valueFrom", {}).get("configMapKeyRef"))
    for volume in spec.get("volumes", []):
        rename(volume.get("configMap"))
        for source in volume.get("projected", {}).get("sources", []):
            rename(source.get("configMap"))
