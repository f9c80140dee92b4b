"""/metrics: per-version request, latency, queue, batch and drop metrics in Prometheus format."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def scrape(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def key(name: str, **labels: str) -> str:
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"


def test_metrics_count_outcomes_latency_and_batches(server_factory: ServerFactory, iris_joblib: Path) -> None:
    server = server_factory(args=[str(iris_joblib)])
    for _ in range(5):
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW).status_code == 200
    bad = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]}
    assert httpx.post(f"{server.url}/v2/models/iris/infer", json=bad).status_code == 400
    assert httpx.post(f"{server.url}/v2/models/nope/infer", json=ROW).status_code == 404
    assert httpx.post(f"{server.url}/v2/models/iris/infer", content=b"{oops").status_code == 400

    samples = scrape(server.url)
    iris = {"model": "iris", "version": "1"}
    unrouted = {"model": "", "version": ""}
    assert samples[key("ferryman_requests_total", **iris, outcome="ok")] == 5
    assert samples[key("ferryman_requests_total", **iris, outcome="invalid")] == 1
    assert samples[key("ferryman_requests_total", **unrouted, outcome="not_found")] == 1
    assert samples[key("ferryman_requests_total", **unrouted, outcome="invalid")] == 1
    assert samples[key("ferryman_request_duration_seconds_count", **iris)] == 6
    assert samples[key("ferryman_request_duration_seconds_bucket", **iris, le="+Inf")] == 6
    assert samples[key("ferryman_batch_size_count", **iris)] == 5
    assert samples[key("ferryman_queue_duration_seconds_count", **iris)] == 5
    assert samples[key("ferryman_requests_dropped_total", **iris, reason="expired")] == 0
    assert samples[key("ferryman_loaded_versions")] == 1
    assert samples[key("ferryman_version_memory_bytes", **iris)] > 0
    assert samples[key("process_resident_memory_bytes")] > 0
    for name in samples:
        assert name.startswith(("ferryman_", "process_")), name
        assert "request_id" not in name


def test_openmetrics_when_asked(server_factory: ServerFactory) -> None:
    server = server_factory()
    response = httpx.get(f"{server.url}/metrics", headers={"accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")
