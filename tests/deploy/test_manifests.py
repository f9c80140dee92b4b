"""deploy/kubernetes, rendered: valid against the Kubernetes schemas, wired together, locked down.

Schema validity is necessary but not enough — a Service whose selector matches no pod, a probe on
a port the container does not declare, or ``Recreate`` with a leftover ``rollingUpdate`` all pass
the schemas. The wiring checks below catch those before a cluster does.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
import yaml

import ferryman
from tests.deploy.conftest import (
    DEPLOYABLE,
    REPO,
    SERVER_OVERLAYS,
    Objects,
    all_containers,
    config_env,
    find,
    find_all,
    generated_configmap,
    server_container,
    server_deployment,
)
from tests.deploy.kubernetes_schemas import CRD_SCHEMA_DIR, PINNED_VERSIONS, validation_errors
from tests.deploy.kustomize_build import pod_specs

SERVER_LABELS = {"app.kubernetes.io/name": "ferryman", "app.kubernetes.io/component": "server"}
DOCS = REPO / "docs" / "deployment.md"


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (``500m``, ``2``, ``2Gi``) as a number (cores, or bytes)."""
    match = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|Ti|k|M|G)?", str(value))
    assert match, f"unexpected quantity {value!r}"
    scale = {None: 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    return float(match.group(1)) * scale[match.group(2)]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels only: we use no expressions) selects ``labels``."""
    assert set(selector) <= {"matchLabels"}, "matchExpressions are not checked here"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def pod_labels(objects: Objects) -> dict[str, str]:
    labels: dict[str, str] = server_deployment(objects)["spec"]["template"]["metadata"]["labels"]
    return labels


def container_port(container: dict[str, Any], port: str | int) -> int:
    """The number of a container port given by name or number; fails when the container lacks it."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} declares no port {port!r}")


def probes(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in container}


# -- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", PINNED_VERSIONS)
@pytest.mark.parametrize("folder", DEPLOYABLE)
def test_every_object_is_valid_for_the_pinned_kubernetes_versions(
    rendered: dict[str, Objects], folder: str, version: str
) -> None:
    objects = rendered[folder]
    assert objects
    errors = [error for obj in objects for error in validation_errors(obj, version)]
    assert not errors, "\n".join(errors)


