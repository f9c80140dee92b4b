"""The kustomize renderer the deployment tests rely on: generators, hashes, strategic merge, refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kustomize_build import KustomizeError, build, configmap_hash
from tests.deploy.strategic_merge import DELETE, PatchError, strategic_merge

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "web:1",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "envFrom": [{"configMapRef": {"name": "settings"}}],
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    },
                    {"name": "sidecar", "image": "sidecar:1"},
                ],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
            },
        },
    },
}


def write(folder: Path, files: dict[str, Any]) -> Path:
    """Write ``files`` (YAML documents, or text) under ``folder``."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, list):
            path.write_text(yaml.safe_dump_all(content))
        else:
            path.write_text(yaml.safe_dump(content))
    return folder


def kustomization(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", **fields}


def containers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in obj["spec"]["template"]["spec"]["containers"]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # kustomize's own vectors (api/hasher/hasher_test.go), all with an empty name
        ({}, "42745tchd9"),
        ({"one": ""}, "9g67k2htb6"),
        ({"two": "2", "one": "", "three": "3"}, "f5h7t85m9b"),
    ],
)
def test_configmap_hash_is_kustomizes(data: dict[str, str], expected: str) -> None:
    assert configmap_hash({"kind": "ConfigMap", "metadata": {"name": ""}, "data": data}) == expected


def test_containers_env_and_volumes_merge_by_their_keys() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "web", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}],
                    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                }
            }
        }
    }
    merged = strategic_merge(DEPLOYMENT, patch)
    web = containers(merged)["web"]
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}]
    assert web["image"] == "web:1"  # untouched fields stay
    assert set(containers(merged)) == {"web", "sidecar"}
    assert [v["name"] for v in merged["spec"]["template"]["spec"]["volumes"]] == ["tmp", "data"]
    assert DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] == "2"  # input unchanged


def test_lists_without_a_merge_strategy_are_replaced() -> None:
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "envFrom": [{"secretRef": {"name": "s"}}]}]}}}
    }
    assert containers(strategic_merge(DEPLOYMENT, patch))["web"]["envFrom"] == [{"secretRef": {"name": "s"}}]


def test_null_and_delete_directives_remove() -> None:
    patch = {
        "spec": {
            "strategy": {"type": "Recreate", "rollingUpdate": None},
            "template": {
                "spec": {
                    "containers": [{"name": "sidecar", "$patch": "delete"}],
                    "volumes": [{"name": "tmp", "emptyDir": None, "hostPath": {"path": "/x"}}],
                }
            },
        }
    }
    merged = strategic_merge(DEPLOYMENT, patch)
    assert merged["spec"]["strategy"] == {"type": "Recreate"}
    assert set(containers(merged)) == {"web"}
    assert merged["spec"]["template"]["spec"]["volumes"] == [{"name": "tmp", "hostPath": {"path": "/x"}}]
    assert strategic_merge(DEPLOYMENT, {"$patch": "delete"}) is DELETE


def test_retain_keys_is_not_applied_as_in_kustomize() -> None:
    # kustomize leaves rollingUpdate in place here (its issue #470), which the API server then refuses;
    # our overlays say `rollingUpdate: null`, and test_manifests checks the rendered result.
    merged = strategic_merge(DEPLOYMENT, {"spec": {"strategy": {"type": "Recreate"}}})
    assert merged["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_unsupported_directives_and_keyless_items_are_refused() -> None:
    with pytest.raises(PatchError, match=r"\$retainKeys"):
        strategic_merge(DEPLOYMENT, {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}})
    with pytest.raises(PatchError, match="merge key 'name'"):
        strategic_merge(DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}})


def test_custom_resources_merge_maps_and_replace_lists() -> None:
    monitor = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m"},
        "spec": {"endpoints": [{"port": "http", "path": "/metrics"}], "selector": {"matchLabels": {"a": "b"}}},
    }
    merged = strategic_merge(monitor, {"spec": {"endpoints": [{"port": "http", "interval": "5s"}]}})
    assert merged["spec"]["endpoints"] == [{"port": "http", "interval": "5s"}]
    assert merged["spec"]["selector"] == {"matchLabels": {"a": "b"}}


