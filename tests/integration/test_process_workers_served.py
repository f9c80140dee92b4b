"""A version served from worker processes answers like the in-process model, under concurrency."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import numpy as np

from tests.conftest import ServerFactory
from tests.integration.test_batching import fire
from tests.integration.test_v2_rest import assert_error
from tests.integration.test_workers import worker_pids


def test_process_workers_serve_concurrent_requests_correctly(
    server_factory: ServerFactory, iris_joblib: Path, iris_pipeline: object
) -> None:
    server = server_factory()
    response = httpx.post(
        f"{server.url}/api/v1/models/iris/versions",
        files={"artifact": ("iris.joblib", iris_joblib.read_bytes())},
        data={"metadata": json.dumps({"runtime_config": {"process_workers": 2}})},
        timeout=120,
    )
    assert response.status_code == 201, response.text
    assert response.json()["version"]["state"] == "loaded"
    assert len(worker_pids(server.process.pid)) == 2

    rows = np.random.default_rng(1).uniform(0, 8, size=(600, 4))
    served = asyncio.run(fire(server.url, "iris", rows, output="predict", shape=(1, 4), datatype="FP64"))
    np.testing.assert_array_equal(served, iris_pipeline.predict(rows))  # type: ignore[attr-defined]

    assert httpx.post(f"{server.url}/api/v1/models/iris/versions/1/unload").json()["state"] == "unloaded"
    assert worker_pids(server.process.pid) == []


def test_bad_process_worker_config_is_refused(server_factory: ServerFactory, iris_joblib: Path) -> None:
    server = server_factory()
    response = httpx.post(
        f"{server.url}/api/v1/models/iris/versions",
        files={"artifact": ("iris.joblib", iris_joblib.read_bytes())},
        data={"metadata": json.dumps({"runtime_config": {"process_workers": 0}})},
    )
    assert_error(response, 400, "process_workers")