def test_the_validation_catches_mistakes(rendered: dict[str, Objects]) -> None:
    deployment = server_deployment(rendered["replicas"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    assert validation_errors(typo, PINNED_VERSIONS[0])
    bad_port = {**container, "ports": [{"name": "http", "containerPort": "8080"}]}
    broken = {**deployment, "spec": {**deployment["spec"], "template": {"spec": {"containers": [bad_port]}}}}
    assert validation_errors(broken, PINNED_VERSIONS[0])
    monitor = find(rendered["replicas"], "ServiceMonitor")
    assert validation_errors({**monitor, "spec": {**monitor["spec"], "endpoint": []}}, PINNED_VERSIONS[0])
    scaled = find(rendered["keda"], "ScaledObject")
    trigger = {"type": "prometheus", "metadata": {"serverAddress": "http://p:9090", "query": "up"}}  # no threshold
    assert validation_errors({**scaled, "spec": {**scaled["spec"], "triggers": [trigger]}}, PINNED_VERSIONS[0])


def test_prometheus_adapter_rules_are_well_formed(rendered: dict[str, Objects]) -> None:
    schema = json.loads((CRD_SCHEMA_DIR / "prometheus-adapter-config.json").read_text())
    config = yaml.safe_load(find(rendered["prometheus-adapter"], "ConfigMap")["data"]["config.yaml"])
    jsonschema.Draft202012Validator(schema).validate(config)
    for rule in config["rules"]:
        re.compile(rule["name"]["matches"])
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
        assert set(rule["resources"]["overrides"]) >= {"namespace", "pod"}, "the HPA's Pods metric needs pod labels"


# -- what each overlay is ------------------------------------------------------------------------


def test_single_is_one_pod_on_a_volume_without_autoscaling(rendered: dict[str, Objects]) -> None:
    objects = rendered["single"]
    spec = server_deployment(objects)["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}, "two pods must never share the SQLite file"
    assert not find_all(objects, "HorizontalPodAutoscaler") and not find_all(objects, "ScaledObject")
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    home_mount = next(m for m in server_container(objects)["volumeMounts"] if m["mountPath"] == "/var/lib/ferryman")
    home = volumes[home_mount["name"]]
    assert set(home) == {"name", "persistentVolumeClaim"}
    assert find(objects, "PersistentVolumeClaim", home["persistentVolumeClaim"]["claimName"])
    env = config_env(objects)
    assert "FERRYMAN_DATABASE_URL" not in env and "FERRYMAN_ARTIFACTS_URL" not in env  # SQLite + files under home


def test_replicas_share_postgresql_and_s3_and_autoscale(rendered: dict[str, Objects]) -> None:
    objects = rendered["replicas"]
    spec = server_deployment(objects)["spec"]
    assert "replicas" not in spec, "the HPA owns the replica count"
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    hpa = find(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["minReplicas"] >= 3
    container = server_container(objects)
    database = next(e for e in container["env"] if e["name"] == "FERRYMAN_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": "ferryman-database", "key": "url"}
    assert {"secretRef": {"name": "ferryman-object-store"}} in container["envFrom"]
    assert config_env(objects)["FERRYMAN_ARTIFACTS_URL"].startswith("s3://")
    volumes = {v["name"]: v for v in spec["template"]["spec"]["volumes"]}
    assert all("persistentVolumeClaim" not in v for v in volumes.values()), "replicas are stateless"


def test_keda_replaces_the_hpa_with_the_same_bounds_and_signals(rendered: dict[str, Objects]) -> None:
    assert not find_all(rendered["keda"], "HorizontalPodAutoscaler"), "two autoscalers would fight"
    scaled = find(rendered["keda"], "ScaledObject")["spec"]
    hpa = find(rendered["replicas"], "HorizontalPodAutoscaler")["spec"]
    assert scaled["scaleTargetRef"] == hpa["scaleTargetRef"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (hpa["minReplicas"], hpa["maxReplicas"])
    assert scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["behavior"]
    triggers = {t["type"]: t for t in scaled["triggers"]}
    pods_metric = next(m for m in hpa["metrics"] if m["type"] == "Pods")["pods"]
    cpu_metric = next(m for m in hpa["metrics"] if m["type"] == "Resource")["resource"]
    assert quantity(triggers["prometheus"]["metadata"]["threshold"]) == quantity(pods_metric["target"]["averageValue"])
    assert triggers["prometheus"]["metricType"] == "AverageValue"
    assert int(triggers["cpu"]["metadata"]["value"]) == cpu_metric["target"]["averageUtilization"]
    assert pods_metric["metric"]["name"] in triggers["prometheus"]["metadata"]["query"]


# -- wiring ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_selectors_and_references_resolve(rendered: dict[str, Objects], folder: str) -> None:
    objects = rendered[folder]
    deployment = server_deployment(objects)
    labels = pod_labels(objects)
    assert labels == SERVER_LABELS
    assert selects(deployment["spec"]["selector"], labels)
    service = find(objects, "Service", "ferryman")
    assert service["spec"]["selector"] == SERVER_LABELS
    assert selects(find(objects, "PodDisruptionBudget")["spec"]["selector"], labels)
    assert selects(find(objects, "NetworkPolicy")["spec"]["podSelector"], labels)
    monitor = find(objects, "ServiceMonitor")["spec"]
    assert selects(monitor["selector"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= service_ports
    for autoscaler in find_all(objects, "HorizontalPodAutoscaler"):
        assert autoscaler["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "ferryman",
        }
    for scaled in find_all(objects, "ScaledObject"):
        assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    container = server_container(objects)
    for port in service["spec"]["ports"]:
        container_port(container, port["targetPort"])
    for rule in find(objects, "NetworkPolicy")["spec"]["ingress"]:
        for port in rule["ports"]:
            container_port(container, port["port"])

    configmaps = {cm["metadata"]["name"] for cm in find_all(objects, "ConfigMap")}
    claims = {pvc["metadata"]["name"] for pvc in find_all(objects, "PersistentVolumeClaim")}
    accounts = {sa["metadata"]["name"] for sa in find_all(objects, "ServiceAccount")}
    for obj in objects:
        for spec in pod_specs(obj):
            assert spec["serviceAccountName"] in accounts
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for volume in volumes.values():
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in configmaps
                if "persistentVolumeClaim" in volume:
                    assert volume["persistentVolumeClaim"]["claimName"] in claims
            for _, c in all_containers([obj]):
                for mount in c.get("volumeMounts", []):
                    assert mount["name"] in volumes, f"{c['name']} mounts a missing volume {mount['name']}"
                for source in c.get("envFrom", []):
                    if "configMapRef" in source:
                        assert source["configMapRef"]["name"] in configmaps


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_probes_use_the_named_http_port(rendered: dict[str, Objects], folder: str) -> None:
    container = server_container(rendered[folder])
    found = probes(container)
    assert set(found) == {"startupProbe", "readinessProbe", "livenessProbe"}
    for probe in found.values():
        assert probe["httpGet"]["port"] == "http"
        container_port(container, "http")
    assert found["startupProbe"]["httpGet"]["path"] == found["readinessProbe"]["httpGet"]["path"]
    assert found["livenessProbe"]["httpGet"]["path"] != found["readinessProbe"]["httpGet"]["path"]
    startup = found["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "models get minutes to load"


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_the_grace_period_covers_the_prestop_sleep_and_the_drain(rendered: dict[str, Objects], folder: str) -> None:
    objects = rendered[folder]
    spec = server_deployment(objects)["spec"]["template"]["spec"]
    command = server_container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2
    sleep_s = float(command[1])
    drain_s = float(config_env(objects)["FERRYMAN_DRAIN_TIMEOUT_SECONDS"])
    grace_s = spec["terminationGracePeriodSeconds"]
    # Kubernetes counts the grace period from the start of preStop; SIGKILL comes at its end.
    assert grace_s >= sleep_s + drain_s + 1, f"grace {grace_s}s < preStop {sleep_s}s + drain {drain_s}s + time to exit"
    assert grace_s <= sleep_s + drain_s + 15, "a much longer grace period only slows rollouts"


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_rollout_strategies_are_ones_the_api_server_accepts(rendered: dict[str, Objects], folder: str) -> None:
    strategy = server_deployment(rendered[folder])["spec"]["strategy"]
    if strategy["type"] == "Recreate":
        assert "rollingUpdate" not in strategy, "spec.strategy.rollingUpdate: Forbidden when type is Recreate"


# -- security and resources ----------------------------------------------------------------------


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_every_pod_runs_locked_down(rendered: dict[str, Objects], folder: str) -> None:
    objects = rendered[folder]
    for account in find_all(objects, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False
    checked = 0
    for spec, container in all_containers(objects):
        checked += 1
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False, "service links would set FERRYMAN_PORT=tcp://…"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0 and pod["runAsGroup"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        own = container["securityContext"]
        assert own["allowPrivilegeEscalation"] is False
        assert own["readOnlyRootFilesystem"] is True
        assert own["capabilities"] == {"drop": ["ALL"]}
        assert own["seccompProfile"] == {"type": "RuntimeDefault"}
        assert own.get("privileged", False) is False
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{container['name']}: a read-only root needs a writable /tmp"
        home = next((e["value"] for e in container.get("env", []) if e["name"] == "FERRYMAN_HOME"), None)
        home = home or config_env(objects).get("FERRYMAN_HOME")
        assert home in mounts, f"{container['name']}: FERRYMAN_HOME {home} must be a mounted volume"
    assert checked >= 2  # the server and the bootstrap (init container or Job)


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_resources_are_bounded_and_agree_with_the_settings(rendered: dict[str, Objects], folder: str) -> None:
    objects = rendered[folder]
    for _, container in all_containers(objects):
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{container['name']}: {bound}"
    resources = server_container(objects)["resources"]
    env = config_env(objects)
    memory_limit = quantity(resources["limits"]["memory"])
    assert int(env["FERRYMAN_MEMORY_BUDGET_MB"]) * 2**20 <= memory_limit - 512 * 2**20, "room for the server"
    assert int(env["FERRYMAN_INFERENCE_THREADS"]) <= quantity(resources["limits"]["cpu"])
    assert int(env["FERRYMAN_WORKERS"]) == 1, "one process per pod: its /metrics is the pod's"


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_images_are_this_release(rendered: dict[str, Objects], folder: str) -> None:
    images = {container["image"] for _, container in all_containers(rendered[folder])}
    assert images == {f"ferryman:{ferryman.__version__}"}


def test_network_policy_admits_only_labelled_callers_on_http_and_grpc(rendered: dict[str, Objects]) -> None:
    for folder in SERVER_OVERLAYS:
        policy = find(rendered[folder], "NetworkPolicy")["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        for rule in policy["ingress"]:
            assert [p["port"] for p in rule["ports"]] == ["http", "grpc"]
            assert all(source.get("podSelector") or source.get("namespaceSelector") for source in rule["from"])
            assert all("ipBlock" not in source for source in rule["from"])
        egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
        assert 53 in egress_ports
    replicas = find(rendered["replicas"], "NetworkPolicy")["spec"]
    assert {5432, 443} <= {p["port"] for rule in replicas["egress"] for p in rule["ports"]}
    single = find(rendered["single"], "NetworkPolicy")["spec"]
    assert {p["port"] for rule in single["egress"] for p in rule["ports"]} == {53}


def test_the_bootstrap_script_is_mounted_where_its_command_runs_it(rendered: dict[str, Objects]) -> None:
    for folder in SERVER_OVERLAYS:
        objects = rendered[folder]
        script = generated_configmap(objects, "ferryman-bootstrap")
        runs = [(s, c) for s, c in all_containers(objects) if c["name"] == "bootstrap-admin-key"]
        assert len(runs) == 1, folder
        spec, container = runs[0]
        volume = next(v for v in spec["volumes"] if v.get("configMap", {}).get("name") == script["metadata"]["name"])
        mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
        assert container["command"][0] == "sh"
        directory, _, file_name = container["command"][1].rpartition("/")
        assert directory == mount["mountPath"] and file_name in script["data"]


def test_docs_name_every_secret_and_key_the_manifests_need(rendered: dict[str, Objects]) -> None:
    docs = DOCS.read_text()
    needed: set[tuple[str, str | None]] = set()
    for folder in SERVER_OVERLAYS:
        objects = rendered[folder]
        for _, container in all_containers(objects):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    needed.add((ref["name"], ref["key"]))
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    needed.add((source["secretRef"]["name"], None))
        for monitor in find_all(objects, "ServiceMonitor"):
            for endpoint in monitor["spec"]["endpoints"]:
                credentials = endpoint["authorization"]["credentials"]
                needed.add((credentials["name"], credentials["key"]))
    assert needed
    for name, key in sorted(needed, key=str):
        assert f"`{name}`" in docs, f"docs/deployment.md does not mention the Secret {name}"
        if key is not None:
            assert f"`{key}`" in docs, f"docs/deployment.md does not mention the key {key} of {name}"
