"""Secure defaults: open only on loopback with nothing configured; refuse to expose an unauthenticated server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerFactory, free_port, wait_for
from tests.security.conftest import IRIS_ROW, auth, make_key, run_cli


def test_loopback_without_credentials_is_open_with_a_warning(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(home=tmp_path / "home")
    assert httpx.get(f"{server.url}/api/v1/models").status_code == 200
    assert "authentication is OFF" in server.logs()


def test_the_first_key_turns_authentication_on_at_once(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(home=tmp_path / "home")
    created = httpx.post(f"{server.url}/api/v1/keys", json={"role": "admin", "name": "first"})
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    key = created.json()["key"]
    assert httpx.get(f"{server.url}/api/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/api/v1/models", headers=auth(key)).status_code == 200
    # Revoking every key does not open the server again.
    assert httpx.delete(f"{server.url}/api/v1/keys/{key.split('_')[1]}", headers=auth(key)).status_code == 200
    assert httpx.get(f"{server.url}/api/v1/models").status_code == 401


def test_a_non_loopback_address_without_an_admin_key_refuses_to_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_key(home, "deployer")  # not an admin: still refused
    command = [sys.executable, "-m", "ferryman", "serve", "--host", "0.0.0.0", "--port", str(free_port())]
    result = subprocess.run([*command, "--home", str(home)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert "refusing to serve on 0.0.0.0" in result.stderr
    assert "ferryman keys create --role admin" in result.stderr


def test_insecure_serves_a_non_loopback_address_openly(server_factory: ServerFactory, tmp_path: Path) -> None:
    server = server_factory(home=tmp_path / "home", args=["--host", "0.0.0.0", "--insecure"])
    assert httpx.get(f"{server.url}/api/v1/models").status_code == 200
    assert "authentication is OFF on 0.0.0.0" in server.logs()


def test_bootstrap_an_admin_key_then_serve_every_address(
    server_factory: ServerFactory, tmp_path: Path, iris_joblib: Path
) -> None:
    home = tmp_path / "home"
    created = run_cli("keys", "create", "--role", "admin", "--name", "bootstrap", "--home", str(home))
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("fm_") and created.stdout.count("fm_") == 1
    assert "this once" in created.stderr
    server = server_factory(home=home, args=[str(iris_joblib), "--host", "0.0.0.0", "--workers", "2"])
    predictor = make_key(home, "predictor")
    wait_for(
        lambda: (
            httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS_ROW, headers=auth(predictor)).status_code == 200
        ),
        "the predictor key on the workers",
        deadline_s=5,
    )
    # New connections spread over both workers: each one enforces the same rules.
    for _ in range(12):
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/api/v1/models").status_code == 401
            assert client.get("/api/v1/models", headers=auth(key)).status_code == 200
            assert client.post("/v2/models/iris/infer", json=IRIS_ROW).status_code == 401
    run_cli("keys", "revoke", predictor, "--home", str(home))

    def refused_everywhere() -> bool:
        statuses = set()
        for _ in range(8):
            with httpx.Client(base_url=server.url) as client:
                statuses.add(client.post("/v2/models/iris/infer", json=IRIS_ROW, headers=auth(predictor)).status_code)
        return statuses == {401}

    wait_for(refused_everywhere, "every worker to refuse the revoked key", deadline_s=3)


def test_metrics_follow_the_metrics_auth_setting(server_factory: ServerFactory, tmp_path: Path) -> None:
    guarded = server_factory(home=tmp_path / "guarded")
    make_key(guarded.home, "viewer")
    wait_for(lambda: httpx.get(f"{guarded.url}/metrics").status_code == 401, "credentials on /metrics", deadline_s=5)
    home = tmp_path / "open-metrics"
    make_key(home, "admin")
    scraped = server_factory(home=home, env={"FERRYMAN_METRICS_AUTH": "false"})
    assert httpx.get(f"{scraped.url}/metrics").status_code == 200
    assert httpx.get(f"{scraped.url}/api/v1/models").status_code == 401
