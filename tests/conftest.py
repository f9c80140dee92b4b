"""Shared fixtures: real Ferryman servers on free ports, and small models trained for the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

STARTUP_DEADLINE_S = 60.0

#: Every numeric V2 datatype and the numpy type it travels as.
NUMERIC_DTYPES: dict[str, type] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def free_port() -> int:
    """A port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], object], what: str = "condition", deadline_s: float = 30.0) -> None:
    """Poll ``condition`` until it is truthy, or fail after ``deadline_s`` naming ``what``."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # sync-ok: polling interval while waiting on a condition with a deadline
    raise AssertionError(f"timed out waiting for {what}")


class ServerProcess:
    """A `ferryman serve` subprocess on a free port with its own FERRYMAN_HOME."""

    def __init__(self, home: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home.parent / f"{home.name}-server-{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "ferryman",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--home",
            str(home),
            *args,
        ]
        # gRPC off unless a test asks for it (--grpc-port 0): servers started side by side never share 8081.
        full_env = {**os.environ, "FERRYMAN_REPOSITORY_POLL_SECONDS": "0.2", "FERRYMAN_GRPC_PORT": "-1", **(env or {})}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def wait_ready(self, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        """Block until /v2/health/ready answers 200, or fail with the server's log."""
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # sync-ok: polling interval while waiting on a condition with a deadline
        raise RuntimeError(f"server not ready after {deadline_s}s:\n{self.logs()}")

    def logs(self) -> str:
        """Everything the server printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers on demand (``start(home=None, args=[], env=None, wait=True)``); all stop at teardown."""
    started: list[ServerProcess] = []

    def start(
        home: Path | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> ServerProcess:
        server = ServerProcess(home or tmp_path / f"home{len(started)}", args or [], env)
        started.append(server)
        if wait:
            server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def ferryman_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One empty server shared by a test module (tests use distinct model names)."""
    server = ServerProcess(tmp_path_factory.mktemp("server") / "home", [])
    server.wait_ready()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def iris_data() -> tuple[np.ndarray, np.ndarray]:
    """Iris features (float64) and labels."""
    features, labels = load_iris(return_X_y=True)
    return features, labels


@pytest.fixture(scope="session")
def iris_pipeline(iris_data: tuple[np.ndarray, np.ndarray]) -> object:
    """A fitted scaler + logistic regression pipeline."""
    features, labels = iris_data
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels)


@pytest.fixture(scope="session")
def iris_joblib(tmp_path_factory: pytest.TempPathFactory, iris_pipeline: object) -> Path:
    """The iris pipeline saved with joblib."""
    path = tmp_path_factory.mktemp("iris") / "iris.joblib"
    joblib.dump(iris_pipeline, path)
    return path
