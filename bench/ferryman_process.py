"""A ``ferryman serve`` process for the overhead benchmarks, and a process's CPU time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["FERRYMAN", "cpu_seconds", "start_ferryman"]

FERRYMAN = Path(sys.executable).parent / "ferryman"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_ferryman(home: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``ferryman serve`` on 127.0.0.1:``port`` (gRPC on a free port) and wait until it is ready."""
    argv = [str(FERRYMAN), "serve", "--port", str(port), "--grpc-port", "0", "--home", str(home)]
    argv += ["--log-level", "warning"]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.05)  # polling for readiness with a deadline
    process.kill()
    raise RuntimeError("ferryman did not become ready")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)
