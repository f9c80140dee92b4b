"""A quick, side-by-side measurement of the request path: in-process model call vs. Ferryman over HTTP.

W1 (logistic regression, 20 float features, 1 row per request) is pushed to a fresh server and
driven with wrk (Debian package) at the given concurrencies. Prints a Markdown table; the full
peer benchmark is `make bench` (issue 3). Usage: python bench/smoke.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def in_process_latency(model: LogisticRegression, row: np.ndarray, repeats: int = 2000) -> float:
    for _ in range(100):
        model.predict_proba(row)
    started = time.perf_counter()
    for _ in range(repeats):
        model.predict(row)
        model.predict_proba(row)
    return (time.perf_counter() - started) / repeats * 1000


def run_wrk(url: str, body: str, connections: int, seconds: int, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = {json.dumps(body)}\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def millis(label: str) -> float:
        match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert match, out
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": millis("50%"),
        "p99": millis("99%"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    features, labels = make_classification(n_samples=2000, n_features=20, random_state=0)
    model = LogisticRegression(max_iter=500).fit(features, labels)
    row = features[:1]
    workdir = Path(tempfile.mkdtemp(prefix="ferryman-bench-"))
    joblib.dump(model, workdir / "w1.joblib")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ferryman",
            "serve",
            "--port",
            str(port),
            "--grpc-port",
            "0",
            "--home",
            str(workdir / "home"),
            str(workdir / "w1.joblib"),
            "--log-level",
            "warning",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        body = json.dumps(
            {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 20], "data": row.ravel().tolist()}]}
        )
        assert httpx.post(f"{url}/v2/models/w1/infer", content=body).status_code == 200
        local = in_process_latency(model, row)
        print(f"In-process predict + predict_proba, 1 row: {local:.3f} ms\n")
        print("| concurrency | req/s | p50 ms | p99 ms | errors |")
        print("|---|---|---|---|---|")
        for connections in args.concurrency:
            result = run_wrk(f"{url}/v2/models/w1/infer", body, connections, args.seconds, workdir)
            cells = [f"{result['rps']:.0f}", f"{result['p50']:.2f}", f"{result['p99']:.2f}", f"{result['errors']:.0f}"]
            print(f"| {connections} | " + " | ".join(cells) + " |")
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
