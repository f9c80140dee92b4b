"""``ferryman keys`` and ``ferryman audit`` through the API and on the database; the Python client; tampering."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import ferryman
from tests.conftest import ServerProcess, wait_for
from tests.security.conftest import auth, make_key, run_cli


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server with one admin key."""
    home = tmp_path_factory.mktemp("keys") / "home"
    admin = make_key(home, "admin", name="ops")
    process = ServerProcess(home, [])
    process.wait_ready()
    yield process, admin
    process.stop()


def test_keys_through_the_api(server: tuple[ServerProcess, str]) -> None:
    process, admin = server
    api = ["--url", process.url]
    created = run_cli(
        "keys", "create", "--role", "deployer", "--models", "churn,fraud", "--expires", "90d", "--name", "ci", *api,
        env={"FERRYMAN_API_KEY": admin},
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert httpx.get(f"{process.url}/api/v1/models/churn", headers=auth(key)).status_code == 404
    assert httpx.get(f"{process.url}/api/v1/models/other", headers=auth(key)).status_code == 403

    listed = run_cli("keys", "list", "--json", *api, "--api-key", admin)
    assert listed.returncode == 0, listed.stderr
    entries = {entry["name"]: entry for entry in json.loads(listed.stdout)["keys"]}
    assert entries["ci"]["models"] == ["churn", "fraud"] and entries["ci"]["expires_at"]
    assert key not in listed.stdout and key.split("_", 2)[2] not in listed.stdout

    rotated = run_cli("keys", "rotate", entries["ci"]["key_id"], "--json", *api, "--api-key", admin)
    assert rotated.returncode == 0, rotated.stderr
    new_key = json.loads(rotated.stdout)["key"]
    assert httpx.get(f"{process.url}/api/v1/models/churn", headers=auth(key)).status_code == 401
    assert httpx.get(f"{process.url}/api/v1/models/churn", headers=auth(new_key)).status_code == 404

    revoked = run_cli("keys", "revoke", new_key, *api, "--api-key", admin)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{process.url}/api/v1/models/churn", headers=auth(new_key)).status_code == 401

    not_admin = run_cli("keys", "list", *api, "--api-key", make_key(process.home, "viewer"))
    assert not_admin.returncode == 1 and "lacks the 'keys' permission" in not_admin.stderr
    no_key = run_cli("keys", "list", *api)
    assert no_key.returncode == 1 and "credentials required" in no_key.stderr


def test_every_client_command_sends_the_key(server: tuple[ServerProcess, str]) -> None:
    process, admin = server
    with_env = run_cli("models", "--url", process.url, env={"FERRYMAN_API_KEY": admin})
    assert with_env.returncode == 0, with_env.stderr
    with_flag = run_cli("models", "--json", "--url", process.url, "--api-key", admin)
    assert with_flag.returncode == 0 and json.loads(with_flag.stdout) is not None
    without = run_cli("models", "--url", process.url)
    assert without.returncode == 1 and "credentials required" in without.stderr


def test_the_client_takes_its_key_from_the_environment(
    server: tuple[ServerProcess, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    process, admin = server
    monkeypatch.setenv("FERRYMAN_API_KEY", admin)
    with ferryman.Client(process.url) as client:
        created = client.create_key("viewer", models=["iris"], expires="1h", name="from-client")
        assert created["key"].startswith("fm_") and created["role"] == "viewer"
        listed = client.keys(include_revoked=False)
        assert any(entry["name"] == "from-client" for entry in listed)
        assert client.verify_audit()["ok"] is True
    monkeypatch.delenv("FERRYMAN_API_KEY")
    with ferryman.Client(process.url) as client, pytest.raises(ferryman.FerrymanError, match="credentials required"):
        client.models()


def test_audit_log_filters_and_verify(server: tuple[ServerProcess, str]) -> None:
    process, admin = server
    api = ["--url", process.url, "--api-key", admin]
    created = run_cli("keys", "create", "--role", "viewer", "--name", "audited", *api)
    assert created.returncode == 0, created.stderr
    log = run_cli("audit", "log", "--action", "key.*", "--since", "1h", "--json", *api)
    assert log.returncode == 0, log.stderr
    records = json.loads(log.stdout)["records"]
    assert records[0]["action"] == "key.create" and records[0]["principal"] == f"key:{admin.split('_')[1]}"
    assert records[0]["details"]["name"] == "audited"
    table = run_cli("audit", "log", "--principal", f"key:{admin.split('_')[1]}", *api)
    assert table.returncode == 0 and "key.create" in table.stdout
    verified = run_cli("audit", "verify", *api)
    assert verified.returncode == 0, verified.stderr
    assert "Audit chain intact" in verified.stdout


def _tampered(home: Path, statement: str) -> None:
    with sqlite3.connect(home / "registry.db") as db:
        db.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET outcome = 'denied' WHERE seq = 2",
        "UPDATE audit_log SET principal = 'someone-else' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
    ],
)
def test_audit_tampering_is_detected(tmp_path: Path, statement: str) -> None:
    home = tmp_path / "home"
    for role in ("admin", "viewer", "predictor"):
        assert run_cli("keys", "create", "--role", role, "--home", str(home)).returncode == 0
    intact = run_cli("audit", "verify", "--home", str(home))
    assert intact.returncode == 0, intact.stderr
    _tampered(home, statement)
    broken = run_cli("audit", "verify", "--home", str(home))
    assert broken.returncode == 1
    assert "audit chain broken at record" in broken.stderr


def test_tampering_is_reported_by_the_api_too(server: tuple[ServerProcess, str]) -> None:
    process, admin = server
    wait_for(lambda: run_cli("audit", "verify", "--home", str(process.home)).returncode == 0, "an intact chain")
    _tampered(process.home, "UPDATE audit_log SET target = 'nothing/here' WHERE seq = 1")
    result = httpx.get(f"{process.url}/api/v1/audit/verify", headers=auth(admin)).json()
    assert result["ok"] is False and result["first_bad_seq"] == 1
    cli = run_cli("audit", "verify", "--url", process.url, "--api-key", admin)
    assert cli.returncode == 1
