"""What monitoring costs: the server's CPU seconds per 10,000 requests with it off and on.

``python -m bench.monitoring_overhead [--runs 9] [--seconds 5]``

One ``ferryman serve`` process per configuration, all on one registry (W1, logistic regression on
20 features, pushed with a 1,000-row sample so drift and data quality run against a stored profile):

- ``off``: ``monitoring_enabled: false``, no payload log;
- ``every request``: rate 1.0 and no sampling budget (drift windows, quality counters on every request);
- ``defaults``: the default ``monitoring_sample_rate`` and ``monitoring_max_samples_per_second``;
- ``defaults + payload log 0.1``: the defaults, on a copy of W1 whose runtime config logs 10% of
  its requests to JSONL (everything on).

Then, in ``--runs`` rounds, each server is driven alone with wrk (c32, one-row JSON requests) for
``--seconds``, in a rotating order; its CPU time is read from ``/proc/<pid>/stat`` (utime + stime,
all threads) before and after. The figures are the median over rounds of CPU seconds per 10,000
requests, and the median over rounds of each configuration's figure divided by ``off``'s in the
same round (neighbouring runs share the machine's state, so the ratio cancels slow drifts of a
shared machine). CPU time per request resolves what throughput on a noisy machine cannot. Prints
a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx
import numpy as np

from bench import wrk
from bench.ferryman_process import cpu_seconds, start_ferryman
from bench.models import artifact, build, data, request
from bench.peers.setup import bench_dir
from bench.servers import free_ports
from ferryman.config import Settings


def _push(base: str, name: str, path: Path, sample: Path, runtime_config: dict[str, object] | None) -> None:
    metadata = json.dumps({"runtime_config": runtime_config} if runtime_config else {})
    with path.open("rb") as handle, sample.open("rb") as rows:
        response = httpx.post(
            f"{base}/api/v1/models/{name}/versions",
            files={"artifact": (path.name, handle), "sample": (sample.name, rows)},
            data={"metadata": metadata},
            timeout=120,
        )
    response.raise_for_status()


_BUDGET = "FERRYMAN_MONITORING_MAX_SAMPLES_PER_SECOND"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    default_rate = Settings().monitoring_sample_rate
    default_budget = Settings().monitoring_max_samples_per_second
    configs: list[tuple[str, str, dict[str, str]]] = [
        ("off", "w1", {"FERRYMAN_MONITORING_ENABLED": "false"}),
        ("every request (rate 1.0, no budget)", "w1", {"FERRYMAN_MONITORING_SAMPLE_RATE": "1", _BUDGET: "0"}),
        (f"defaults (rate {default_rate:g}, {default_budget:g}/s budget)", "w1", {}),
        ("defaults + payload log 0.1 (everything on)", "w1p", {}),
    ]
    models_dir = bench_dir() / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    meta = build(models_dir)
    with tempfile.TemporaryDirectory(prefix="ferryman-monitoring-") as scratch:
        root = Path(scratch)
        home = root / "home"
        sample = root / "sample.npy"
        np.save(sample, data()[0][:1000].astype(np.float64))
        ports = free_ports(len(configs))
        servers: list[subprocess.Popen[bytes]] = []
        try:
            setup = start_ferryman(home, ports[0], configs[0][2])
            base = f"http://127.0.0.1:{ports[0]}"
            _push(base, "w1", artifact(models_dir, "w1"), sample, None)
            _push(base, "w1p", artifact(models_dir, "w1"), sample, {"payload_log": {"sample_rate": 0.1}})
            os.killpg(setup.pid, signal.SIGTERM)
            setup.wait(timeout=30)
            servers = [start_ferryman(home, port, env) for port, (_, _, env) in zip(ports, configs, strict=True)]
            scripts = []
            for index, (_, model, _) in enumerate(configs):
                req = request("ferryman-json", model, list(meta["w1"]["row"]))  # type: ignore[call-overload]
                script = root / f"{index}.lua"
                wrk.run(f"http://127.0.0.1:{ports[index]}", req, script, args.connections, 3)  # warm-up
                scripts.append((req, script))
            per_10k: dict[str, list[float]] = {name: [] for name, _, _ in configs}
            rates: dict[str, list[float]] = {name: [] for name, _, _ in configs}
            for round_ in range(args.runs):
                for step in range(len(configs)):
                    index = (round_ + step) % len(configs)
                    name = configs[index][0]
                    req, script = scripts[index]
                    before = cpu_seconds(servers[index].pid)
                    figures = wrk.run(f"http://127.0.0.1:{ports[index]}", req, script, args.connections, args.seconds)
                    spent = cpu_seconds(servers[index].pid) - before
                    per_10k[name].append(spent / figures["requests"] * 10_000)
                    rates[name].append(figures["rps"])
            drift = httpx.get(f"http://127.0.0.1:{ports[1]}/api/v1/models/w1/versions/1/drift", timeout=60).json()
            payloads = sum(1 for _ in (home / "payloads" / "w1p").rglob("*.jsonl"))
        finally:
            for process in servers:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    off = statistics.median(per_10k["off"])
    ratios = {
        name: [on / base for on, base in zip(values, per_10k["off"], strict=True)] for name, values in per_10k.items()
    }
    print(json.dumps({"per_10k": per_10k, "rps": rates}, indent=1))
    print()
    print(
        f"W1, wrk c{args.connections}, {args.runs} alternating runs of {args.seconds:g} s per configuration; "
        f"monitored server's drift status after the runs: {drift['status']}, {drift['rows_observed']:,} rows "
        f"observed, {drift['dropped']:,} dropped; payload log files: {payloads}."
    )
    print()
    print(
        "| configuration | CPU s per 10k requests (median) | vs off (medians) | vs off (median of round ratios) "
        "| round ratios | req/s (median) |"
    )
    print("|---|---:|---:|---:|---|---:|")
    for name, _, _ in configs:
        median = statistics.median(per_10k[name])
        if name == "off":
            print(f"| {name} | {median:.3f} | | | | {statistics.median(rates[name]):,.0f} |")
            continue
        each = ", ".join(f"{value:.2f}" for value in ratios[name])
        paired = (statistics.median(ratios[name]) - 1) * 100
        print(
            f"| {name} | {median:.3f} | {(median / off - 1) * 100:+.1f}% | **{paired:+.1f}%** | {each} "
            f"| {statistics.median(rates[name]):,.0f} |"
        )


if __name__ == "__main__":
    main()
