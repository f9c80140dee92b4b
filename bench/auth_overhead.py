"""What authentication costs: the server's CPU seconds per 10,000 inference requests, with and without it.

``python -m bench.auth_overhead [--runs 5] [--seconds 8] [--connections 32] [--placement executor|event_loop]``

Three registries, each holding W1 (logistic regression on 20 features):

- ``no auth``: no key exists, so authentication is off (every caller is the local anonymous admin);
- ``API key``: the registry has an admin key (used to push W1) and a ``predictor`` key limited to
  ``w1``, which every request carries as ``Authorization: Bearer`` — the full check: header scan,
  key format, SHA-256, the key table lookup, the role and model scope, and the pinned-version
  header scan that a predictor (without traffic rights) needs;
- ``no auth (control)``: a second key-less one (``--no-control`` leaves it out), to show how far two
  identical servers differ on this machine.

Then, ``--runs`` times, each configuration is started as a fresh ``ferryman serve`` process on
127.0.0.1, warmed up and driven alone with wrk (one-row JSON requests, ``--connections``) for
``--seconds``, in turn and in alternating order (ABC, CBA, …); its CPU time is read from
``/proc/<pid>/stat`` (utime + stime, all threads) before and after. The figures are the median over
runs of CPU seconds per 10,000 requests, and the median of the per-run ratios (each run's servers
ran back to back, so a slow drift of a shared machine cancels). The check itself is also timed
in-process (``Guard.admit_inference`` with the same headers), as a share of the no-auth server's CPU
per request. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench import wrk
from bench.ferryman_process import cpu_seconds, start_ferryman
from bench.models import Request, artifact, build, request
from bench.peers.setup import bench_dir
from bench.servers import free_ports
from ferryman.config import Settings
from ferryman.protocols.auth import Guard
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def _keys(home: Path) -> tuple[str, str]:
    """An admin key and a predictor key limited to w1, made directly in ``home``'s registry."""
    home.mkdir(parents=True, exist_ok=True)
    engine = create_registry_engine(f"sqlite:///{(home / 'registry.db').resolve()}")
    upgrade_to_head(engine)
    registry = RegistryService(engine, ArtifactStore(home / "artifacts"))
    _, admin = registry.create_key("admin", name="bench-admin")
    _, predictor = registry.create_key("predictor", ["w1"], name="bench-predictor")
    return admin, predictor


def _push(base: str, path: Path, headers: dict[str, str], placement: str) -> None:
    # Where batches run is pinned: left to the batcher's cost model, W1's batches settle either on
    # the event loop or in the executor, a bistable choice worth ~20% of CPU per request that would
    # drown the figure measured here.
    inline_max_ms = 0.0 if placement == "executor" else 50.0
    metadata = json.dumps({"runtime_config": {"batching": {"inline_max_ms": inline_max_ms}}})
    with path.open("rb") as handle:
        response = httpx.post(
            f"{base}/api/v1/models/w1/versions",
            files={"artifact": (path.name, handle)},
            data={"metadata": metadata},
            headers=headers,
            timeout=120,
        )
    response.raise_for_status()


