"""Many models per box, through a real server: a memory budget with LRU unloading, cold starts,
warm-up before ready, memory returned after unloads, and the opt-in response cache."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferryman.archive import pack_folder
from tests.conftest import ServerFactory, ServerProcess
from tests.integration.test_v2_rest import assert_error, push, write_model_folder

#: Holds ``ballast_mb`` of touched memory while loaded and answers ``x + offset``.
BALLAST_MODEL = """
import numpy as np
import ferryman
from ferryman import TensorSpec

class Ballast(ferryman.Model):
    inputs = [TensorSpec("x", "FP64", (-1, 2))]
    outputs = [TensorSpec("y", "FP64", (-1, 2))]

    def load(self):
        self.offset = float(self.options.get("offset", 0))
        self.ballast = np.ones(int(self.options.get("ballast_mb", 0)) * 2**20 // 8)

    def predict(self, inputs):
        return {"y": inputs["x"] + self.offset}
"""

#: Answers with how many times predict has run, so a test can tell a cache hit from a model call.
COUNTER_MODEL = """
import numpy as np
import ferryman
from ferryman import TensorSpec

class Counter(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1, 2)), TensorSpec("calls", "INT64", (-1,))]

    def load(self):
        self.calls = 0

    def predict(self, inputs):
        self.calls += 1
        x = inputs["x"]
        return {"y": x * 2, "calls": np.full(len(x), self.calls, dtype=np.int64)}
"""

#: Fails on an all-zero batch, which is what warm-up sends.
ZERO_SHY_MODEL = """
import ferryman
from ferryman import TensorSpec

class ZeroShy(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 3))]

    def predict(self, inputs):
        if not inputs["x"].any():
            raise ValueError("all-zero input")
        return {"y": inputs["x"]}
"""

BUDGET_MB = 64
BALLAST_MB = 24


def push_with_config(url: str, name: str, folder: Path, runtime_config: dict[str, Any]) -> httpx.Response:
    """Push a model folder with a runtime config, as ``ferryman push --runtime-config`` does."""
    buffer = io.BytesIO()
    pack_folder(folder, buffer)
    return httpx.post(
        f"{url}/api/v1/models/{name}/versions",
        files={"artifact": (f"{folder.name}.tar", buffer.getvalue())},
        data={"metadata": json.dumps({"runtime_config": runtime_config})},
        timeout=60,
    )


def infer(url: str, model: str, rows: list[list[float]], datatype: str = "FP64") -> httpx.Response:
    document = {"inputs": [{"name": "x", "datatype": datatype, "shape": [len(rows), 2], "data": rows}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=document, timeout=60)


def outputs(response: httpx.Response) -> dict[str, list[Any]]:
    assert response.status_code == 200, response.text
    return {output["name"]: output["data"] for output in response.json()["outputs"]}


def version(url: str, model: str, number: int = 1) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/v1/models/{model}/versions/{number}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def states(url: str, *models: str) -> dict[str, str]:
    return {model: version(url, model)["state"] for model in models}


def server_rss(server: ServerProcess) -> int:
    """The server process's resident set, in bytes, from /proc/<pid>/status."""
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


@pytest.fixture
def ballast(tmp_path: Path) -> Path:
    return write_model_folder(tmp_path, "ballast", BALLAST_MODEL)


@pytest.fixture
def budget_server(server_factory: ServerFactory, ballast: Path) -> ServerProcess:
    """A server whose budget holds two 24 MiB ballast models but not three; models a, b, c pushed in order."""
    server = server_factory(env={"FERRYMAN_MEMORY_BUDGET_MB": str(BUDGET_MB)})
    for offset, name in enumerate("ab", start=1):
        response = push_with_config(server.url, name, ballast, {"offset": offset, "ballast_mb": BALLAST_MB})
        assert response.status_code == 201, response.text
    return server


def test_budget_unloads_least_recently_used_and_reloads_on_next_request(
    budget_server: ServerProcess, ballast: Path
) -> None:
    url = budget_server.url
    assert states(url, "a", "b") == {"a": "loaded", "b": "loaded"}
    first = version(url, "a")
    assert BALLAST_MB * 2**20 <= first["memory_bytes"] < BUDGET_MB / 2 * 2**20, first
    assert first["load_seconds"] > 0
    # a was loaded first but used last: b is now the least recently used.
    assert outputs(infer(url, "a", [[1.0, 2.0]]))["y"] == [2.0, 3.0]

    response = push_with_config(url, "c", ballast, {"offset": 3, "ballast_mb": BALLAST_MB})
    assert response.status_code == 201, response.text
    assert states(url, "a", "b", "c") == {"a": "loaded", "b": "unloaded", "c": "loaded"}
    assert "memory budget" in version(url, "b")["state_reason"]
    # An unloaded-by-budget version still reports ready: it loads on demand.
    assert httpx.get(f"{url}/v2/models/b/ready").status_code == 200

    # The next request for b is a cold start with b's own answer; now a is the least recently used.
    assert outputs(infer(url, "b", [[1.0, 2.0], [0.5, 0.0]]))["y"] == [3.0, 4.0, 2.5, 2.0]
    assert states(url, "a", "b", "c") == {"a": "unloaded", "b": "loaded", "c": "loaded"}
    assert version(url, "b")["load_seconds"] > 0
    assert "cold start" in budget_server.logs()
    # And a comes back the same way, answering as a, in place of c (untouched since its load, so older than b).
    assert outputs(infer(url, "a", [[0.0, 0.0]]))["y"] == [1.0, 1.0]
    assert states(url, "a", "b", "c") == {"a": "loaded", "b": "loaded", "c": "unloaded"}


