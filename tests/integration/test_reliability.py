"""Nothing is lost or half-written: corrupted artifacts, cut-off uploads, kill -9 mid-push, size limits."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from tests.conftest import ServerFactory, wait_for
from tests.integration.test_v2_rest import assert_error, push, write_model_folder

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}

SLOW_LOADING_MODEL = """
import os, time
from pathlib import Path
import ferryman

class Slow(ferryman.Model):
    def load(self):
        Path(os.environ["FERRYMAN_TEST_MARKER"]).write_text("loading")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)  # sync-ok: the model simulates a slow load

    def predict(self, inputs):
        return inputs
"""


def second_model(tmp_path: Path, iris_data: tuple[np.ndarray, np.ndarray]) -> Path:
    path = tmp_path / "iris-v2.joblib"
    joblib.dump(LogisticRegression(C=0.01, max_iter=300).fit(*iris_data), path)
    return path


def staging_files(home: Path) -> list[Path]:
    staging = home / "artifacts" / "staging"
    return [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []


def test_corrupted_artifact_is_refused_and_named_while_the_previous_version_keeps_serving(
    server_factory: ServerFactory, iris_joblib: Path, iris_data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    server = server_factory()
    push(server.url, "iris", iris_joblib)
    assert httpx.put(f"{server.url}/api/v1/models/iris/aliases/production", json={"version": 1}).status_code == 200
    # Keep only what the alias points at, so version 2 is read from disk when the alias moves to it.
    policy = {"keep": "aliased_and_latest", "latest": 0}
    assert httpx.put(f"{server.url}/api/v1/models/iris/version-policy", json=policy).status_code == 200
    v2 = push(server.url, "iris", second_model(tmp_path, iris_data))["version"]
    blob = server.home / "artifacts" / "blobs" / v2["sha256"] / v2["filename"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    response = httpx.put(f"{server.url}/api/v1/models/iris/aliases/production", json={"version": 2})
    assert_error(response, 500, "version 2", "failed verification", v2["sha256"])
    assert httpx.get(f"{server.url}/api/v1/models/iris/aliases").json() == {"aliases": {"production": 1}}
    served = httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW)
    assert served.status_code == 200 and served.json()["model_version"] == "1"
    assert_error(httpx.post(f"{server.url}/v2/models/iris/versions/2/infer", json=ROW), 500, "version 2")
    state = httpx.get(f"{server.url}/api/v1/models/iris/versions/2").json()
    assert state["state"] == "failed" and "failed verification" in state["state_reason"]

    # Without the alias the latest (corrupt) version is the target; version 1 still serves, and
    # after a restart too.
    assert httpx.delete(f"{server.url}/api/v1/models/iris/aliases/production").status_code == 204
    assert httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW).json()["model_version"] == "1"
    server.stop()
    again = server_factory(home=server.home)
    assert httpx.post(f"{again.url}/v2/models/iris/infer", json=ROW).json()["model_version"] == "1"
    assert "failed verification" in again.logs()


def test_an_upload_cut_off_halfway_registers_nothing(server_factory: ServerFactory, iris_joblib: Path) -> None:
    server = server_factory()
    content = iris_joblib.read_bytes()
    boundary = "ferrymanboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="artifact"; filename="iris.joblib"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /api/v1/models/cut/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body[: len(body) // 2])
    # The server must still work, and the model must not exist.
    assert_error(httpx.get(f"{server.url}/api/v1/models/cut"), 404, "model 'cut' not found")
    created = push(server.url, "cut", iris_joblib)
    assert created["created"] and created["version"]["version"] == 1
    wait_for(lambda: not staging_files(server.home), what="an empty staging area")


def test_kill_9_during_a_push_leaves_a_consistent_registry(server_factory: ServerFactory, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    server = server_factory(env={"FERRYMAN_TEST_MARKER": str(marker)})
    folder = write_model_folder(tmp_path, "slow", SLOW_LOADING_MODEL)
    errors: list[BaseException] = []

    def push_in_background() -> None:
        try:
            push(server.url, "slow", folder)
        except BaseException as exc:  # the server dies mid-request: expected
            errors.append(exc)

    pusher = threading.Thread(target=push_in_background)
    pusher.start()
    wait_for(marker.exists, what="the push to reach model loading")
    server.kill()
    pusher.join(30)
    assert errors, "the push cannot have succeeded"

    again = server_factory(home=server.home)
    assert_error(httpx.get(f"{again.url}/api/v1/models/slow"), 404, "model 'slow' not found")
    assert httpx.get(f"{again.url}/api/v1/models").json() == {"models": []}
    assert not staging_files(again.home)


def test_request_body_over_the_limit_is_413(server_factory: ServerFactory, iris_joblib: Path) -> None:
    server = server_factory(env={"FERRYMAN_MAX_REQUEST_BYTES": "2000", "FERRYMAN_MAX_UPLOAD_BYTES": "500"})
    big = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [200, 4], "data": [1.0] * 800}]}
    assert_error(httpx.post(f"{server.url}/v2/models/iris/infer", json=big), 404, "model 'iris'")
    files = {"artifact": ("iris.joblib", iris_joblib.read_bytes())}
    assert_error(httpx.post(f"{server.url}/api/v1/models/iris/versions", files=files), 413, "500 bytes")
    assert httpx.get(f"{server.url}/api/v1/models").json() == {"models": []}


def test_inference_body_limit_with_and_without_content_length(server_factory: ServerFactory, iris_joblib: Path) -> None:
    server = server_factory(args=[str(iris_joblib)], env={"FERRYMAN_MAX_REQUEST_BYTES": "2000"})
    big = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [200, 4], "data": [1.0] * 800}]}
    assert_error(httpx.post(f"{server.url}/v2/models/iris/infer", json=big), 413, "2000 bytes")

    def chunks():
        yield b'{"inputs": [{"name": "input", "datatype": "FP64", "shape": [100, 4], "data": ['
        for _ in range(399):
            yield b"1.0, "
        yield b"1.0]}]}"

    assert_error(httpx.post(f"{server.url}/v2/models/iris/infer", content=chunks()), 413, "2000 bytes")
    assert httpx.post(f"{server.url}/v2/models/iris/infer", json=ROW).status_code == 200


@pytest.mark.parametrize("bad_name", ["../etc", "a/b", ".hidden", "x" * 200])
def test_invalid_model_names_are_refused(server_factory: ServerFactory, iris_joblib: Path, bad_name: str) -> None:
    server = server_factory()
    files = {"artifact": ("iris.joblib", iris_joblib.read_bytes())}
    response = httpx.post(f"{server.url}/api/v1/models/{bad_name}/versions", files=files)
    assert response.status_code in (400, 404), response.text
    assert "error" in response.json()
    assert httpx.get(f"{server.url}/api/v1/models").json() == {"models": []}
