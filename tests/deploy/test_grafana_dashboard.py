"""The Grafana dashboard: importable JSON whose every PromQL metric a real server exposes.

Every expression is parsed with a real PromQL parser; the metric names it selects must appear as
samples at ``/metrics`` of a server exercised so that each series exists (requests, batches, the
response cache, payload logs, drift, data quality, a shadow, labelled feedback, a failed load).
A renamed metric therefore fails this test instead of silently emptying a panel.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import promql_parser
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression

from ferryman import Client
from tests.conftest import ServerFactory, wait_for

pytestmark = pytest.mark.timeout(240)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ferryman.json"

#: A model that loads once (the push) and fails every later load: a load failure on demand.
FRAGILE_MODEL = """
from pathlib import Path

import ferryman
from ferryman import TensorSpec

class Fragile(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1,))]

    def load(self):
        marker = Path({marker!r})
        if marker.exists():
            raise RuntimeError("this model loads only once")
        marker.write_text("loaded")

    def predict(self, inputs):
        return {{"y": inputs["x"].sum(axis=1)}}
"""


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def expressions(document: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets (rows included) and query variables."""
    found = []
    panels = list(document["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        found.extend(target["expr"] for target in panel.get("targets", []))
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            found.append(re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"]).group(1))  # type: ignore[union-attr]
    return found


def metric_names(expression: str) -> set[str]:
    """The metrics an expression selects, from its parsed syntax tree (Grafana variables filled in)."""
    concrete = expression.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(concrete), visit)
    return names


def family_of(sample: str) -> str:
    """``ferryman_x_total`` / ``_bucket`` / ``_sum`` / ``_count`` → the family ``docs/metrics.md`` names."""
    return re.sub(r"_(total|bucket|sum|count)$", "", sample)


def test_dashboard_is_importable_json() -> None:
    document = dashboard()
    assert document["title"] == "Ferryman" and document["uid"]
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = set()
    for panel in document["panels"]:
        assert panel["id"] not in ids
        ids.add(panel["id"])
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
    titles = " | ".join(p["title"] for p in document["panels"]).lower()
    for wanted in (
        "request rate by outcome",
        "p50 / p99",
        "queue time",
        "batch size",
        "in-flight",
        "loaded versions",
        "memory",
        "load failures",
        "drift psi per feature",
        "data-quality",
        "shadow agreement",
        "live accuracy",
        "cpu",
        "resident memory",
    ):
        assert wanted in titles, wanted
    for expression in expressions(document):
        assert metric_names(expression), f"no metric in {expression!r}"


def test_every_metric_the_dashboard_uses_is_exposed(
    server_factory: ServerFactory, iris_joblib: Path, iris_data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    wanted: dict[str, set[str]] = {}
    for expression in expressions(dashboard()):
        for name in metric_names(expression):
            wanted.setdefault(name, set()).add(expression)
    assert len(wanted) >= 25

    features, labels = iris_data
    sample = tmp_path / "sample.npy"
    np.save(sample, features)
    other = tmp_path / "iris-other.joblib"
    joblib.dump(LogisticRegression(C=0.01, max_iter=500).fit(features, labels), other)
    fragile = tmp_path / "fragile"
    fragile.mkdir()
    (fragile / "model.py").write_text(textwrap.dedent(FRAGILE_MODEL.format(marker=str(tmp_path / "loaded-once"))))

    server = server_factory(
        env={
            "FERRYMAN_MONITORING_SAMPLE_RATE": "1",
            "FERRYMAN_MONITORING_WINDOW_ROWS": "50",
            "FERRYMAN_MONITORING_MIN_ROWS": "20",
            "FERRYMAN_MONITORING_REPORT_SECONDS": "0.2",
            "FERRYMAN_LIVE_ACCURACY_WINDOW_SECONDS": "600",
        }
    )
    with Client(server.url) as client:
        config = {"cache": True, "payload_log": {"sample_rate": 1.0}}
        client.push(iris_joblib, "iris", sample=sample, runtime_config=config)
        client.push(other, "iris")
        client.push(fragile, "fragile")  # its second load (the server's) fails
        assert httpx.put(f"{server.url}/api/v1/models/iris/aliases/production", json={"version": 1}).status_code == 200
        client.set_traffic_policy(
            "iris", {"split": [{"target": "production", "weight": 100}], "shadow": {"target": "2", "fraction": 1}}
        )
        ids = []
        for index, row in enumerate(features[::3]):
            data = [*row[:3], 50.0] if index % 10 == 0 else list(row)  # some out of the profile's range
            body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": data}]}
            response = httpx.post(
                f"{server.url}/v2/models/iris/infer", json=body, headers={"x-request-id": f"dash-{index}"}
            )
            assert response.status_code == 200, response.text
            ids.append((f"dash-{index}", int(labels[index * 3])))
        bad = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]}
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=bad).status_code == 400
        client.send_feedback("iris", [{"request_id": rid, "label": label} for rid, label in ids])

    def missing() -> dict[str, set[str]]:
        text = httpx.get(f"{server.url}/metrics", timeout=30).text
        exposed = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
        return {name: exprs for name, exprs in wanted.items() if name not in exposed}

    try:
        wait_for(lambda: not missing(), "every dashboard metric at /metrics", deadline_s=45)
    except AssertionError:
        absent = missing()
        raise AssertionError(
            "the dashboard uses metrics the server does not expose:\n"
            + "\n".join(f"  {name} (family {family_of(name)}) in {sorted(absent[name])[0]}" for name in sorted(absent))
        ) from None