def test_build_generates_hashed_configmaps_and_renames_references(tmp_path: Path) -> None:
    base = write(
        tmp_path / "base",
        {
            "kustomization.yaml": kustomization(
                resources=["deployment.yaml"],
                configMapGenerator=[
                    {"name": "settings", "envs": ["app.env"]},
                    {"name": "scripts", "files": ["run.sh"]},
                ],
            ),
            "deployment.yaml": DEPLOYMENT,
            "app.env": "# a comment\n\nA=1\nB=x=y\n",
            "run.sh": "echo hi\n",
        },
    )
    objects = build(base)
    configmaps = {o["metadata"]["name"].rpartition("-")[0]: o for o in objects if o["kind"] == "ConfigMap"}
    assert configmaps["settings"]["data"] == {"A": "1", "B": "x=y"}
    assert configmaps["scripts"]["data"] == {"run.sh": "echo hi\n"}
    settings_name = configmaps["settings"]["metadata"]["name"]
    assert (
        settings_name
        == f"settings-{configmap_hash({'metadata': {'name': 'settings'}, 'data': {'A': '1', 'B': 'x=y'}})}"
    )
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert containers(deployment)["web"]["envFrom"] == [{"configMapRef": {"name": settings_name}}]

    overlay = write(
        tmp_path / "overlay",
        {
            "kustomization.yaml": kustomization(
                resources=["../base"],
                configMapGenerator=[{"name": "settings", "behavior": "merge", "envs": ["more.env"]}],
                patches=[{"path": "patch.yaml"}],
            ),
            "more.env": "C=3\n",
            "patch.yaml": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {"replicas": 2},
            },
        },
    )
    objects = build(overlay)
    merged = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("settings-"))
    assert merged["data"] == {"A": "1", "B": "x=y", "C": "3"}
    assert merged["metadata"]["name"] != settings_name  # new content, new name: pods roll
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert containers(deployment)["web"]["envFrom"] == [{"configMapRef": {"name": merged["metadata"]["name"]}}]


def test_delete_patch_removes_an_object(tmp_path: Path) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    folder = write(
        tmp_path,
        {
            "kustomization.yaml": kustomization(
                resources=["all.yaml"],
                patches=[{"patch": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n$patch: delete\n"}],
            ),
            "all.yaml": [DEPLOYMENT, service],
        },
    )
    assert [o["kind"] for o in build(folder)] == ["Deployment"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"kustomization.yaml": kustomization(namePrefix="x-")}, "does not implement: \\['namePrefix'\\]"),
        ({"kustomization.yaml": kustomization(resources=["../outside.yaml"])}, "load restrictor"),
        (
            {
                "kustomization.yaml": kustomization(resources=["d.yaml"], patches=[{"path": "p.yaml"}]),
                "d.yaml": DEPLOYMENT,
                "p.yaml": "- op: add\n  path: /spec/replicas\n  value: 2\n",
            },
            "JSON 6902",
        ),
        (
            {
                "kustomization.yaml": kustomization(resources=["d.yaml"], patches=[{"path": "p.yaml"}]),
                "d.yaml": DEPLOYMENT,
                "p.yaml": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "other"}},
            },
            "matches no object",
        ),
        (
            {
                "kustomization.yaml": kustomization(configMapGenerator=[{"name": "c", "envs": ["e.env"]}]),
                "e.env": "HOME\n",
            },
            "expected KEY=VALUE",
        ),
        (
            {
                "kustomization.yaml": kustomization(resources=["d.yaml", "e.yaml"]),
                "d.yaml": DEPLOYMENT,
                "e.yaml": DEPLOYMENT,
            },
            "duplicate objects",
        ),
    ],
)
def test_build_refuses_what_it_cannot_render_faithfully(tmp_path: Path, files: dict[str, Any], message: str) -> None:
    (tmp_path / "outside.yaml").write_text(yaml.safe_dump(DEPLOYMENT))
    with pytest.raises(KustomizeError, match=message):
        build(write(tmp_path / "k", files))
