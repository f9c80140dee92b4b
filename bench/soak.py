"""Bounded memory under sustained traffic: 100,000 requests after a warm-up, RSS and the bounded structures.

``python -m bench.soak [--requests 200000] [--warmup 100000] [--connections 8]`` (``make soak``)

Starts one ``ferryman serve`` with monitoring on every request (drift windows, data quality) and a
payload log sampling 10% of requests to rotating JSONL files; shadows off. Pushes a scikit-learn
classifier with a reference sample, then sends one-row V2 JSON requests over keep-alive connections
(a raw HTTP/1.1 client: cheap enough that the server, not the driver, is what is measured).

The warm-up is long enough to fill every bounded structure of the server, the largest being the
feedback ledger (request id → version and prediction for the latest 50,000 requests, 10-15 MiB,
``serving/experiments.py``): RSS climbs while they fill, then must stay flat. The server's RSS
(``process_resident_memory_bytes``) is read after the warm-up and at the end, with
the sizes of the bounded structures: the monitoring queue and the payload queue (never above their
caps), the drift window (exactly at its cap once full), the payload files (never more than
``max_files``). Passes when RSS grew by at most ``max(10 MiB, 5 %)`` after the warm-up and every
structure stayed within its cap. Prints one JSON document; exit status 1 on a failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

MODEL = "soak"
#: Settings of the soak server: small caps, so that reaching and holding them is what is tested.
SERVER_ENV = {
    "FERRYMAN_MONITORING_SAMPLE_RATE": "1",
    "FERRYMAN_MONITORING_MAX_SAMPLES_PER_SECOND": "0",  # no per-version budget: every request is offered
    "FERRYMAN_MONITORING_WINDOW_ROWS": "500",
    "FERRYMAN_MONITORING_QUEUE_RECORDS": "256",
    "FERRYMAN_PAYLOAD_QUEUE_RECORDS": "256",
    "FERRYMAN_MONITORING_REPORT_SECONDS": "0.5",
}
PAYLOAD_LOG = {"sample_rate": 0.1, "max_file_mb": 0.25, "max_files": 4}


@dataclass(frozen=True)
class Probe:
    """The server's memory and the sizes of its bounded structures at one moment."""

    requests: int
    rss_bytes: float
    monitoring_queue: float
    payload_queue: float
    drift_window_rows: int
    drift_rows_observed: int
    payload_files: int
    payload_written: float
    payload_dropped: float
    monitoring_dropped: float


def iris_model(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """A fitted classifier, its reference sample, and request rows drawn around the training data."""
    features, labels = load_iris(return_X_y=True)
    model = folder / "soak.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(features, labels), model)
    sample = folder / "sample.npy"
    np.save(sample, features)
    rows = features[np.random.default_rng(0).integers(0, len(features), 512)]
    rows = rows + np.random.default_rng(1).normal(scale=0.05, size=rows.shape)
    return model, sample, rows


def request_bodies(rows: np.ndarray) -> list[bytes]:
    """Pre-encoded V2 requests, one row each (encoding is not what the soak measures)."""
    return [
        json.dumps({"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": row.tolist()}]}).encode()
        for row in rows
    ]