def _check_cost(home: Path, key: str, headers: dict[str, str], calls: int = 200_000) -> float:
    """Microseconds one ``Guard.admit_inference`` call takes in this process, with the headers wrk sends."""
    settings = Settings(home=home)
    registry = RegistryService(
        create_registry_engine(settings.resolved_database_url), ArtifactStore(settings.resolved_artifacts_dir)
    )
    guard = Guard(settings, registry, ThreadPoolExecutor(1))
    raw = [(b"host", b"127.0.0.1"), *((name.lower().encode(), value.encode()) for name, value in headers.items())]
    raw.append((b"content-length", b"300"))
    scope = {"type": "http", "method": "POST", "path": "/v2/models/w1/infer", "headers": raw, "client": ("::1", 1)}

    async def loop() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            await guard.admit_inference(scope, "w1")
        return (time.perf_counter() - started) / calls * 1e6

    assert key in headers["Authorization"]
    return min(asyncio.run(loop()) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-control", action="store_true", help="Leave out the second no-auth server.")
    parser.add_argument(
        "--placement", choices=["executor", "event_loop"], default="executor", help="Where W1's batches run."
    )
    args = parser.parse_args()

    models_dir = bench_dir() / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    meta = build(models_dir)
    plain = request("ferryman-json", "w1", list(meta["w1"]["row"]))  # type: ignore[call-overload]
    names = ["no auth", "API key"] if args.no_control else ["no auth", "API key", "no auth (control)"]
    with tempfile.TemporaryDirectory(prefix="ferryman-auth-") as scratch:
        root = Path(scratch)
        admin, predictor = _keys(root / "keyed")
        keyed = Request(plain.path, plain.body, {**plain.headers, "Authorization": f"Bearer {predictor}"})
        homes = [root / "open", root / "keyed", root / "control"][: len(names)]
        requests = [plain, keyed, plain][: len(names)]
        scripts = [root / f"{index}.lua" for index in range(len(names))]
        for index, home in enumerate(homes):
            (port,) = free_ports(1)
            server = start_ferryman(home, port)
            try:
                headers = {"Authorization": f"Bearer {admin}"} if index == 1 else {}
                _push(f"http://127.0.0.1:{port}", artifact(models_dir, "w1"), headers, args.placement)
            finally:
                _stop(server)
        per_10k: dict[str, list[float]] = {name: [] for name in names}
        rates: dict[str, list[float]] = {name: [] for name in names}
        for run in range(args.runs):
            order = list(range(len(names)))
            for index in order if run % 2 == 0 else order[::-1]:
                # A fresh process per measurement: two identical servers differ by up to ~20% on a
                # small shared machine (thread placement), a bias that fresh processes turn into noise.
                (port,) = free_ports(1)
                base = f"http://127.0.0.1:{port}"
                server = start_ferryman(homes[index], port)
                try:
                    wrk.run(base, requests[index], scripts[index], args.connections, 2)  # warm-up
                    before = cpu_seconds(server.pid)
                    figures = wrk.run(base, requests[index], scripts[index], args.connections, args.seconds)
                    spent = cpu_seconds(server.pid) - before
                finally:
                    _stop(server)
                if figures["non2xx"]:
                    raise RuntimeError(f"{names[index]}: {figures['non2xx']} requests were refused")
                per_10k[names[index]].append(spent / figures["requests"] * 10_000)
                rates[names[index]].append(figures["rps"])
        check_us = _check_cost(root / "keyed", predictor, keyed.headers)
    print(json.dumps({"per_10k": per_10k, "rps": rates, "check_us": check_us}, indent=1))
    print()
    base_cpu = statistics.median(per_10k["no auth"])
    print(
        f"W1 (batches in the {args.placement.replace('_', ' ')}), wrk c{args.connections}, {args.runs} runs of "
        f"{args.seconds:g} s per server, each a fresh process, in alternating order."
    )
    print()
    print(
        "| server | CPU s per 10,000 requests (median) | runs | req/s (median) "
        "| vs no auth: medians, median of run ratios |"
    )
    print("|---|---:|---|---:|---:|")
    for name in names:
        median = statistics.median(per_10k[name])
        runs = ", ".join(f"{value:.3f}" for value in per_10k[name])
        change = "-"
        if name != "no auth":
            ratios = [other / base for base, other in zip(per_10k["no auth"], per_10k[name], strict=True)]
            change = f"{median / base_cpu - 1:+.1%}, **{statistics.median(ratios) - 1:+.1%}**"
        print(f"| {name} | {median:.3f} | {runs} | {statistics.median(rates[name]):,.0f} | {change} |")
    per_request_us = base_cpu / 10_000 * 1e6
    print()
    print(
        f"The check itself, timed in-process (Guard.admit_inference, predictor key, same headers): {check_us:.1f} µs "
        f"per request = {check_us / per_request_us:.1%} of the no-auth server's {per_request_us:.0f} µs of CPU per "
        "request. The control row (a second no-auth server) shows the run-to-run noise of this machine."
    )


if __name__ == "__main__":
    main()
