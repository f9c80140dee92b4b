"""Through a real server, under concurrency, every batching mode returns each request its own answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from tests.conftest import ServerProcess
from tests.integration.test_v2_rest import assert_error

MODES = {
    "greedy": {},
    "fixed-delay": {"max_batch_size": 8, "max_queue_delay_ms": 3},
    "preferred": {"max_batch_size": 16, "preferred_batch_sizes": [4, 8, 16]},
    "adaptive": {"latency_slo_ms": 25, "max_batch_size": 64},
    "off": {"enabled": False},
}
REQUESTS_PER_MODE = 1000


@pytest.fixture(scope="module")
def regression(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LinearRegression]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 6))
    model = LinearRegression().fit(features, features @ rng.normal(size=6) + 3)
    path = tmp_path_factory.mktemp("reg") / "reg.joblib"
    joblib.dump(model, path)
    return path, model


@pytest.fixture(scope="module")
def server(ferryman_server: ServerProcess, regression: tuple[Path, LinearRegression]) -> ServerProcess:
    path, _ = regression
    for mode, batching in MODES.items():
        response = httpx.post(
            f"{ferryman_server.url}/api/v1/models/reg-{mode}/versions",
            files={"artifact": ("reg.joblib", path.read_bytes())},
            data={"metadata": json.dumps({"runtime_config": {"batching": batching}})},
            timeout=60,
        )
        assert response.status_code == 201, response.text
    return ferryman_server


async def fire(
    url: str,
    model: str,
    rows: np.ndarray,
    output: str = "predict",
    shape: tuple[int, int] = (1, 6),
    datatype: str = "FP64",
) -> list[float]:
    """All requests at once over 64 connections (aiohttp: httpx's async pool is too slow for this)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(row: np.ndarray) -> float:
            body = {"inputs": [{"name": "input", "datatype": datatype, "shape": list(shape), "data": row.tolist()}]}
            async with session.post(f"{url}/v2/models/{model}/infer", json=body) as response:
                assert response.status == 200, await response.text()
                outputs = (await response.json())["outputs"]
                return float(next(o for o in outputs if o["name"] == output)["data"][0])

        return await asyncio.gather(*(one(row) for row in rows))


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_response_is_its_own_inputs_prediction(
    server: ServerProcess, regression: tuple[Path, LinearRegression], mode: str
) -> None:
    _, model = regression
    rows = np.random.default_rng(hash(mode) % 2**32).normal(size=(REQUESTS_PER_MODE, 6))
    served = asyncio.run(fire(server.url, f"reg-{mode}", rows))
    np.testing.assert_allclose(served, model.predict(rows), rtol=1e-9)


def test_bad_batching_config_fails_the_push_naming_the_field(server: ServerProcess, regression: tuple) -> None:
    path, _ = regression
    response = httpx.post(
        f"{server.url}/api/v1/models/reg-bad/versions",
        files={"artifact": ("reg.joblib", path.read_bytes())},
        data={"metadata": json.dumps({"runtime_config": {"batching": {"max_batch": 3}}})},
    )
    assert_error(response, 400, "batching", "max_batch")


def test_deadlines_from_header_and_parameter(server: ServerProcess) -> None:
    body = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 6], "data": [0.0] * 6}]}
    ok = httpx.post(f"{server.url}/v2/models/reg-greedy/infer", json=body, headers={"x-ferryman-timeout-ms": "5000"})
    assert ok.status_code == 200
    assert_error(
        httpx.post(f"{server.url}/v2/models/reg-greedy/infer", json=body, headers={"x-ferryman-timeout-ms": "soon"}),
        400,
        "x-ferryman-timeout-ms",
    )
    assert_error(
        httpx.post(f"{server.url}/v2/models/reg-greedy/infer", json={**body, "parameters": {"timeout": "x"}}),
        400,
        "'timeout'",
    )
