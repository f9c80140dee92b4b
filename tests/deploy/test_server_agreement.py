"""The manifests against the real server: probe paths, port, settings, metric names, bootstrap script.

A real ``ferryman serve`` runs with the single overlay's ConfigMap as its environment (host, port
and home come from the test's flags, which take precedence), answers the probe paths, serves
one prediction, and its /metrics must expose every metric the autoscalers and the scrape use.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ferryman.config import Settings, load_settings
from tests.conftest import ServerFactory, ServerProcess
from tests.deploy.conftest import (
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

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
DOCKERFILE = REPO / "deploy" / "Dockerfile"

#: Variables the manifests may set ahead of the server (name → the issue that adds the setting);
#: none now: FERRYMAN_ARTIFACTS_URL and FERRYMAN_DRAIN_TIMEOUT_SECONDS are real settings.
PENDING_SETTINGS: dict[str, str] = {}

PROMQL_METRIC = re.compile(r"\b(ferryman_[A-Za-z0-9_:]*)")


def setting_variables() -> set[str]:
    """The environment variable of every Settings field."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    assert prefix == "FERRYMAN_"
    return {f"{prefix}{field}".upper() for field in Settings.model_fields}


def manifest_variables(objects: Objects) -> dict[str, str]:
    """Every FERRYMAN_* variable the manifests set → where."""
    found: dict[str, str] = {}
    for _, container in all_containers(objects):
        for variable in container.get("env", []):
            found[variable["name"]] = f"env of container {container['name']}"
    for configmap in find_all(objects, "ConfigMap"):
        for key in configmap.get("data", {}):
            if key.startswith("FERRYMAN_"):
                found[key] = f"ConfigMap {configmap['metadata']['name']}"
    return {name: where for name, where in found.items() if name.startswith("FERRYMAN_")}


def dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (``KEY=VALUE`` pairs, continued lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    last_stage = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    for line in last_stage.splitlines():
        if line.startswith("ENV "):
            env.update(pair.split("=", 1) for pair in line[4:].split())
    return env


def dockerfile_instruction(name: str) -> str:
    lines = [line for line in DOCKERFILE.read_text().replace("\\\n", " ").splitlines() if line.startswith(name + " ")]
    assert lines, f"the Dockerfile has no {name}"
    return lines[-1][len(name) + 1 :].strip()


def metric_names(text: str) -> tuple[dict[str, str], set[str]]:
    """(family name → type, every sample name: counters' _total, histograms' _bucket/_sum/_count)."""
    families: dict[str, str] = {}
    samples: set[str] = set()
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        samples.update(sample.name for sample in family.samples)
    return families, samples


def autoscaling_metrics(rendered: dict[str, Objects]) -> dict[str, str]:
    """Every Ferryman metric the HPA, the adapter, KEDA and the scrape rely on → who relies on it."""
    used: dict[str, str] = {}
    adapter = find(rendered["prometheus-adapter"], "ConfigMap")["data"]["config.yaml"]
    for name in PROMQL_METRIC.findall(adapter):
        used[name] = "prometheus-adapter rule"
    for folder in SERVER_OVERLAYS:
        for scaled in find_all(rendered[folder], "ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                for name in PROMQL_METRIC.findall(trigger["metadata"].get("query", "")):
                    used[name] = "KEDA prometheus trigger"
    return used


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path, rendered: dict[str, Objects]) -> dict[str, Any]:
    """A server started with the single overlay's settings, after one prediction: its answers."""
    objects = rendered["single"]
    container = server_container(objects)
    # The manifests' fixed gRPC port could be taken on a test machine; the REST side is what is checked here.
    env = {**config_env(objects), "FERRYMAN_GRPC_PORT": "0"}
    server = ServerProcess(tmp_path_factory.mktemp("deploy") / "home", [str(iris_joblib)], env)
    try:
        server.wait_ready()
        paths = {container[kind]["httpGet"]["path"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
        monitor = find(objects, "ServiceMonitor")["spec"]["endpoints"][0]
        probe_status = {path: httpx.get(f"{server.url}{path}", timeout=5).status_code for path in paths}
        prediction = httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW, timeout=10)
        scrape = httpx.get(f"{server.url}{monitor['path']}", timeout=5)
        return {"probes": probe_status, "prediction": prediction.status_code, "scrape": scrape, "logs": server.logs()}
    finally:
        server.stop()


def test_probe_paths_answer_200(served: dict[str, Any]) -> None:
    assert served["probes"]
    assert all(status == 200 for status in served["probes"].values()), served["probes"]
    assert served["prediction"] == 200


def test_scraped_metrics_include_every_metric_the_autoscalers_use(
    served: dict[str, Any], rendered: dict[str, Objects]
) -> None:
    scrape = served["scrape"]
    assert scrape.status_code == 200
    families, samples = metric_names(scrape.text)
    used = autoscaling_metrics(rendered)
    assert used, "no Ferryman metric found in the adapter rule or the KEDA query"
    for name, user in used.items():
        assert name in families or name in samples, f"{user} uses {name}, which the server does not expose"
    # The HPA's Pods metric is what the adapter rule names it, and a per-pod sum needs a gauge.
    adapter = find(rendered["prometheus-adapter"], "ConfigMap")["data"]["config.yaml"]
    rules = yaml.safe_load(adapter)["rules"]
    served_as: dict[str, str] = {}
    for rule in rules:
        for series in PROMQL_METRIC.findall(rule["seriesQuery"]):
            as_ = re.sub(r"\$\{(\d+)\}", r"\\\1", rule["name"]["as"])
            served_as[re.sub(rule["name"]["matches"], as_, series)] = series
    for folder in SERVER_OVERLAYS:
        for hpa in find_all(rendered[folder], "HorizontalPodAutoscaler"):
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "Pods":
                    name = metric["pods"]["metric"]["name"]
                    assert name in served_as, f"no adapter rule serves the HPA metric {name}"
                    assert families.get(served_as[name]) == "gauge", f"{served_as[name]} is not a gauge"


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_every_ferryman_variable_is_a_real_setting(rendered: dict[str, Objects], folder: str) -> None:
    known = setting_variables()
    variables = manifest_variables(rendered[folder])
    assert "FERRYMAN_HOME" in variables
    unknown = {name: where for name, where in variables.items() if name not in known and name not in PENDING_SETTINGS}
    assert not unknown, f"not settings of ferryman.config.Settings (a typo is silently ignored): {unknown}"
    for name, value in config_env(rendered[folder]).items():
        assert value.strip(), f"{name} is empty: the server would read '' rather than its default"


def test_the_dockerfile_sets_real_settings_and_matches_the_manifests(rendered: dict[str, Objects]) -> None:
    env = dockerfile_env()
    ferryman_env = {k: v for k, v in env.items() if k.startswith("FERRYMAN_")}
    assert ferryman_env and set(ferryman_env) <= setting_variables()
    config = config_env(rendered["single"])
    assert all(config[k] == v for k, v in ferryman_env.items()), "image defaults differ from the manifests'"
    pod = server_deployment(rendered["single"])["spec"]["template"]["spec"]["securityContext"]
    assert dockerfile_instruction("USER") == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    exposed = dockerfile_instruction("EXPOSE").split()
    assert exposed == [str(port["containerPort"]) for port in server_container(rendered["single"])["ports"]]
    liveness = server_container(rendered["single"])["livenessProbe"]["httpGet"]["path"]
    assert liveness in dockerfile_instruction("HEALTHCHECK")


@pytest.mark.parametrize("folder", SERVER_OVERLAYS)
def test_the_configmap_parses_into_the_settings_the_manifests_assume(
    rendered: dict[str, Objects], folder: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    objects = rendered[folder]
    monkeypatch.chdir(tmp_path)  # no ferryman.yaml around
    for name in list(os.environ):
        if name.startswith("FERRYMAN_"):
            monkeypatch.delenv(name)
    for name, value in config_env(objects).items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    container = server_container(objects)
    assert settings.host == "0.0.0.0"
    assert settings.port == next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert settings.grpc_port == next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
    assert str(settings.home) in {m["mountPath"] for m in container["volumeMounts"]}
    drain = float(config_env(objects)["FERRYMAN_DRAIN_TIMEOUT_SECONDS"])
    assert settings.drain_timeout_seconds == drain
    # The server's own default is what the manifests set: a pod without the variable drains as long.
    assert Settings.model_fields["drain_timeout_seconds"].default == drain


def run_bootstrap(script: Path, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the bootstrap script as the pod does: sh, with ferryman and python3 on PATH."""
    bin_dir = str(Path(sys.executable).parent)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FERRYMAN_")}
    full_env = {**clean, "PATH": f"{bin_dir}{os.pathsep}{clean.get('PATH', '')}", "FERRYMAN_HOME": str(home), **env}
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, env=full_env, timeout=120, check=False)


def test_the_bootstrap_script_creates_one_admin_key_and_only_once(rendered: dict[str, Objects], tmp_path: Path) -> None:
    script = tmp_path / "bootstrap-admin-key.sh"
    script.write_text(generated_configmap(rendered["single"], "ferryman-bootstrap")["data"]["bootstrap-admin-key.sh"])
    home = tmp_path / "home"

    first = run_bootstrap(script, home)
    assert first.returncode == 0, first.stderr
    key = first.stdout.strip()
    assert key.startswith("fm_") and "\n" not in key, first.stdout

    again = run_bootstrap(script, home)
    assert again.returncode == 0, again.stderr
    assert again.stdout == "" and "nothing to do" in again.stderr

    listing = subprocess.run(
        [sys.executable, "-m", "ferryman", "keys", "list", "--home", str(home), "--active", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert [k["role"] for k in json.loads(listing.stdout)["keys"]] == ["admin"]

    oidc = run_bootstrap(script, tmp_path / "other-home", FERRYMAN_OIDC_ISSUER="https://issuer.example")
    assert oidc.returncode == 0 and oidc.stdout == "" and "OIDC" in oidc.stderr


def test_the_server_refuses_an_unbootstrapped_exposed_start_and_names_the_fix(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # Why the bootstrap exists: outside loopback, no admin key means exit 2. Checked without binding a
    # public address: the exposure check runs before the server binds, and reads only settings.
    server = server_factory(home=tmp_path / "fresh", args=["--host", "0.0.0.0"], wait=False)
    assert server.process.wait(60) == 2
    assert "ferryman keys create --role admin" in server.logs()
