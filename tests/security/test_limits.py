"""Limits: per-key rate limits (429 + Retry-After), decoded tensor size, request body size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.security.conftest import IRIS_ROW, auth, make_key, registry_state


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path) -> Iterator[tuple[ServerProcess, list[str]]]:
    """A server allowing 1 request/s with bursts of 3 per key, 400 elements per tensor, 64 KiB bodies; 5 keys."""
    home = tmp_path_factory.mktemp("limits") / "home"
    keys = [make_key(home, "admin") for _ in range(5)]
    env = {
        "FERRYMAN_RATE_LIMIT_PER_S": "1",
        "FERRYMAN_RATE_LIMIT_BURST": "3",
        "FERRYMAN_MAX_TENSOR_ELEMENTS": "400",
        "FERRYMAN_MAX_REQUEST_BYTES": "65536",
    }
    process = ServerProcess(home, [str(iris_joblib)], env)
    process.wait_ready()
    yield process, keys
    process.stop()


def test_each_key_has_its_own_rate_limit(server: tuple[ServerProcess, list[str]]) -> None:
    process, keys = server
    limited, other = keys[0], keys[1]
    with httpx.Client(base_url=process.url) as client:
        statuses = []
        for _ in range(30):
            response = client.post("/v2/models/iris/infer", json=IRIS_ROW, headers=auth(limited))
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
        assert statuses[-1] == 429, statuses
        assert statuses.count(200) >= 3
        assert int(response.headers["retry-after"]) >= 1
        assert "rate limit of 1 requests/s exceeded" in response.json()["error"]
        assert client.post("/v2/models/iris/infer", json=IRIS_ROW, headers=auth(other)).status_code == 200


def test_management_routes_are_rate_limited_too(server: tuple[ServerProcess, list[str]]) -> None:
    process, keys = server
    key = keys[2]
    with httpx.Client(base_url=process.url) as client:
        statuses = [client.get("/api/v1/models", headers=auth(key)).status_code for _ in range(40)]
    assert 429 in statuses and statuses.count(200) <= 5


def test_tensors_over_the_element_limit_are_refused_naming_the_input(server: tuple[ServerProcess, list[str]]) -> None:
    process, keys = server
    key = keys[3]
    row = [5.1, 3.5, 1.4, 0.2]
    big = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [101, 4], "data": row * 101}]}
    with httpx.Client(base_url=process.url, headers=auth(key)) as client:
        response = client.post("/v2/models/iris/infer", json=big)
        assert response.status_code == 413
        assert response.json()["error"] == (
            "input 'input' has 404 elements, more than the limit of 400 (max_tensor_elements)"
        )


def test_bodies_over_the_limit_are_refused_and_change_nothing(server: tuple[ServerProcess, list[str]]) -> None:
    process, keys = server
    before = registry_state(process.home)
    with httpx.Client(base_url=process.url, headers=auth(keys[4])) as client:
        response = client.post("/v2/models/iris/infer", content=b"x" * 70_000)
        assert response.status_code == 413
        assert "exceeds the limit of 65536 bytes" in response.json()["error"]
    assert registry_state(process.home) == before
