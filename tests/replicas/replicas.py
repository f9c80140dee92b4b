"""Replicas on one database for the tests in this folder: ``ferryman serve`` processes and nginx in front.

Each replica is a separate server process with its own ``FERRYMAN_HOME`` but the same registry
database and the same artifact folder, like pods of one Deployment.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, free_port, wait_for

__all__ = ["IRIS_ROW", "Nginx", "infer_status", "replica_env", "start_replica"]

IRIS_ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


def replica_env(database_url: str, artifacts: Path, **extra: str) -> dict[str, str]:
    """The environment of a replica on ``database_url`` sharing ``artifacts``."""
    return {
        "FERRYMAN_DATABASE_URL": database_url,
        "FERRYMAN_ARTIFACTS_DIR": str(artifacts),
        "FERRYMAN_GRPC_PORT": "-1",
        "FERRYMAN_MONITORING_ENABLED": "false",
        **extra,
    }


def start_replica(home: Path, env: dict[str, str], *, wait: bool = True) -> ServerProcess:
    """One ``ferryman serve`` replica with its own home."""
    server = ServerProcess(home, [], env)
    if wait:
        server.wait_ready()
    return server


def infer_status(url: str, model: str, *, version: int | None = None, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of one V2 inference (0 when the server cannot be reached)."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version is not None else "") + "/infer"
    try:
        return httpx.post(url + path, json=IRIS_ROW, headers=headers or {}, timeout=5.0).status_code
    except httpx.TransportError:
        return 0


class Nginx:
    """nginx in the foreground, with a generated config, in front of ``upstreams`` (host:port)."""

    def __init__(self, root: Path, upstreams: list[str]) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
        if binary is None:
            pytest.fail("nginx not found: run `make sysdeps` (installs the Debian `nginx` package)", pytrace=False)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / sub).mkdir(exist_ok=True)
        servers = "\n".join(f"        server {u} max_fails=0;" for u in upstreams)
        # Every method may be retried on the next replica: the test's requests are idempotent
        # inferences, and a replica that is killed mid-request must not turn into a client error.
        config = f"""
worker_processes 1;
daemon off;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root / "body"};
    proxy_temp_path {root / "proxy"};
    fastcgi_temp_path {root / "fastcgi"};
    uwsgi_temp_path {root / "uwsgi"};
    scgi_temp_path {root / "scgi"};
    upstream ferryman {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://ferryman;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 10s;
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""
        self.config = root / "nginx.conf"
        self.config.write_text(config)
        self._log = (root / "stdout.log").open("wb")
        self.process = subprocess.Popen(
            [binary, "-c", str(self.config), "-p", str(root), "-e", str(root / "error.log")],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._answers, "nginx to listen", deadline_s=10)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited with {self.process.returncode}")
        try:
            httpx.get(self.url + "/v2/health/live", timeout=1.0)
        except httpx.TransportError:
            return False
        return True

    def stop(self) -> None:
        """Stop nginx (QUIT, then KILL) and close its log."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def elapsed_since(start: float) -> float:
    """Seconds since ``start`` (a ``time.monotonic()`` reading)."""
    return time.monotonic() - start
