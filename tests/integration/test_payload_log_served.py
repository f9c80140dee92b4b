"""Payload logging on a real server: sampled records with redactions, rotated files, counted results."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import numpy as np
import pytest

import ferryman
from ferryman.errors import InvalidInput
from ferryman.monitoring.payload_log import iter_lines
from tests.conftest import ServerFactory, wait_for
from tests.integration.test_metrics import key, scrape

pytestmark = pytest.mark.timeout(180)

ROW = [5.1, 3.5, 1.4, 0.2]
NAME = re.compile(r"\d{8}-\d{6}-\d+\.jsonl")


def test_payload_log_redacts_rotates_and_counts(server_factory: ServerFactory, iris_joblib: Path) -> None:
    # Monitoring (drift) off: payload logging is opted into per model and works without it.
    server = server_factory(env={"FERRYMAN_MONITORING_ENABLED": "false"})
    redact = ["input[1]", "predict_proba"]
    config = {"payload_log": {"sample_rate": 1.0, "redact": redact, "max_file_mb": 0.002, "max_files": 3}}
    with ferryman.Client(server.url) as client:
        client.push(iris_joblib, "iris", runtime_config=config)
        with pytest.raises(InvalidInput, match=r"runtime_config\.payload_log\.sample_rate"):
            client.push(iris_joblib, "iris-bad", runtime_config={"payload_log": {"sample_rate": 2}})
        with pytest.raises(InvalidInput, match=r"runtime_config\.payload_log\.redact\[0\]"):
            client.push(iris_joblib, "iris-bad", runtime_config={"payload_log": {"redact": ["x[one]"]}})

    ids = []
    for i in range(60):
        row = [ROW[0] + i / 100, *ROW[1:]]
        body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": row}]}
        response = httpx.post(f"{server.url}/v2/models/iris/infer", json=body)
        assert response.status_code == 200
        ids.append(response.headers["x-request-id"])
    labels = {"model": "iris", "version": "1"}
    wait_for(lambda: scrape(server.url).get(key("ferryman_payload_records_total", **labels, result="written")) == 60,
             "60 payload records written")  # fmt: skip
    samples = scrape(server.url)
    assert samples[key("ferryman_payload_records_total", **labels, result="dropped")] == 0
    assert samples[key("ferryman_payload_records_total", **labels, result="failed")] == 0

    folder = server.home / "payloads" / "iris" / "1"
    files = sorted(folder.iterdir(), key=lambda p: (p.name.rsplit("-", 1)[0], int(p.stem.rsplit("-", 1)[1])))
    assert all(NAME.fullmatch(f.name) for f in files), files
    assert len(files) == 3  # rotated many times over, the oldest deleted
    assert all(f.stat().st_size <= 0.002 * 2**20 for f in files)
    records = [record for f in files for record in iter_lines(f)]
    assert 3 <= len(records) < 60
    assert [r["request_id"] for r in records] == ids[-len(records) :]  # the newest, in order
    last = records[-1]
    assert last["model"] == "iris" and last["version"] == 1 and last["latency_ms"] > 0
    assert last["time"].endswith("+00:00")
    assert last["inputs"]["input"] == [[pytest.approx(ROW[0] + 0.59), "[redacted]", *ROW[2:]]]
    assert last["outputs"]["predict_proba"] == "[redacted]"
    assert last["outputs"]["predict"] == [0]


def test_slow_sink_drops_and_counts_never_fails_requests(server_factory: ServerFactory, iris_joblib: Path) -> None:
    server = server_factory(env={"FERRYMAN_PAYLOAD_QUEUE_RECORDS": "1"})
    with ferryman.Client(server.url) as client:
        client.push(iris_joblib, "iris", runtime_config={"payload_log": {"sample_rate": 1.0}})
    rows = np.tile(np.array(ROW), (64, 1))
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [64, 4], "data": rows.ravel().tolist()}]}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            answers = await asyncio.gather(*(http.post("/v2/models/iris/infer", json=body) for _ in range(200)))
            return [answer.status_code for answer in answers]

    assert set(asyncio.run(burst())) == {200}
    labels = {"model": "iris", "version": "1"}

    def settled() -> bool:
        samples = scrape(server.url)
        written = samples.get(key("ferryman_payload_records_total", **labels, result="written"), 0)
        dropped = samples.get(key("ferryman_payload_records_total", **labels, result="dropped"), 0)
        return written + dropped == 200

    wait_for(settled, "every payload record written or dropped")
    samples = scrape(server.url)
    assert samples[key("ferryman_payload_records_total", **labels, result="dropped")] > 0
