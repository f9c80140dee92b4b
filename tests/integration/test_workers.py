"""Several worker processes on one port behave as one server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import ServerFactory
from tests.integration.test_v2_rest import push

ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def worker_pids(parent: int) -> list[int]:
    """The server's worker processes (not multiprocessing's resource tracker)."""
    pids = []
    # Children started from any thread of the parent (a process's children are listed per thread).
    children = [
        pid for task in Path(f"/proc/{parent}/task").iterdir() for pid in (task / "children").read_text().split()
    ]
    for pid in children:
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except FileNotFoundError:
            continue
    return pids


def test_a_push_through_one_worker_is_served_by_all(server_factory: ServerFactory, iris_joblib: Path) -> None:
    server = server_factory(args=["--workers", "2"])
    assert len(worker_pids(server.process.pid)) == 2
    push(server.url, "iris", iris_joblib)
    # Fresh connections spread over both workers; none may answer 404 for the model just pushed.
    served_by = set()
    for _ in range(40):
        with httpx.Client(base_url=server.url) as client:
            response = client.post("/v2/models/iris/infer", json=ROW)
            assert response.status_code == 200, response.text
            served_by.add(response.headers["x-request-id"][:8])
    assert len(served_by) == 2, "both workers should have answered (request-id prefixes are per process)"


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(server_factory: ServerFactory) -> None:
    server = server_factory(args=["--workers", "2"])
    victim = worker_pids(server.process.pid)[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = worker_pids(server.process.pid)
        if len(pids) == 2 and victim not in pids:
            break
        time.sleep(0.1)  # sync-ok: polling interval while waiting on a condition with a deadline
    else:
        raise AssertionError("the dead worker was not replaced")
    server.wait_ready()
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
