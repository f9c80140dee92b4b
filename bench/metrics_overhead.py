"""What Prometheus metrics cost a request: recording on the request path, and being scraped.

``python -m bench.metrics_overhead [--runs 9] [--seconds 5] [--scrape-seconds 1]``

Ferryman's request-level metrics cannot be switched off: rollouts, the experiment report and alert
rules read the same counters and histograms. What they cost is measured in two parts:

1. **Recording** (in-process, ``timeit``): the exact updates one request makes — the version's stats
   lookup, in-flight up and down, the outcome counter, the latency histogram, the protocol counter,
   and the batcher's queue-time histogram plus a whole batch's run-time and batch-size histograms
   (counted in full for every request, as if each batch held one) — against the server's CPU time per
   request measured in part 2.
2. **Scraping** (a real server): two ``ferryman serve`` processes on one registry holding W1 (logistic
   regression, 20 features); one is scraped (``GET /metrics``, every ``--scrape-seconds``; Prometheus'
   default is 15-60 s) while wrk drives it, the other is not. In ``--runs`` rounds each is driven alone
   with wrk (c32, one-row JSON) for ``--seconds``, in alternating order; CPU time from
   ``/proc/<pid>/stat`` before and after. Figures: median CPU seconds per 10,000 requests and the median
   of the per-round ratios.

Metrics on = recording + scraping (one scrape's CPU, measured alone over 100 scrapes, per interval,
against the CPU the server spends per interval under the load), as a share of the server's CPU.
The alternating runs are printed as a cross-check. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import timeit
from pathlib import Path

import httpx
import numpy as np

from bench import wrk
from bench.ferryman_process import cpu_seconds, start_ferryman
from bench.models import artifact, build, data, request
from bench.monitoring_overhead import _push
from bench.peers.setup import bench_dir
from bench.servers import free_ports
from ferryman.monitoring.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram, RequestMetrics


def recording_seconds(repeat: int = 200_000) -> float:
    """Seconds of CPU one request's metric updates take (median of 5 timeit runs)."""
    metrics = RequestMetrics()
    metrics.stats("w1", "1")
    protocol = metrics.protocol("rest")
    queue, run, rows = Histogram(LATENCY_BUCKETS), Histogram(LATENCY_BUCKETS), Histogram(BATCH_BUCKETS)

    def one_request() -> None:
        stats = metrics.stats("w1", "1")
        stats.inflight += 1
        queue.observe(0.0004)
        run.observe(0.0002)
        rows.observe(1)
        stats.inflight -= 1
        stats.outcomes["ok"] += 1
        stats.latency.observe(0.0011)
        protocol["ok"] += 1

    def empty() -> None:
        return None

    spent = statistics.median(timeit.repeat(one_request, number=repeat, repeat=5)) / repeat
    call = statistics.median(timeit.repeat(empty, number=repeat, repeat=5)) / repeat
    return spent - call


