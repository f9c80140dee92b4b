"""Graceful lifecycle over real HTTP: ready only once warmed up; on SIGTERM, 503 at once, drain, exit 0.

The model waits while a "hold" file exists, so the test decides when a prediction may finish: rows
of ones wait on ``hold``, the warm-up's rows of zeros on ``hold-warmup``.
"""

from __future__ import annotations

import io
import json
import signal
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from ferryman.archive import pack_folder
from tests.conftest import ServerFactory, ServerProcess, wait_for

GATE_MODEL = """
import time
from pathlib import Path

import ferryman
from ferryman import TensorSpec


class Gate(ferryman.Model):
    inputs = [TensorSpec("x", "FP32", (-1, 2))]
    outputs = [TensorSpec("y", "FP32", (-1,))]

    def predict(self, inputs):
        x = inputs["x"]
        folder = Path(self.options["dir"])
        hold = folder / ("hold" if (x == 1).any() else "hold-warmup")
        if hold.exists():
            (folder / "running").touch()
        deadline = time.monotonic() + 120
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # sync-ok: the model waits until the test lets it finish
        return {"y": x.sum(axis=1)}
"""

ROW = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 1]}]}
ENV = {"FERRYMAN_METRICS_AUTH": "false"}


def status(url: str) -> int | None:
    """The status of a GET, or None when the connection is refused or dropped."""
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return None


@pytest.fixture(scope="module")
def gate_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A FERRYMAN_HOME holding the gate model (one batch of one row at a time), and its hold folder."""
    root = tmp_path_factory.mktemp("drain")
    holds = root / "holds"
    holds.mkdir()
    source = root / "gate"
    source.mkdir()
    (source / "model.py").write_text(textwrap.dedent(GATE_MODEL))
    buffer = io.BytesIO()
    pack_folder(source, buffer)
    config = {"dir": str(holds), "batching": {"enabled": True, "max_batch_size": 1, "instances": 1}}
    server = ServerProcess(root / "home", [], ENV)
    try:
        server.wait_ready()
        response = httpx.post(
            f"{server.url}/api/v1/models/gate/versions",
            files={"artifact": ("gate.tar", buffer.getvalue())},
            data={"metadata": json.dumps({"runtime_config": config})},
            timeout=60,
        )
        assert response.status_code == 201, response.text
    finally:
        server.stop()
    assert server.process.returncode == 0, f"SIGTERM with nothing in flight must exit 0:\n{server.logs()}"
    return root / "home", holds


def send_in_background(server: ServerProcess, results: list[httpx.Response | Exception]) -> threading.Thread:
    """POST ROW from a thread; its response (or transport error) lands in ``results``."""

    def run() -> None:
        try:
            results.append(httpx.post(f"{server.url}/v2/models/gate/infer", json=ROW, timeout=60))
        except httpx.TransportError as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def queued(server: ServerProcess) -> Callable[[], float]:
    """Reads ``ferryman_queue_requests`` of the gate model from /metrics."""

    def read() -> float:
        for line in httpx.get(f"{server.url}/metrics", timeout=5).text.splitlines():
            if line.startswith("ferryman_queue_requests{") and 'model="gate"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    return read


def test_ready_only_after_the_warm_up(gate_home: tuple[Path, Path], server_factory: ServerFactory) -> None:
    home, holds = gate_home
    (holds / "hold-warmup").touch()
    try:
        server = server_factory(home=home, env=ENV, wait=False)
        wait_for(lambda: status(f"{server.url}/v2/health/live") == 200, "liveness while warming up")
        ready = httpx.get(f"{server.url}/v2/health/ready", timeout=5)
        assert ready.status_code == 503 and "loading" in ready.json()["error"]
    finally:
        (holds / "hold-warmup").unlink()
    server.wait_ready()


def test_sigterm_turns_readiness_off_at_once_and_lets_in_flight_and_queued_requests_finish(
    gate_home: tuple[Path, Path], server_factory: ServerFactory
) -> None:
    home, holds = gate_home
    server = server_factory(home=home, env=ENV)
    (holds / "running").unlink(missing_ok=True)
    (holds / "hold").touch()
    results: list[httpx.Response | Exception] = []
    try:
        threads = [send_in_background(server, results)]
        wait_for((holds / "running").exists, "the first request to reach the model")
        threads += [send_in_background(server, results) for _ in range(2)]
        wait_for(lambda: queued(server)() == 2, "two requests queued behind it")

        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: status(f"{server.url}/v2/health/ready") == 503, "readiness 503 after SIGTERM", 10)
        assert status(f"{server.url}/v2/health/live") == 200
        assert all(thread.is_alive() for thread in threads) and not results
        assert server.process.poll() is None, "exited with requests in flight"
    finally:
        (holds / "hold").unlink()
    for thread in threads:
        thread.join(60)
    assert [r.status_code if isinstance(r, httpx.Response) else r for r in results] == [200, 200, 200]
    assert all(r.json()["outputs"][0]["data"] == [2.0] for r in results if isinstance(r, httpx.Response))
    assert server.process.wait(30) == 0, server.logs()
    assert status(f"{server.url}/v2/health/live") is None, "the listener is closed: connections are refused"


def test_a_request_running_past_the_drain_timeout_is_cut_and_the_process_exits(
    gate_home: tuple[Path, Path], server_factory: ServerFactory
) -> None:
    home, holds = gate_home
    server = server_factory(home=home, env={**ENV, "FERRYMAN_DRAIN_TIMEOUT_SECONDS": "1"})
    (holds / "running").unlink(missing_ok=True)
    (holds / "hold").touch()
    results: list[httpx.Response | Exception] = []
    try:
        thread = send_in_background(server, results)
        wait_for((holds / "running").exists, "the request to reach the model")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.logs()  # while the model is still holding
        thread.join(30)
        outcome = results[0]
        assert not (isinstance(outcome, httpx.Response) and outcome.status_code == 200), "it was not cut"
        assert "cut" in server.logs()
    finally:
        (holds / "hold").unlink()


def test_with_workers_the_parent_forwards_sigterm_and_exits_0_after_they_drain(
    gate_home: tuple[Path, Path], server_factory: ServerFactory
) -> None:
    home, holds = gate_home
    server = server_factory(home=home, args=["--workers", "2"], env=ENV)
    (holds / "running").unlink(missing_ok=True)
    (holds / "hold").touch()
    results: list[httpx.Response | Exception] = []
    try:
        thread = send_in_background(server, results)
        wait_for((holds / "running").exists, "the request to reach a worker's model")
        server.process.send_signal(signal.SIGTERM)
        # The idle worker leaves at once; the busy one answers 503 to probes while it drains.
        wait_for(lambda: status(f"{server.url}/v2/health/ready") == 503, "readiness 503 from the draining worker")
        assert thread.is_alive()
    finally:
        (holds / "hold").unlink()
    thread.join(60)
    assert isinstance(results[0], httpx.Response) and results[0].status_code == 200, results
    assert server.process.wait(30) == 0, server.logs()
