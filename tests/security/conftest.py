"""Fixtures for the security suite: registries with keys, certificates made at test time, tokens, TLS servers."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from tests.conftest import STARTUP_DEADLINE_S, ServerProcess

ISSUER = "https://issuer.test"
AUDIENCE = "ferryman-tests"


def open_registry(home: Path) -> RegistryService:
    """The registry under ``home``, opened in this process (as ``ferryman keys --home`` does)."""
    home.mkdir(parents=True, exist_ok=True)
    engine = create_registry_engine(f"sqlite:///{(home / 'registry.db').resolve()}")
    upgrade_to_head(engine)
    return RegistryService(engine, ArtifactStore(home / "artifacts"))


def make_key(
    home: Path, role: str, models: list[str] | None = None, expires_in: timedelta | None = None, name: str = ""
) -> str:
    """Create a key in ``home``'s registry; returns its plaintext."""
    _, plaintext = open_registry(home).create_key(role, models, expires_in=expires_in, name=name)
    return plaintext


def registry_state(home: Path) -> tuple[Any, ...]:
    """Everything a refused write must leave alone: revision, models, versions, aliases, policies, keys."""
    registry = open_registry(home)
    models = []
    for model in registry.list_models():
        versions = [(v.version, v.sha256) for v in registry.list_versions(model.name)]
        policy = registry.get_traffic_policy(model.name)
        models.append((model.name, versions, registry.aliases(model.name), policy))
    keys = [(k.key_id, k.revoked_at, k.expires_at) for k in registry.list_keys()]
    return registry.revision(), models, keys


def auth(key: str) -> dict[str, str]:
    """The bearer header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


def copy_model(source: Path, directory: Path, name: str) -> Path:
    """``source`` copied as ``<name><suffix>`` (a server names the model after the file)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{name}{source.suffix}"
    shutil.copyfile(source, target)
    return target


IRIS_ROW = {"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}


# -- certificates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for localhost, client certificates, and one from another CA."""

    directory: Path
    ca: Path
    server_cert: Path
    server_key: Path

    def client(self, name: str) -> tuple[str, str]:
        """``(cert, key)`` paths of a client certificate (``rogue`` is signed by another CA)."""
        return str(self.directory / f"{name}.crt"), str(self.directory / f"{name}.key")


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write(path: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name | None,
    issuer_key: rsa.RSAPrivateKey | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Certificates generated for this test run."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca_cert = _certificate("Ferryman Test CA", ca_key, None, None, ca=True)
    _write(directory / "ca", ca_key, ca_cert)
    server_key = _key()
    _write(
        directory / "server", server_key, _certificate("localhost", server_key, ca_cert.subject, ca_key, server=True)
    )
    for cn in ("alice", "bob", "carol"):
        key = _key()
        _write(directory / cn, key, _certificate(cn, key, ca_cert.subject, ca_key))
    rogue_ca_key = _key()
    rogue_ca = _certificate("Rogue CA", rogue_ca_key, None, None, ca=True)
    rogue_key = _key()
    _write(directory / "rogue", rogue_key, _certificate("alice", rogue_key, rogue_ca.subject, rogue_ca_key))
    return Pki(directory, directory / "ca.crt", directory / "server.crt", directory / "server.key")


# -- tokens ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issuer:
    """An RSA key pair standing in for an OIDC issuer."""

    private_key: rsa.RSAPrivateKey
    public_pem: Path

    def token(self, claims: dict[str, Any] | None = None, *, kid: str | None = None, ttl_s: int = 300) -> str:
        """A token signed by this issuer; ``claims`` override the defaults (an admin, valid for ``ttl_s``)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "alice@example.com",
            "iat": now,
            "exp": now + ttl_s,
            "ferryman_role": "admin",
        }
        payload.update(claims or {})
        headers = {"kid": kid} if kid else None
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers=headers)


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    """A test issuer with its public key in a PEM file."""
    key = _key()
    path = tmp_path_factory.mktemp("issuer") / "issuer.pem"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Issuer(key, path)


@pytest.fixture(scope="session")
def other_issuer(tmp_path_factory: pytest.TempPathFactory) -> Issuer:
    """A second key pair: tokens it signs are forgeries to the server."""
    key = _key()
    path = tmp_path_factory.mktemp("other-issuer") / "other.pem"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return Issuer(key, path)


# -- TLS servers ----------------------------------------------------------------------------------


class TlsServer(ServerProcess):
    """A ``ferryman serve`` over HTTPS; ``client()`` makes httpx clients that trust its CA."""

    def __init__(
        self, home: Path, args: list[str], env: dict[str, str] | None, ca: Path, cert: tuple[str, str] | None
    ) -> None:
        super().__init__(home, args, env)
        self.url = f"https://localhost:{self.port}"
        self.ca = ca
        self._probe_cert = cert

    def client(self, cert: tuple[str, str] | None = None, **kwargs: Any) -> httpx.Client:
        """An httpx client for this server, presenting ``cert`` if given."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            context.load_cert_chain(*cert)
        return httpx.Client(base_url=self.url, verify=context, timeout=5.0, **kwargs)

    def wait_ready(self, deadline_s: float = STARTUP_DEADLINE_S) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with self.client(self._probe_cert) as client:
                    if client.get("/v2/health/ready").status_code == 200:
                        return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # sync-ok: polling interval while waiting on a condition with a deadline
        raise RuntimeError(f"server not ready after {deadline_s}s:\n{self.logs()}")


TlsServerFactory = Callable[..., TlsServer]


@pytest.fixture
def tls_server_factory(tmp_path: Path, pki: Pki) -> Iterator[TlsServerFactory]:
    """Start HTTPS servers (``start(args, env, probe_cert)``); all stop at teardown."""
    started: list[TlsServer] = []

    def start(
        args: list[str] | None = None, env: dict[str, str] | None = None, probe_cert: tuple[str, str] | None = None
    ) -> TlsServer:
        tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
        server = TlsServer(tmp_path / f"tls{len(started)}", [*tls, *(args or [])], env, pki.ca, probe_cert)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``ferryman ARGS`` and capture its output."""
    full_env = {key: value for key, value in os.environ.items() if key != "FERRYMAN_API_KEY"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ferryman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
