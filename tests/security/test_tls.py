"""TLS and mTLS with certificates generated at test time: modern versions, client certificates mapped to principals."""

from __future__ import annotations

import json
import socket
import ssl

import httpx
import pytest

from tests.conftest import wait_for
from tests.security.conftest import Pki, TlsServer, TlsServerFactory, auth, make_key


def _negotiated(port: int, pki: Pki, maximum: ssl.TLSVersion | None = None) -> str | None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if maximum is not None:
        context.maximum_version = maximum
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


def test_https_with_modern_protocol_versions_only(tls_server_factory: TlsServerFactory, pki: Pki) -> None:
    server = tls_server_factory()
    with server.client() as client:
        assert client.get("/api/v1/models").status_code == 200  # loopback, no keys: open, but encrypted
    assert _negotiated(server.port, pki) == "TLSv1.3"
    assert _negotiated(server.port, pki, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{server.port}/v2/health/live", timeout=5)


@pytest.fixture
def mtls(tls_server_factory: TlsServerFactory, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> TlsServer:
    """An mTLS server: alice's certificate is an admin, bob's a predictor, carol's maps to nobody."""
    principals = {"alice": {"role": "admin"}, "bob": {"role": "predictor", "models": ["iris"]}}
    env = {"FERRYMAN_MTLS_PRINCIPALS": json.dumps(principals)}
    return tls_server_factory(["--tls-client-ca", str(pki.ca)], env, probe_cert=pki.client("carol"))


def test_mtls_requires_a_certificate_from_the_configured_ca(mtls: TlsServer, pki: Pki) -> None:
    server = mtls
    with pytest.raises(httpx.TransportError), server.client() as client:
        client.get("/v2/health/live")
    with pytest.raises(httpx.TransportError), server.client(pki.client("rogue")) as client:
        client.get("/v2/health/live")
    with server.client(pki.client("carol")) as client:
        assert client.get("/v2/health/live").status_code == 200


def test_client_certificate_subjects_map_to_principals(mtls: TlsServer, pki: Pki) -> None:
    server = mtls
    with server.client(pki.client("alice")) as alice:
        assert alice.get("/api/v1/keys").status_code == 200
        created = alice.post("/api/v1/keys", json={"role": "viewer", "name": "by-cert"})
        assert created.status_code == 201 and created.json()["created_by"] == "mtls:alice"
    with server.client(pki.client("bob")) as bob:
        assert bob.get("/api/v1/models").status_code == 403
        assert bob.get("/v2/models/iris/ready").status_code == 404  # admitted; there is no such model here
        assert bob.get("/v2/models/other/ready").status_code == 403
    with server.client(pki.client("carol")) as carol:
        assert carol.get("/api/v1/models").status_code == 401  # a valid certificate, but nobody we know
        key = make_key(server.home, "viewer")
        wait_for(lambda: carol.get("/api/v1/models", headers=auth(key)).status_code == 200, "the new key", deadline_s=5)