class Scraper:
    """Fetches ``/metrics`` every ``interval`` seconds while switched on."""

    def __init__(self, url: str, interval: float) -> None:
        self._url = url
        self._interval = interval
        self._on = threading.Event()
        self._stop = threading.Event()
        self.scrapes = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                if self._on.is_set():
                    client.get(self._url).raise_for_status()
                    self.scrapes += 1
                self._stop.wait(self._interval)

    def scraping(self, on: bool) -> None:
        """Start or pause scraping."""
        if on:
            self._on.set()
        else:
            self._on.clear()

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._thread.join(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--scrape-seconds", type=float, default=1.0)
    args = parser.parse_args()

    record_s = recording_seconds()
    names = ("not scraped", f"scraped every {args.scrape_seconds:g} s")
    models_dir = bench_dir() / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    meta = build(models_dir)
    per_10k: dict[str, list[float]] = {name: [] for name in names}
    rates: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="ferryman-metrics-") as scratch:
        root = Path(scratch)
        home = root / "home"
        sample = root / "sample.npy"
        np.save(sample, data()[0][:1000].astype(np.float64))
        ports = free_ports(2)
        servers: list[subprocess.Popen[bytes]] = []
        scraper = Scraper(f"http://127.0.0.1:{ports[1]}/metrics", args.scrape_seconds)
        try:
            setup = start_ferryman(home, ports[0], {})
            _push(f"http://127.0.0.1:{ports[0]}", "w1", artifact(models_dir, "w1"), sample, None)
            os.killpg(setup.pid, signal.SIGTERM)
            setup.wait(timeout=30)
            # The scraper reads /metrics anonymously: the registry has no key, so nothing is refused.
            servers = [start_ferryman(home, port, {}) for port in ports]
            req = request("ferryman-json", "w1", list(meta["w1"]["row"]))  # type: ignore[call-overload]
            scripts = [root / "0.lua", root / "1.lua"]
            for port, script in zip(ports, scripts, strict=True):
                wrk.run(f"http://127.0.0.1:{port}", req, script, args.connections, 3)  # warm-up
            # What one scrape costs the server, measured alone: CPU seconds over 100 scrapes of an idle server.
            before = cpu_seconds(servers[1].pid)
            with httpx.Client(timeout=10) as client:
                for _ in range(100):
                    client.get(f"http://127.0.0.1:{ports[1]}/metrics").raise_for_status()
            scrape_cpu_s = (cpu_seconds(servers[1].pid) - before) / 100
            for round_ in range(args.runs):
                for step in range(2):
                    index = (round_ + step) % 2
                    scraper.scraping(index == 1)
                    before = cpu_seconds(servers[index].pid)
                    figures = wrk.run(
                        f"http://127.0.0.1:{ports[index]}", req, scripts[index], args.connections, args.seconds
                    )
                    spent = cpu_seconds(servers[index].pid) - before
                    scraper.scraping(False)
                    per_10k[names[index]].append(spent / figures["requests"] * 10_000)
                    rates[names[index]].append(figures["rps"])
        finally:
            scraper.close()
            for process in servers:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
    base = statistics.median(per_10k[names[0]])
    ratios = [on / off for on, off in zip(per_10k[names[1]], per_10k[names[0]], strict=True)]
    per_request_s = base / 10_000
    record_share = record_s / per_request_s
    # One scrape every interval, against the CPU the server spends per interval at the measured rate.
    load_cpu_per_s = statistics.median(rates[names[0]]) * per_request_s
    scrape_share = scrape_cpu_s / args.scrape_seconds / load_cpu_per_s
    print(json.dumps({"per_10k": per_10k, "rps": rates, "recording_us": record_s * 1e6, "scrapes": scraper.scrapes}))
    print()
    print(
        f"W1, wrk c{args.connections}, {args.runs} alternating rounds of {args.seconds:g} s; the scraped server "
        f"answered {scraper.scrapes} scrapes."
    )
    print()
    print("| part | figure | share of the server's CPU per request |")
    print("|---|---:|---:|")
    print(f"| server CPU per request, not scraped (median) | {per_request_s * 1e6:.1f} µs | |")
    print(f"| recording: one request's metric updates (timeit) | {record_s * 1e6:.2f} µs | {record_share * 100:.1f}% |")
    print(
        f"| scraping every {args.scrape_seconds:g} s: one scrape's server CPU (100 scrapes, idle server) "
        f"| {scrape_cpu_s * 1000:.2f} ms | {scrape_share * 100:.2f}% |"
    )
    print(f"| **metrics on: recording + scraping** | | **{(record_share + scrape_share) * 100:.1f}%** |")
    each = ", ".join(f"{value:.3f}" for value in ratios)
    print()
    print(
        f"Cross-check under load, scraped vs not (CPU s per 10k, medians): {statistics.median(per_10k[names[1]]):.3f} "
        f"vs {base:.3f}; round ratios {each} (median {statistics.median(ratios):.3f}): this machine's noise is "
        "larger than the effect, which is why the parts are measured directly."
    )


if __name__ == "__main__":
    main()