async def _connection(host: str, port: int, path: str, bodies: list[bytes], count: int, start: int) -> int:
    """Send ``count`` requests on one keep-alive connection; returns how many were answered 200."""
    reader, writer = await asyncio.open_connection(host, port)
    ok = 0
    try:
        for index in range(count):
            body = bodies[(start + index) % len(bodies)]
            writer.write(
                b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                % (path.encode(), host.encode(), len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            ok += head.startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    return ok


def drive(url: str, model: str, bodies: list[bytes], requests: int, connections: int = 8) -> int:
    """Send ``requests`` one-row inferences over ``connections`` keep-alive connections; how many got 200."""
    parsed = httpx.URL(url)
    path = f"/v2/models/{model}/infer"
    share = [requests // connections + (1 if i < requests % connections else 0) for i in range(connections)]

    async def run() -> int:
        results = await asyncio.gather(
            *(_connection(parsed.host, parsed.port or 80, path, bodies, n, i * 997) for i, n in enumerate(share) if n)
        )
        return sum(results)

    return asyncio.run(run())


def _samples(url: str) -> Iterator[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


def probe(url: str, model: str, payload_dir: Path | None, requests: int) -> Probe:
    """Read RSS and the bounded structures' sizes from ``/metrics`` and the drift report."""
    values: dict[str, float] = {}
    for name, labels, value in _samples(url):
        if labels.get("model", model) != model:
            continue
        key = name if "result" not in labels else f"{name}:{labels['result']}"
        values[key] = values.get(key, 0.0) + value
    report = httpx.get(f"{url}/api/v1/models/{model}/versions/1/drift", timeout=30).json()
    files = len([p for p in payload_dir.rglob("*") if p.is_file()]) if payload_dir and payload_dir.exists() else 0
    return Probe(
        requests=requests,
        rss_bytes=values["process_resident_memory_bytes"],
        monitoring_queue=values["ferryman_monitoring_queue_records"],
        payload_queue=values["ferryman_payload_queue_records"],
        drift_window_rows=int(report.get("rows", 0)),
        drift_rows_observed=int(report.get("rows_observed", 0)),
        payload_files=files,
        payload_written=values.get("ferryman_payload_records_total:written", 0.0),
        payload_dropped=values.get("ferryman_payload_records_total:dropped", 0.0),
        monitoring_dropped=values.get("ferryman_monitoring_dropped_total", 0.0),
    )


class QueueWatch(threading.Thread):
    """Reads the queue gauges every 0.1 s while traffic flows, keeping the largest values seen."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.peaks = {"ferryman_monitoring_queue_records": 0.0, "ferryman_payload_queue_records": 0.0}
        self.reads = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            for name, _, value in _samples(self.url):
                if name in self.peaks:
                    self.peaks[name] = max(self.peaks[name], value)
            self.reads += 1
            self._stop_event.wait(0.1)

    def stop(self) -> dict[str, float]:
        """Stop watching; the peaks."""
        self._stop_event.set()
        self.join(30)
        return self.peaks


def settle(url: str, model: str, requests: int, deadline_s: float = 30.0) -> None:
    """Wait until the queues are empty and the drift report has counted every one of ``requests``.

    The report is recomputed at most every ``monitoring_report_seconds``: reading it too early
    would show an older, smaller window.
    """
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        queued = dropped = 0.0
        for name, _, value in _samples(url):
            if name in ("ferryman_monitoring_queue_records", "ferryman_payload_queue_records"):
                queued += value
            elif name == "ferryman_monitoring_dropped_total":
                dropped += value
        if queued == 0:
            report = httpx.get(f"{url}/api/v1/models/{model}/versions/1/drift", timeout=30).json()
            if int(report.get("rows_observed", 0)) + dropped >= requests:
                return
        time.sleep(0.05)  # sync-ok: polling interval while waiting with a deadline
    raise RuntimeError("the monitoring queues did not drain, or the drift report did not catch up")


def bounded(probe: Probe, env: dict[str, str], payload: dict[str, float]) -> list[str]:
    """The caps a probe breaks (empty when every bounded structure is within its bound)."""
    problems = []
    if probe.monitoring_queue > int(env["FERRYMAN_MONITORING_QUEUE_RECORDS"]):
        problems.append(f"monitoring queue {probe.monitoring_queue} over its cap")
    if probe.payload_queue > int(env["FERRYMAN_PAYLOAD_QUEUE_RECORDS"]):
        problems.append(f"payload queue {probe.payload_queue} over its cap")
    if probe.drift_window_rows != int(env["FERRYMAN_MONITORING_WINDOW_ROWS"]):
        problems.append(f"drift window holds {probe.drift_window_rows} rows, not its cap")
    if probe.payload_files > payload["max_files"] + 1:  # the file being written + the kept ones
        problems.append(f"{probe.payload_files} payload files, over max_files {payload['max_files']}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200_000, help="in all, warm-up included")
    parser.add_argument("--warmup", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rss-bound-mb", type=float, default=10.0)
    parser.add_argument("--rss-bound-share", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferryman-soak-") as tmp:
        folder = Path(tmp)
        model, sample, rows = iris_model(folder)
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        home = folder / "home"
        payload_dir = folder / "payloads"
        env = {**os.environ, **SERVER_ENV, "FERRYMAN_GRPC_PORT": "-1"}  # HTTP only: no clash on the gRPC port
        log = (folder / "server.log").open("wb")
        command = [sys.executable, "-m", "ferryman", "serve", "--port", str(port), "--home", str(home)]
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, server)
            from ferryman import Client

            with Client(url) as client:
                config = {"payload_log": {**PAYLOAD_LOG, "path": str(payload_dir)}}
                client.push(model, MODEL, sample=sample, runtime_config=config)
            bodies = request_bodies(rows)
            started = time.monotonic()
            ok = drive(url, MODEL, bodies, args.warmup, args.connections)
            settle(url, MODEL, args.warmup)
            warm = probe(url, MODEL, payload_dir, args.warmup)
            probes = [warm]
            remaining = args.requests - args.warmup
            step = max(1, remaining // 9)
            watch = QueueWatch(url)
            watch.start()
            while remaining > 0:
                count = min(step, remaining)
                ok += drive(url, MODEL, bodies, count, args.connections)
                remaining -= count
                probes.append(probe(url, MODEL, payload_dir, args.requests - remaining))
            peaks = watch.stop()
            elapsed = time.monotonic() - started
            settle(url, MODEL, args.requests)
            end = probe(url, MODEL, payload_dir, args.requests)
            probes.append(end)
        finally:
            server.terminate()
            server.wait(30)
            log.close()
    growth = end.rss_bytes - warm.rss_bytes
    bound = max(args.rss_bound_mb * 2**20, args.rss_bound_share * warm.rss_bytes)
    problems = [problem for p in probes for problem in bounded(p, SERVER_ENV, PAYLOAD_LOG)]
    for name, env_name in (
        ("ferryman_monitoring_queue_records", "FERRYMAN_MONITORING_QUEUE_RECORDS"),
        ("ferryman_payload_queue_records", "FERRYMAN_PAYLOAD_QUEUE_RECORDS"),
    ):
        if peaks[name] > int(SERVER_ENV[env_name]):
            problems.append(f"{name} reached {peaks[name]} under load, over its cap")
    if ok != args.requests:
        problems.append(f"{args.requests - ok} requests were not answered 200")
    if growth > bound:
        problems.append(f"RSS grew {growth / 2**20:.1f} MiB after warm-up (bound {bound / 2**20:.1f} MiB)")
    summary = {
        "requests": args.requests,
        "ok": ok,
        "seconds": round(elapsed, 1),
        "rss_after_warmup_mib": round(warm.rss_bytes / 2**20, 1),
        "rss_end_mib": round(end.rss_bytes / 2**20, 1),
        "rss_growth_mib": round(growth / 2**20, 2),
        "rss_bound_mib": round(bound / 2**20, 1),
        "queue_peaks_under_load": peaks,
        "monitoring_dropped": end.monitoring_dropped,
        "payload_written": end.payload_written,
        "payload_dropped": end.payload_dropped,
        "payload_files": end.payload_files,
        "drift_window_rows": end.drift_window_rows,
        "drift_rows_observed": end.drift_rows_observed,
        "probes": [asdict(p) for p in probes],
        "problems": problems,
        "passed": not problems,
    }
    print(json.dumps(summary, indent=2))
    sys.exit(0 if not problems else 1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, server: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # sync-ok: polling interval while waiting with a deadline
    raise RuntimeError("server not ready")


if __name__ == "__main__":
    main()
