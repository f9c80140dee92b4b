"""Every metric the monitoring issue lists, per model and version, in both exposition formats."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory, wait_for

pytestmark = pytest.mark.timeout(180)

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}

FRAGILE_MODEL = """
from pathlib import Path
from typing import Any

import ferryman
from ferryman import TensorSpec

class Fragile(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1,))]

    def load(self):
        if Path({marker!r}).exists():
            raise RuntimeError("the marker file says this load fails")

    def predict(self, inputs):
        return {{"y": inputs["x"].sum(axis=1)}}
"""

#: name → (type, labels that each of its samples for the iris model carries).
PER_VERSION = {
    "ferryman_requests": ("counter", {"model", "version", "outcome"}),
    "ferryman_request_duration_seconds": ("histogram", {"model", "version"}),
    "ferryman_queue_duration_seconds": ("histogram", {"model", "version"}),
    "ferryman_inference_duration_seconds": ("histogram", {"model", "version"}),
    "ferryman_batch_size": ("histogram", {"model", "version"}),
    "ferryman_inflight_requests": ("gauge", {"model", "version"}),
    "ferryman_version_memory_bytes": ("gauge", {"model", "version"}),
    "ferryman_version_load_seconds": ("gauge", {"model", "version"}),
    "ferryman_load_duration_seconds": ("histogram", {"model", "version"}),
}


def families(text: str, openmetrics: bool = False) -> dict[str, Any]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {family.name: family for family in parse(text)}


def test_the_issues_metric_list(server_factory: ServerFactory, iris_joblib: Path, tmp_path: Path) -> None:
    marker = tmp_path / "fail-next-load"
    fragile = tmp_path / "fragile"
    fragile.mkdir()
    (fragile / "model.py").write_text(textwrap.dedent(FRAGILE_MODEL.format(marker=str(marker))))
    home = tmp_path / "home"
    server = server_factory(home=home, args=[str(iris_joblib), str(fragile)])
    for _ in range(3):
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW).status_code == 200
    assert httpx.post(f"{server.url}/v2/models/iris/infer", content=b"{").status_code == 400

    for openmetrics in (False, True):
        headers = {"accept": "application/openmetrics-text"} if openmetrics else {}
        response = httpx.get(f"{server.url}/metrics", headers=headers)
        assert response.status_code == 200
        found = families(response.text, openmetrics)
        for name, (kind, labels) in PER_VERSION.items():
            family = found[name]
            assert family.type == kind, name
            iris = [s for s in family.samples if s.labels.get("model") == "iris"]
            assert iris, f"{name} has no samples for iris"
            for sample in iris:
                assert labels <= set(sample.labels), (name, sample)
                assert sample.labels["version"] == "1"
        protocol = {
            (s.labels["protocol"], s.labels["outcome"]): s.value
            for s in found["ferryman_protocol_requests"].samples
            if s.name.endswith("_total")
        }
        assert protocol[("v2_rest", "ok")] == 3 and protocol[("v2_rest", "invalid")] == 1
        assert found["ferryman_loaded_versions"].samples[0].value == 2
        for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"):
            assert name in found, name
    assert response.text.rstrip().endswith("# EOF")

    # A load that fails is counted against its model and version.
    server.stop()
    marker.write_text("fail")
    server = server_factory(home=home)

    def failures() -> float:
        for sample in families(httpx.get(f"{server.url}/metrics").text)["ferryman_version_load_failures"].samples:
            if sample.labels == {"model": "fragile", "version": "1"} and sample.name.endswith("_total"):
                return float(sample.value)
        return 0.0

    wait_for(lambda: failures() == 1, "the failed load of fragile:1 to be counted")
    loads = families(httpx.get(f"{server.url}/metrics").text)["ferryman_load_duration_seconds"]
    counts = {s.labels["model"]: s.value for s in loads.samples if s.name.endswith("_count")}
    assert counts.get("iris") == 1 and "fragile" not in counts
