"""The Kubernetes deployment rendered once per test session, and ways to find things in it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.kustomize_build import build, pod_specs

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"

#: Every folder a user applies with ``kubectl apply -k``: name → folder.
DEPLOYABLE = {
    "single": KUBERNETES / "overlays" / "single",
    "replicas": KUBERNETES / "overlays" / "replicas",
    "keda": KUBERNETES / "keda",
    "prometheus-adapter": KUBERNETES / "prometheus-adapter",
}

#: The folders that deploy the server itself.
SERVER_OVERLAYS = ("single", "replicas", "keda")

Objects = list[dict[str, Any]]


@pytest.fixture(scope="session")
def rendered() -> dict[str, Objects]:
    """Each deployable folder, built as ``kustomize build`` would."""
    return {name: build(folder) for name, folder in DEPLOYABLE.items()}


def find_all(objects: Objects, kind: str) -> Objects:
    """Every object of ``kind``."""
    return [obj for obj in objects if obj["kind"] == kind]


def find(objects: Objects, kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of ``kind`` (named ``name``, if given); fails when there is not exactly one."""
    matches = [obj for obj in find_all(objects, kind) if name is None or obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in matches]}"
    return matches[0]


def generated_configmap(objects: Objects, name: str) -> dict[str, Any]:
    """The ConfigMap generated as ``name`` (its rendered name carries a hash suffix)."""
    matches = [obj for obj in find_all(objects, "ConfigMap") if obj["metadata"]["name"].rpartition("-")[0] == name]
    assert len(matches) == 1, f"expected one generated ConfigMap {name}"
    return matches[0]


def server_deployment(objects: Objects) -> dict[str, Any]:
    """The Ferryman Deployment."""
    return find(objects, "Deployment", "ferryman")


def server_container(objects: Objects) -> dict[str, Any]:
    """The ``ferryman`` container of the Deployment."""
    spec = server_deployment(objects)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "ferryman")


def all_containers(objects: Objects) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) for every container and init container of every workload."""
    for obj in objects:
        for spec in pod_specs(obj):
            for container in spec.get("initContainers", []) + spec["containers"]:
                yield spec, container


def config_env(objects: Objects) -> dict[str, str]:
    """The settings the server container gets from ConfigMaps (envFrom), as environment variables."""
    env: dict[str, str] = {}
    configmaps = {cm["metadata"]["name"]: cm for cm in find_all(objects, "ConfigMap")}
    for source in server_container(objects).get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmaps[source["configMapRef"]["name"]].get("data", {}))
    return env
