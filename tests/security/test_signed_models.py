"""Signed models: Ed25519 signatures over the sha256, checked at push and at every load.

One server requires signatures and trusts one key. Before it starts, its registry is given
versions the way an older, permissive server would have stored them (through the real intake
with the default policy): unsigned, signed by an unknown key, and with a signature that does not
match the bytes. It must refuse to load each of them, naming why, and refuse pushes of the same.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ferryman.client import Client
from ferryman.errors import Forbidden
from ferryman.registry.intake import IntakeRequest, ModelIntake
from ferryman.security.signing import create_key_pair, load_private_key, parse_signature, sign_sha256
from tests.conftest import ServerProcess
from tests.security.conftest import IRIS_ROW, open_registry, registry_state, run_cli


@dataclass(frozen=True)
class Keys:
    """The trusted key pair and an untrusted one."""

    private: Path
    public: Path
    key_id: str
    other_private: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("signing-keys")
    public, key_id = create_key_pair(directory / "trusted.pem")
    create_key_pair(directory / "other.pem")
    return Keys(directory / "trusted.pem", public, key_id, directory / "other.pem")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _signature(key: Path, sha256: str) -> str:
    return sign_sha256(load_private_key(key), sha256)


def _register_earlier(home: Path, name: str, artifact: Path, signature: str | None) -> None:
    """Store a version as a server without signature rules would have (the real intake, default policy)."""
    registry = open_registry(home)
    intake = ModelIntake(registry, registry.artifacts, 1 << 30)
    intake.register(registry.artifacts.stage_path(artifact), IntakeRequest(name=name, artifact_signature=signature))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path, keys: Keys
) -> Iterator[tuple[ServerProcess, Path]]:
    """A server with require_signed_models and the trusted key; its registry holds older versions."""
    home = tmp_path_factory.mktemp("signed") / "home"
    sha = _sha256(iris_joblib)
    _register_earlier(home, "unsigned", iris_joblib, None)
    _register_earlier(home, "unknown-key", iris_joblib, _signature(keys.other_private, sha))
    # A genuine signature by the trusted key, but over other bytes.
    _register_earlier(home, "mismatched", iris_joblib, _signature(keys.private, "0" * 64))
    _register_earlier(home, "good", iris_joblib, _signature(keys.private, sha))
    env = {
        "FERRYMAN_REQUIRE_SIGNED_MODELS": "true",
        "FERRYMAN_SIGNING_PUBLIC_KEYS": f'["{keys.public}"]',
    }
    process = ServerProcess(home, [], env)
    process.wait_ready()
    yield process, home
    process.stop()


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("unsigned", "not signed and this server requires signed models"),
        ("unknown-key", "which is not among signing_public_keys"),
        ("mismatched", "does not verify over the artifact's sha256"),
    ],
)
def test_versions_stored_earlier_without_a_valid_signature_are_not_loaded(
    server: tuple[ServerProcess, Path], model: str, reason: str
) -> None:
    process, _ = server
    with httpx.Client(base_url=process.url, timeout=30) as client:
        answer = client.post(f"/v2/models/{model}/infer", json=IRIS_ROW)
        assert answer.status_code == 500, answer.text
        assert f"model '{model}' version 1 cannot be loaded" in answer.json()["error"]
        assert reason in answer.json()["error"]
        version = client.get(f"/api/v1/models/{model}/versions/1").json()
        assert version["state"] == "failed"
        assert reason in version["state_reason"]
        assert client.get(f"/v2/models/{model}/ready").status_code != 200
    assert reason in process.logs()


def test_a_version_signed_by_a_trusted_key_loads_and_serves(server: tuple[ServerProcess, Path], keys: Keys) -> None:
    process, _ = server
    with httpx.Client(base_url=process.url, timeout=30) as client:
        answer = client.post("/v2/models/good/infer", json=IRIS_ROW)
        assert answer.status_code == 200, answer.text
        version = client.get("/api/v1/models/good/versions/1").json()
    assert version["state"] == "loaded"
    assert version["artifact_signature"].startswith(f"ed25519:{keys.key_id}:")


def test_client_push_with_sign_key_is_verified_stored_and_served(
    server: tuple[ServerProcess, Path], iris_joblib: Path, keys: Keys
) -> None:
    process, _ = server
    with Client(process.url) as client:
        result = client.push(iris_joblib, "client-signed", sign_key=keys.private)
        assert result["created"] is True
        stored = parse_signature(result["version"]["artifact_signature"])
        assert stored.key_id == keys.key_id
        assert client.infer("client-signed", np.array([[5.1, 3.5, 1.4, 0.2]])).outputs["predict"].tolist() == [0]


def test_cli_push_with_sign_is_accepted(server: tuple[ServerProcess, Path], iris_joblib: Path, keys: Keys) -> None:
    process, _ = server
    done = run_cli("push", str(iris_joblib), "--name", "cli-signed", "--sign", str(keys.private), "--url", process.url)
    assert done.returncode == 0, done.stderr
    assert "Registered" in done.stdout


def _push(process: ServerProcess, name: str, artifact: bytes, signature: object | None) -> httpx.Response:
    data = {} if signature is None else {"signature": signature}
    files = {"artifact": ("model.joblib", artifact, "application/octet-stream")}
    return httpx.post(f"{process.url}/api/v1/models/{name}/versions", data=data, files=files, timeout=60)


def test_refused_pushes_leave_the_registry_unchanged(
    server: tuple[ServerProcess, Path], iris_joblib: Path, keys: Keys
) -> None:
    process, home = server
    original = iris_joblib.read_bytes()
    sha = hashlib.sha256(original).hexdigest()
    good = _signature(keys.private, sha)
    tampered_bytes = original + b"\0"  # still the same model to joblib, but other bytes
    raw = bytearray(parse_signature(good).value)
    raw[0] ^= 1
    flipped = f"ed25519:{keys.key_id}:{base64.b64encode(bytes(raw)).decode()}"
    before = registry_state(home), _blobs(home)
    cases = [
        (None, original, 403, "not signed and this server requires signed models"),
        ("", original, 403, "not signed and this server requires signed models"),
        (_signature(keys.other_private, sha), original, 403, "not among signing_public_keys"),
        (good, tampered_bytes, 403, "does not verify over the artifact's sha256"),
        (flipped, original, 403, "does not verify over the artifact's sha256"),
        ("ed25519:nothex:abc", original, 400, "field 'signature' is malformed"),
        (f"rsa:{keys.key_id}:" + "A" * 86 + "==", original, 400, "field 'signature' is malformed"),
    ]
    for signature, artifact, status, message in cases:
        answer = _push(process, "refused", artifact, signature)
        assert answer.status_code == status, (signature, answer.text)
        assert message in answer.json()["error"], (signature, answer.text)
    as_file = httpx.post(
        f"{process.url}/api/v1/models/refused/versions",
        files={"artifact": ("model.joblib", original), "signature": ("sig.txt", good.encode())},
        timeout=60,
    )
    assert as_file.status_code == 400
    assert "field 'signature' must be text" in as_file.json()["error"]
    assert (registry_state(home), _blobs(home)) == before


def _blobs(home: Path) -> list[str]:
    """Every stored artifact and every upload still in staging."""
    return sorted(str(path.relative_to(home)) for path in (home / "artifacts").rglob("*") if path.is_file())


def test_client_push_signed_with_an_untrusted_key_is_forbidden(
    server: tuple[ServerProcess, Path], iris_joblib: Path, keys: Keys
) -> None:
    process, home = server
    before = registry_state(home)
    with Client(process.url) as client, pytest.raises(Forbidden, match="not among signing_public_keys"):
        client.push(iris_joblib, "untrusted", sign_key=keys.other_private)
    assert registry_state(home) == before


def test_signing_key_create_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    out = tmp_path / "release.pem"
    done = run_cli("signing-key", "create", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    public = tmp_path / "release.pub.pem"
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert isinstance(load_private_key(out), Ed25519PrivateKey)
    assert f'"key_id": "{_key_id_of(out)}"' in done.stdout
    again = run_cli("signing-key", "create", "--out", str(out))
    assert again.returncode == 1
    assert "already exists" in again.stderr


def _key_id_of(private: Path) -> str:
    return parse_signature(_signature(private, "0" * 64)).key_id
