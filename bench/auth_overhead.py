"""What authentication costs: the server's CPU seconds per 10,000 inference requests, with and without it.

``python -m bench.auth_overhead [--runs 30] [--seconds 4] [--connections 32] [--no-pin]
[--placement executor|event_loop]``

One registry holding W1 (logistic regression on 20 features) and **one** ``ferryman serve`` process
for the whole run, whose authentication is switched on and off between measurements the way an
operator would: authentication is off while the registry has no key (every caller is the local
anonymous admin) and on as soon as one exists. So each run:

- ``no auth``: every key removed from the registry database (revoking is not enough: once a key has
  existed, credentials stay required); the bench waits until the server answers a request without
  credentials, then measures with plain requests;
- ``API key``: an admin key and a ``predictor`` key limited to ``w1`` are created in the database;
  the bench waits until the server refuses a request without credentials (401), then measures with
  every request carrying the predictor key as ``Authorization: Bearer`` — the full check: header
  scan, key format, SHA-256, the key table lookup, the role and model scope, the pinned-version
  header scan that a predictor (without traffic rights) needs, and the keys' last-use bookkeeping;
- ``no auth (control)``: keys removed again and a second plain measurement (``--no-control`` leaves
  it out), to show how far two identical measurements differ on this machine.

The conditions alternate (ABC, CBA, …); each is warmed up and driven with wrk (one-row JSON
requests, ``--connections``) for ``--seconds`` while the server's CPU time is read from
``/proc/<pid>/stat`` (utime + stime, all threads). The server is pinned to CPU 0 and wrk to CPU 1
(``--no-pin``: not), which takes most of the scheduling noise out of CPU time on a 2-core machine.
One process for everything matters: two ``ferryman serve`` processes started the same way differ by
up to ~15-20% in CPU per request on this small shared machine (thread placement, memory layout), a
bias that an earlier version of this bench (one fresh process per measurement, a registry folder per
configuration) could not tell apart from a 5% effect. The figures are the median over runs of CPU
seconds per 10,000 requests and the median of the per-run ratios. The check itself is also timed
in-process (``Guard.admit_inference`` with the same headers), as a share of the no-auth CPU per
request. Prints a Markdown table.
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
from sqlalchemy import Engine, delete, update

from bench import wrk
from bench.ferryman_process import cpu_seconds, start_ferryman
from bench.models import Request, artifact, build, request
from bench.peers.setup import bench_dir
from bench.servers import free_ports
from ferryman.config import Settings
from ferryman.protocols.auth import Guard
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.schema import api_keys, registry_state
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def _registry(home: Path) -> tuple[Engine, RegistryService]:
    engine = create_registry_engine(f"sqlite:///{(home / 'registry.db').resolve()}")
    upgrade_to_head(engine)
    return engine, RegistryService(engine, ArtifactStore(home / "artifacts"))


def _create_keys(registry: RegistryService) -> str:
    """An admin key (so the server is locked) and a predictor key limited to w1; returns the predictor key."""
    registry.create_key("admin", name="bench-admin")
    _, predictor = registry.create_key("predictor", ["w1"], name="bench-predictor")
    return predictor


def _remove_all_keys(engine: Engine) -> None:
    """Delete every key row and bump the change counter, so the server reloads an empty key table.

    Only a bench on its own scratch registry does this: revoking keys never turns authentication
    off (once a key has existed, credentials stay required), so there is no product path back.
    """
    with engine.begin() as conn:
        conn.execute(delete(api_keys))
        conn.execute(update(registry_state).values(revision=registry_state.c.revision + 1))


def _wait_for_mode(base: str, path: str, body: bytes, headers: dict[str, str], status: int) -> None:
    """Poll (with a deadline) until a request without credentials gets ``status``: the server saw the key change."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.post(base + path, content=body, headers=headers, timeout=5).status_code == status:
            return
        time.sleep(0.1)  # polling the server's key table reload with a deadline
    raise RuntimeError(f"the server did not switch to answering {status} within 30 s")


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
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-control", action="store_true", help="Leave out the second no-auth measurement.")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="Do not pin the server to CPU 0 and wrk (and this script) to CPU 1 (pinning: less scheduling noise).",
    )
    parser.add_argument(
        "--placement", choices=["executor", "event_loop"], default="executor", help="Where W1's batches run."
    )
    args = parser.parse_args()

    models_dir = bench_dir() / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    meta = build(models_dir)
    plain = request("ferryman-json", "w1", list(meta["w1"]["row"]))  # type: ignore[call-overload]
    names = ["no auth", "API key"] if args.no_control else ["no auth", "API key", "no auth (control)"]
    per_10k: dict[str, list[float]] = {name: [] for name in names}
    rates: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="ferryman-auth-") as scratch:
        home = Path(scratch) / "home"
        engine, registry = _registry(home)
        scripts = {name: Path(scratch) / f"{index}.lua" for index, name in enumerate(names)}
        (port,) = free_ports(1)
        base = f"http://127.0.0.1:{port}"
        if args.pin:
            os.sched_setaffinity(0, {1})
        server = start_ferryman(home, port)
        if args.pin:  # every thread of the server, and those it starts later inherit it
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(server.pid)], check=True, capture_output=True)
        predictor = ""
        try:
            _push(base, artifact(models_dir, "w1"), {}, args.placement)
            for run in range(args.runs):
                order = names if run % 2 == 0 else names[::-1]
                for name in order:
                    if name == "API key":
                        predictor = _create_keys(registry)
                        _wait_for_mode(base, plain.path, plain.body, plain.headers, 401)
                        sent = Request(
                            plain.path, plain.body, {**plain.headers, "Authorization": f"Bearer {predictor}"}
                        )
                    else:
                        _remove_all_keys(engine)
                        _wait_for_mode(base, plain.path, plain.body, plain.headers, 200)
                        sent = plain
                    scripts[name].unlink(missing_ok=True)  # the key changes from run to run
                    wrk.run(base, sent, scripts[name], args.connections, 2)  # warm-up
                    before = cpu_seconds(server.pid)
                    figures = wrk.run(base, sent, scripts[name], args.connections, args.seconds)
                    spent = cpu_seconds(server.pid) - before
                    if figures["non2xx"]:
                        raise RuntimeError(f"{name}: {figures['non2xx']} requests were refused")
                    per_10k[name].append(spent / figures["requests"] * 10_000)
                    rates[name].append(figures["rps"])
            if not registry.list_keys(include_revoked=False):
                predictor = _create_keys(registry)
        finally:
            _stop(server)
        check_us = _check_cost(home, predictor, {**plain.headers, "Authorization": f"Bearer {predictor}"})
    print(json.dumps({"per_10k": per_10k, "rps": rates, "check_us": check_us}, indent=1))
    print()
    base_cpu = statistics.median(per_10k["no auth"])
    print(
        f"W1 (batches in the {args.placement.replace('_', ' ')}), wrk c{args.connections}, {args.runs} runs of "
        f"{args.seconds:g} s per condition{', server pinned to CPU 0 and wrk to CPU 1' if args.pin else ''}, "
        f"one server process throughout (authentication switched by creating "
        "and removing keys in its registry), conditions in alternating order."
    )
    print()
    print(
        "| condition | CPU s per 10,000 requests (median) | runs | req/s (median) "
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
    if not args.no_control:
        # Each run measured no-auth twice (before and after the keyed measurement, or the reverse):
        # their mean brackets the keyed one in time, which cancels a drift within the run.
        pooled = [
            keyed / ((open_ + control) / 2)
            for open_, keyed, control in zip(
                per_10k["no auth"], per_10k["API key"], per_10k["no auth (control)"], strict=True
            )
        ]
        print()
        print(
            f"API key vs the mean of the run's two no-auth measurements (median over runs): "
            f"**{statistics.median(pooled) - 1:+.1%}** (runs: {', '.join(f'{r - 1:+.1%}' for r in pooled)})."
        )
    per_request_us = base_cpu / 10_000 * 1e6
    print()
    print(
        f"The check itself, timed in-process (Guard.admit_inference, predictor key, same headers): {check_us:.1f} µs "
        f"per request = {check_us / per_request_us:.1%} of the no-auth CPU per request ({per_request_us:.0f} µs). "
        "The control row (a second no-auth measurement) shows the run-to-run noise of this machine."
    )


if __name__ == "__main__":
    main()