def test_a_version_larger_than_the_budget_fails_with_503_naming_it(budget_server: ServerProcess, ballast: Path) -> None:
    response = push_with_config(budget_server.url, "huge", ballast, {"ballast_mb": 2 * BUDGET_MB})
    assert response.status_code == 201, response.text  # the push loads outside the budget; serving is refused
    refused = infer(budget_server.url, "huge", [[1.0, 2.0]])
    assert_error(refused, 503, "model 'huge' version 1", "memory budget", "memory_budget_mb")
    assert refused.headers["retry-after"]
    # Nothing was unloaded for a load that could never fit.
    assert states(budget_server.url, "a", "b") == {"a": "loaded", "b": "loaded"}


def test_load_unload_200_times_returns_memory(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory()
    folder = write_model_folder(tmp_path, "small", BALLAST_MODEL)
    response = push_with_config(server.url, "small", folder, {"offset": 1, "ballast_mb": 8})
    assert response.status_code == 201, response.text
    base = f"{server.url}/api/v1/models/small/versions/1"
    with httpx.Client(timeout=30) as client:

        def cycle() -> None:
            loaded = client.post(f"{base}/load")
            assert loaded.status_code == 200 and loaded.json()["state"] == "loaded", loaded.text
            unloaded = client.post(f"{base}/unload")
            assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded", unloaded.text

        cycle()
        baseline = server_rss(server)
        started = time.monotonic()
        for _ in range(199):
            cycle()
        elapsed = time.monotonic() - started
    final = server_rss(server)
    print(f"200 load/unload cycles: RSS {baseline / 2**20:.1f} -> {final / 2**20:.1f} MiB in {elapsed:.1f} s")
    assert final <= baseline * 1.10, (baseline, final)
    # The model still serves correctly after all that.
    assert outputs(infer(server.url, "small", [[1.0, 1.0]]))["y"] == [2.0, 2.0]


def test_warm_up_runs_before_ready_and_a_failing_one_fails_the_load(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    server = server_factory()
    counter = write_model_folder(tmp_path, "counter", COUNTER_MODEL)
    assert push_with_config(server.url, "counter", counter, {}).status_code == 201
    # Warm-up was the first call: the first real request is the model's second.
    assert outputs(infer(server.url, "counter", [[1.0, 2.0]], "FP32"))["calls"] == [2]

    assert push_with_config(server.url, "cold-counter", counter, {"warmup": False}).status_code == 201
    assert outputs(infer(server.url, "cold-counter", [[1.0, 2.0]], "FP32"))["calls"] == [1]

    shy = write_model_folder(tmp_path, "shy", ZERO_SHY_MODEL)
    assert push(server.url, "shy", shy)["version"]["version"] == 1
    described = version(server.url, "shy")
    assert described["state"] == "failed", described
    assert (
        "model 'shy' version 1 cannot be loaded: warm-up failed: ValueError: all-zero input"
        in (described["state_reason"])
    )
    bad = push_with_config(server.url, "shy-bad", shy, {"warmup": "sometimes"})
    assert_error(bad, 400, "warmup must be true or false")


def test_response_cache_is_opt_in_and_keyed_by_inputs(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory()
    counter = write_model_folder(tmp_path, "counter", COUNTER_MODEL)
    config = {"cache": {"max_entries": 8}, "warmup": False, "batching": {"enabled": False}}
    assert push_with_config(server.url, "cached", counter, config).status_code == 201
    assert push_with_config(server.url, "uncached", counter, {"warmup": False}).status_code == 201

    first = outputs(infer(server.url, "cached", [[1.0, 2.0]], "FP32"))
    again = outputs(infer(server.url, "cached", [[1.0, 2.0]], "FP32"))
    assert first == again == {"y": [2.0, 4.0], "calls": [1]}  # the second answer came from the cache
    other = outputs(infer(server.url, "cached", [[3.0, 2.0]], "FP32"))
    assert other == {"y": [6.0, 4.0], "calls": [2]}  # different inputs: a miss, the model ran

    calls = [outputs(infer(server.url, "uncached", [[1.0, 2.0]], "FP32"))["calls"][0] for _ in range(3)]
    assert calls == [1, 2, 3]  # no cache unless a version asks for one

    bad = push_with_config(server.url, "cached-bad", counter, {"cache": {"max_entries": 0}})
    assert_error(bad, 400, "cache.max_entries must be a positive integer")
