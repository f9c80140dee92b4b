"""Deadlines: expired requests are dropped (504), hopeless ones refused at admission, fallbacks marked."""

from __future__ import annotations

import io
import json
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from ferryman.archive import pack_folder
from tests.conftest import ServerProcess
from tests.integration.test_v2_rest import assert_error

SLOW_MODEL = """
import os, time
from pathlib import Path
import numpy as np
import ferryman
from ferryman import TensorSpec

class Slow(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1,))]

    def predict(self, inputs):
        Path(self.options["marker"]).write_text("running")
        time.sleep(0.4)  # sync-ok: the model is slow on purpose
        return {"y": inputs["x"].sum(axis=1)}
"""

FAST_MODEL = """
import ferryman
from ferryman import TensorSpec

class Fast(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1,))]

    def predict(self, inputs):
        return {"y": inputs["x"].sum(axis=1) * 0 - 1}
"""

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


def push_folder(url: str, name: str, source: str, root: Path, runtime_config: dict) -> None:
    folder = root / name
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(source))
    buffer = io.BytesIO()
    pack_folder(folder, buffer)
    response = httpx.post(
        f"{url}/api/v1/models/{name}/versions",
        files={"artifact": (f"{name}.tar", buffer.getvalue())},
        data={"metadata": json.dumps({"runtime_config": runtime_config})},
        timeout=60,
    )
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def server(ferryman_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    root = tmp_path_factory.mktemp("deadline-models")
    url = ferryman_server.url
    push_folder(url, "fast", FAST_MODEL, root, {})
    for name, fallback in [
        ("slow-plain", None),
        ("slow-default", {"outputs": {"y": 0.5}}),
        ("slow-cheap", {"model": "fast"}),
    ]:
        config: dict = {"batching": {"enabled": True}, "marker": str(root / f"{name}.marker")}
        if fallback:
            config["fallback"] = fallback
        push_folder(url, name, SLOW_MODEL, root, config)
    server = ferryman_server
    server.markers = root  # type: ignore[attr-defined]
    return server


def occupy(server: ServerProcess, model: str) -> threading.Thread:
    """Start a request without a deadline and return once the model is running it."""
    marker = server.markers / f"{model}.marker"  # type: ignore[attr-defined]
    marker.unlink(missing_ok=True)
    thread = threading.Thread(target=lambda: httpx.post(f"{server.url}/v2/models/{model}/infer", json=ROW, timeout=30))
    thread.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the model never started"
        time.sleep(0.01)  # sync-ok: polling interval while waiting on a condition with a deadline
    return thread


def infer_with_deadline(server: ServerProcess, model: str, timeout_ms: int) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/{model}/infer", json=ROW, headers={"x-ferryman-timeout-ms": str(timeout_ms)}
    )


def test_a_request_that_expires_in_the_queue_gets_504_and_then_admission_refuses_at_once(
    server: ServerProcess,
) -> None:
    busy = occupy(server, "slow-plain")
    assert_error(infer_with_deadline(server, "slow-plain", 50), 504, "deadline")
    busy.join()
    # The batcher now knows a batch takes ~0.4 s: a 50 ms deadline is refused before queueing.
    assert_error(infer_with_deadline(server, "slow-plain", 50), 504, "cannot answer within the deadline")
    ok = infer_with_deadline(server, "slow-plain", 5000)
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [3.0]


def test_default_output_fallback_is_returned_and_marked(server: ServerProcess) -> None:
    busy = occupy(server, "slow-default")
    response = infer_with_deadline(server, "slow-default", 50)
    busy.join()
    assert response.status_code == 200, response.text
    assert response.headers["x-ferryman-fallback"] == "default"
    body = response.json()
    assert body["parameters"] == {"ferryman_fallback": "default"}
    assert body["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1], "data": [0.5]}
    plain = httpx.post(f"{server.url}/v2/models/slow-default/infer", json=ROW, timeout=30)
    assert "x-ferryman-fallback" not in plain.headers and plain.json()["outputs"][0]["data"] == [3.0]


def test_cheaper_model_fallback_is_returned_and_marked(server: ServerProcess) -> None:
    busy = occupy(server, "slow-cheap")
    response = infer_with_deadline(server, "slow-cheap", 50)
    busy.join()
    assert response.status_code == 200, response.text
    assert response.headers["x-ferryman-fallback"] == "model:fast"
    assert response.json()["model_name"] == "fast"
    assert response.json()["outputs"][0]["data"] == [-1.0]


def test_malformed_fallback_config_is_refused_at_push(server: ServerProcess, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "model.py").write_text(textwrap.dedent(FAST_MODEL))
    buffer = io.BytesIO()
    pack_folder(folder, buffer)
    for fallback, fragment in [({"outputs": {"y": 1}, "model": "x"}, "exactly one"), ({"model": ""}, "model name")]:
        response = httpx.post(
            f"{server.url}/api/v1/models/bad/versions",
            files={"artifact": ("bad.tar", buffer.getvalue())},
            data={"metadata": json.dumps({"runtime_config": {"fallback": fallback}})},
        )
        assert_error(response, 400, "fallback", fragment)
