"""Requests per second through nginx in front of 1 and 2 Ferryman replicas sharing one PostgreSQL registry.

``make bench-replicas`` (about a minute). Starts a throwaway PostgreSQL cluster and nginx the way
the replica tests do (``tests/pg.py``, ``tests/replicas/replicas.py``), two ``ferryman serve``
replicas (one worker each, separate homes, one artifact folder), pushes a scikit-learn iris
pipeline, then drives nginx with wrk for ``--seconds`` per point: first with one upstream, then two.
Prints one Markdown table; the figure in docs/benchmarks.md ("Replicas behind nginx") came from it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tests.conftest import ServerProcess
from tests.pg import PostgresCluster
from tests.replicas.replicas import IRIS_ROW, Nginx, replica_env

from bench import wrk
from bench.models import Request
from ferryman.client import Client


def _model(folder: Path) -> Path:
    features, labels = load_iris(return_X_y=True)
    path = folder / "iris.joblib"
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(features, labels), path)
    return path


def main() -> None:
    """Run the two points and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="wrk duration per point")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    args = parser.parse_args()
    if not wrk.available():
        raise SystemExit("wrk is missing: run `make wrk`")
    root = Path(tempfile.mkdtemp(prefix="ferryman-bench-replicas-"))
    cluster = PostgresCluster()
    replicas: list[ServerProcess] = []
    try:
        cluster.start()
        env = replica_env(cluster.create_database(), root / "artifacts", FERRYMAN_LOG_LEVEL="warning")
        replicas = [ServerProcess(root / f"replica{i}", [], env) for i in range(2)]
        for replica in replicas:
            replica.wait_ready()
        with Client(replicas[0].url) as client:
            client.push(_model(root), "iris")
        request = Request("/v2/models/iris/infer", json.dumps(IRIS_ROW).encode(), {"Content-Type": "application/json"})
        rows = []
        for count in (1, 2):
            nginx = Nginx(root / f"nginx{count}", [f"127.0.0.1:{r.port}" for r in replicas[:count]])
            try:
                script = root / f"wrk{count}.lua"
                wrk.run(nginx.url, request, script, args.connections, 2)  # warm-up: loads, connections
                result = wrk.run(nginx.url, request, script, args.connections, args.seconds)
            finally:
                nginx.stop()
            rows.append((count, result))
        print(f"cores: {os.cpu_count()}, wrk -c{args.connections}, {args.seconds:.0f} s per point\n")
        print("| replicas | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
        print("|---|---|---|---|---|---|")
        for count, r in rows:
            print(
                f"| {count} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                f"{r['non2xx']:.0f} | {r['socket_errors']:.0f} |"
            )
    finally:
        for replica in replicas:
            replica.stop()
        cluster.destroy()


if __name__ == "__main__":
    main()
