"""``make bench``: Ferryman against TorchServe, MLServer, KServe and bare ASGI apps, side by side, in one run.

Sequence: peer venvs (``bench/peers/setup.py``, cached under ``$BENCH_DIR``) → models → the
in-process ceiling → ``ferryman serve`` start-up with the two demo models → every server, one at a
time: start on a free 127.0.0.1 port, wait for the first correct answer, warm up (wrk -c32), then
``wrk -t1 --latency`` at c1, c32 (twice) and c128, then open-loop at twice the peak of those four
points (the overload point), check the answer again, stop (SIGTERM, then
SIGKILL, by process group and by PID) and verify the ports are free. Results go to
``$BENCH_DIR/results/<stamp>/`` (JSON + CSV); ``bench/report.py`` renders them into
``docs/benchmarks.md`` (full runs) or prints them (``--quick``).

Usage: python -m bench.run [--quick] [--seconds S] [--workloads w1 w2 w3] [--only SERVER ...]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import inproc, report, servers
from bench import wrk as wrk_runner
from bench.models import WORKLOADS, Request, build, label_of, request
from bench.peers.setup import bench_dir, setup

POINTS = (("c1", 1), ("c32 A", 32), ("c32 B", 32), ("c128", 128))
#: The open-loop overload point: OVERLOAD_FACTOR times the closed-loop peak, over a pool of connections.
OVERLOAD_POINT = report.OVERLOAD
OVERLOAD_FACTOR = 2.0
OVERLOAD_CONNECTIONS = 256
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- processes


def _proc_table() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, pgid)} for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def process_tree(root: int) -> set[int]:
    """The root, its descendants and every process of its process group (the server's own session)."""
    table = _proc_table()
    tree = {root} | {pid for pid, (_, pgid) in table.items() if pgid == root}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in table.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return {pid for pid in tree if pid in table}


def rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu_seconds(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def wait_for_quiet(limit: float, threshold: float = 0.5) -> float:
    """Wait (at most ``limit`` s) for a 1 s window using under ``threshold`` cores; return the last window's."""
    deadline = time.monotonic() + limit
    while True:
        before = machine_busy_seconds()
        time.sleep(1)
        busy = machine_busy_seconds() - before
        if busy < threshold or time.monotonic() >= deadline:
            return busy


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Server:
    """A started server: its process group, log, and the ports it must release."""

    def __init__(self, launch: servers.Launch, port: int, run_dir: Path) -> None:
        self.port = port
        self.ports = (port, *launch.extra_ports)
        self.log = run_dir / "server.log"
        env = {**os.environ, **launch.env}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                launch.argv, env=env, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.seen: set[int] = {self.process.pid}

    def tree(self) -> set[int]:
        current = process_tree(self.process.pid) if self.process.poll() is None else set()
        self.seen |= current
        return current

    def log_tail(self, lines: int = 12) -> str:
        text = self.log.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> list[str]:
        """SIGTERM the group, SIGKILL after 20 s, then SIGKILL by PID anything of the tree still alive."""
        notes = []
        self.tree()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(pid) for pid in self.seen):
            self.process.poll()
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in sorted(self.seen):
            if _alive(pid):
                notes.append(f"killed leftover pid {pid} ({_comm(pid)})")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(port_free(p) for p in self.ports):
            time.sleep(0.2)
        busy = [p for p in self.ports if not port_free(p)]
        if busy:
            notes.append(f"ports still open after stop: {busy}")
        return notes


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# ---------------------------------------------------------------- requests


def ask(base_url: str, req: Request, timeout: float = 10) -> int:
    """Send the request once; return the predicted label (raises on any error)."""
    message = urllib.request.Request(base_url + req.path, data=req.body, headers=req.headers, method="POST")
    with urllib.request.urlopen(message, timeout=timeout) as response:
        body = response.read()
        headers = {name.lower(): value for name, value in response.headers.items()}
    return label_of(body, headers)


def wait_ready(server: Server, base_url: str, req: Request, expected: int, limit: float = 180) -> float:
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < limit:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            label = ask(base_url, req, timeout=5)
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
            continue
        if label != expected:
            raise RuntimeError(f"wrong answer: label {label}, expected {expected}")
        return time.monotonic() - started
    raise RuntimeError(f"not ready after {limit:.0f} s (last: {last}):\n{server.log_tail()}")


# ---------------------------------------------------------------- one target


def measure_target(
    target: servers.Target,
    models_dir: Path,
    meta: dict[str, Any],
    out: Path,
    seconds: float,
    warmup: float,
    quiet_wait: float,
) -> dict[str, Any]:
    label = f"{target.server} [{target.mode}] {target.workload}"
    slug = "".join(c if c.isalnum() else "-" for c in f"{target.server}-{target.mode}-{target.workload}").strip("-")
    run_dir = out / "runs" / slug
    run_dir.mkdir(parents=True)
    expected = int(meta[target.workload]["expected"])
    req = request(target.kind, target.workload, list(meta[target.workload]["row"]))
    script = run_dir / "request.lua"
    script.write_text(wrk_runner.lua_script(req))
    result: dict[str, Any] = {
        "server": target.server,
        "key": target.key,
        "mode": target.mode,
        "workload": target.workload,
        "kind": target.kind,
        "note": target.note,
        "points": {},
        "errors": [],
        "notes": [],
    }
    result["busy_cores_before"] = wait_for_quiet(quiet_wait)
    print(f"== {label} (machine busy before: {result['busy_cores_before']:.2f} cores)", flush=True)
    port = servers.free_ports(1)[0]
    try:
        launch = target.prepare(run_dir, models_dir, port)
    except Exception as exc:
        result["errors"].append(f"could not prepare: {type(exc).__name__}: {exc}")
        print(f"   FAILED: {result['errors'][-1]}", flush=True)
        return result
    base_url = f"http://127.0.0.1:{port}"
    server = Server(launch, port, run_dir)
    try:
        result["ready_s"] = wait_ready(server, base_url, req, expected)
        time.sleep(1)
        result["idle_rss_mb"] = rss_mb(server.tree())
        wrk_runner.run(base_url, req, script, 32, warmup)

        def measure(name: str, connections: int, rate: float | None = None) -> dict[str, Any]:
            pids = server.tree()
            cpu_before, busy_before = cpu_seconds(pids), machine_busy_seconds()
            children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            point_script = script if rate is None else run_dir / f"request-{name.replace(' ', '-')}.lua"
            point = wrk_runner.run(base_url, req, point_script, connections, seconds, rate)
            children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            pids = server.tree()
            point["rss_mb"] = rss_mb(pids)
            elapsed = point["seconds"]
            server_cpu = cpu_seconds(pids) - cpu_before
            wrk_cpu = (children_after.ru_utime + children_after.ru_stime) - (
                children_before.ru_utime + children_before.ru_stime
            )
            point["server_cores"] = server_cpu / elapsed
            point["wrk_cores"] = wrk_cpu / elapsed
            point["other_cores"] = max(0.0, (machine_busy_seconds() - busy_before - server_cpu - wrk_cpu) / elapsed)
            if rate is not None:
                point["offered_rps"] = rate
            result["points"][name] = point
            print(
                f"   {name:6} {point['rps']:8.0f} req/s  p50 {point['p50_ms']:7.2f} ms  p99 {point['p99_ms']:8.2f} ms"
                f"  non-2xx {point['non2xx']}  socket errors {point['socket_errors']}  RSS {point['rss_mb']:.0f} MB"
                f"  cores: server {point['server_cores']:.2f} wrk {point['wrk_cores']:.2f}"
                f" other {point['other_cores']:.2f}",
                flush=True,
            )
            return point

        for name, connections in POINTS:
            measure(name, connections)
        # Overload proper: twice the peak of the closed-loop points, offered on a fixed schedule
        # (open loop), so that shedding can keep the admitted requests fast (bench/wrk.py).
        peak = max(point["rps"] for point in result["points"].values())
        measure(OVERLOAD_POINT, OVERLOAD_CONNECTIONS, OVERLOAD_FACTOR * peak)
        # A server may still be working off the overload's backlog (TorchServe answers 503 for a
        # while): give it up to 30 s to answer again before calling the check failed.
        wait_ready(server, base_url, req, expected, limit=30)  # raises on a wrong answer, or none in 30 s
        after = ask(base_url, req)
        if after != expected:
            result["errors"].append(f"wrong answer after the load: {after}, expected {expected}")
        result["checked"] = "before and after the load"
    except Exception as exc:
        result["errors"].append(f"{type(exc).__name__}: {exc}")
        print(f"   FAILED: {result['errors'][-1]}", flush=True)
    finally:
        result["notes"] += server.stop()
        if result["notes"]:
            print(f"   notes: {result['notes']}", flush=True)
    return result


# ---------------------------------------------------------------- ferryman start-up


def demo_startup(out: Path, runs: int) -> list[dict[str, Any]]:
    """``ferryman serve iris.joblib breast-cancer.onnx``: time to the first ready 200, then idle RSS."""
    demo = bench_dir() / "demo-models"
    subprocess.run(
        [sys.executable, str(servers.REPO / "examples" / "demo" / "train.py"), "--out", str(demo)],
        check=True,
        capture_output=True,
    )
    home = out / "demo-home"
    results = []
    for attempt in range(runs):
        port = servers.free_ports(1)[0]
        run_dir = out / "runs" / f"demo-startup-{attempt + 1}"
        run_dir.mkdir(parents=True)
        argv = [
            str(servers.FERRYMAN),
            "serve",
            "--port",
            str(port),
            "--grpc-port",
            "0",
            "--home",
            str(home),
            "--log-level",
            "warning",
        ]
        argv += [str(demo / "iris.joblib"), str(demo / "breast-cancer.onnx")]
        started = time.monotonic()
        server = Server(servers.Launch(argv), port, run_dir)
        ready = None
        try:
            while time.monotonic() - started < 60 and server.process.poll() is None:
                try:
                    url = f"http://127.0.0.1:{port}/v2/health/ready"
                    with urllib.request.urlopen(url, timeout=2) as response:
                        if response.status == 200:
                            ready = time.monotonic() - started
                            break
                except (OSError, urllib.error.URLError):
                    time.sleep(0.02)
            time.sleep(2)
            rss = rss_mb(server.tree())
        finally:
            notes = server.stop()
        entry = {
            "run": attempt + 1,
            "registry": "empty home" if attempt == 0 else "home from run 1",
            "ready_s": ready,
            "idle_rss_mb": rss,
            "notes": notes,
        }
        if ready is None:
            entry["error"] = server.log_tail()
        results.append(entry)
        print(f"   demo start-up {entry['registry']}: ready {ready} s, idle RSS {rss:.0f} MB", flush=True)
    return results


# ---------------------------------------------------------------- main


def write_csv(path: Path, results: list[dict[str, Any]]) -> None:
    columns = ["server", "mode", "workload", "point", "connections", "rps", "ok_rps", "p50_ms", "p90_ms", "p99_ms"]
    columns += ["admitted_p99_ms", "non2xx", "socket_errors", "timeouts", "rss_mb", "server_cores", "wrk_cores"]
    columns += ["other_cores", "ready_s", "idle_rss_mb", "errors"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            base = {k: result.get(k) for k in ("server", "mode", "workload", "ready_s", "idle_rss_mb")}
            base["errors"] = " | ".join(result["errors"])
            if not result["points"]:
                writer.writerow(base)
            for name, point in result["points"].items():
                writer.writerow({**base, **point, "point": name})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="harness smoke check: W1, few servers, short points")
    parser.add_argument("--seconds", type=float, help="seconds per wrk point (default 8, quick 3)")
    parser.add_argument("--warmup", type=float, help="seconds of wrk -c32 warm-up (default 5, quick 2)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, help="default: all (quick: w1)")
    parser.add_argument("--only", nargs="+", help="run only these servers (substring of the name, e.g. ferryman)")
    parser.add_argument("--all-modes", action="store_true", help="also the peers' default modes")
    parser.add_argument("--ferryman-mode", action="append", default=[], metavar="NAME=JSON", help="extra mode")
    parser.add_argument("--quiet-wait", type=float, default=15, help="max s to wait for an idle machine per server")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    if not wrk_runner.available():
        sys.exit("wrk is not installed: apt-get install wrk")
    seconds = args.seconds or (3 if args.quick else 8)
    warmup = args.warmup or (2 if args.quick else 5)
    workloads = args.workloads or (["w1"] if args.quick else list(WORKLOADS))
    extra = {}
    for spec in args.ferryman_mode:
        name, _, raw = spec.partition("=")
        extra[name] = json.loads(raw)
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if args.quick else "")
    out = bench_dir() / "results" / stamp
    out.mkdir(parents=True)
    print(f"results in {out}", flush=True)

    plan = servers.targets(workloads, args.quick, args.all_modes, extra)
    if args.only:
        plan = [t for t in plan if any(o.lower() in t.server.lower() for o in args.only)]
    peers = sorted({t.key for t in plan} - {"ferryman"})
    setup_status = setup(peers) if peers else {}
    meta = build(bench_dir() / "models")
    models_dir = bench_dir() / "models"

    print("== in-process model calls", flush=True)
    in_process = inproc.measure(models_dir, workloads, 1 if args.quick else 3)
    print("== ferryman serve with the two demo models", flush=True)
    startup = demo_startup(out, 1 if args.quick else 3)

    results: list[dict[str, Any]] = []
    document: dict[str, Any] = {
        "stamp": stamp,
        "quick": args.quick,
        "seconds": seconds,
        "warmup": warmup,
        "workloads": workloads,
        "machine": report.machine(),
        "ferryman_git": report.git_state(servers.REPO),
        "versions": report.versions(bench_dir(), peers),
        "setup": setup_status,
        "models": {w: {k: v for k, v in meta[w].items() if k != "row"} for w in workloads},
        "in_process": in_process,
        "startup": startup,
        "results": results,
    }
    for target in plan:
        if target.key != "ferryman" and setup_status.get(target.key, "ok") != "ok":
            results.append(
                {
                    "server": target.server,
                    "key": target.key,
                    "mode": target.mode,
                    "workload": target.workload,
                    "points": {},
                    "errors": [f"not installed: {setup_status[target.key]}"],
                    "notes": [],
                }
            )
            continue
        results.append(measure_target(target, models_dir, meta, out, seconds, warmup, args.quiet_wait))
        (out / "results.json").write_text(json.dumps(document, indent=1))
    document["wall_s"] = time.monotonic() - started
    (out / "results.json").write_text(json.dumps(document, indent=1))
    write_csv(out / "results.csv", results)
    latest = bench_dir() / "results" / ("latest-quick" if args.quick else "latest")
    latest.unlink(missing_ok=True)
    latest.symlink_to(out)
    markdown = report.render(document)
    (out / "report.md").write_text(markdown)
    if args.quick or args.no_docs:
        print(markdown)
    else:
        report.write_docs(servers.REPO / "docs" / "benchmarks.md", markdown)
        print(f"wrote docs/benchmarks.md ({document['wall_s'] / 60:.1f} min)")
    print(f"results: {out}/results.json, {out}/results.csv; wall time {document['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
