"""gRPC admits whom HTTP admits: keys and tokens in metadata, roles and model scopes, rate limits, TLS, mTLS."""

from __future__ import annotations

import json
import socket
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess, wait_for
from tests.integration.test_v2_grpc import M, call, error_of, grpc_port, iris_request
from tests.security.conftest import (
    AUDIENCE,
    ISSUER,
    Issuer,
    Pki,
    TlsServerFactory,
    auth,
    copy_model,
    make_key,
    open_registry,
)

ROW = np.array([[5.1, 3.5, 1.4, 0.2]])
GRPC = ["--grpc-port", "0"]


def bearer(key: str) -> list[tuple[str, str]]:
    """Metadata carrying ``key`` as HTTP would: ``authorization: Bearer <key>``."""
    return [("authorization", f"Bearer {key}")]


@pytest.fixture(scope="module")
def keyed(
    tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path, issuer: Issuer
) -> Iterator[tuple[ServerProcess, grpc.Channel, dict[str, str]]]:
    """A loopback server whose registry has keys (credentials required), OIDC tokens, and models iris and fraud."""
    root = tmp_path_factory.mktemp("grpc-keys")
    home = root / "home"
    keys = {role: make_key(home, role, name=f"{role}-key") for role in ("admin", "predictor", "viewer")}
    keys["iris-only"] = make_key(home, "predictor", ["iris"], name="iris-only")
    keys["fraud-only"] = make_key(home, "predictor", ["fraud"], name="fraud-only")
    keys["victim"] = make_key(home, "predictor", name="victim")
    keys["limited"] = make_key(home, "predictor", name="limited")
    env = {
        "FERRYMAN_OIDC_ISSUER": ISSUER,
        "FERRYMAN_OIDC_AUDIENCE": AUDIENCE,
        "FERRYMAN_OIDC_PUBLIC_KEY": str(issuer.public_pem),
        # Each key may make 20 calls at once, then one every 2 s: only the test that spends a key's burst notices.
        "FERRYMAN_RATE_LIMIT_PER_S": "0.5",
        "FERRYMAN_RATE_LIMIT_BURST": "20",
    }
    fraud = copy_model(iris_joblib, root / "models", "fraud")
    process = ServerProcess(home, [str(iris_joblib), str(fraud), *GRPC], env)
    process.wait_ready()
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port(process)}") as channel:
        yield process, channel, keys
    process.stop()


def test_health_is_open_and_everything_else_needs_credentials(
    keyed: tuple[ServerProcess, grpc.Channel, dict[str, str]],
) -> None:
    _, channel, _ = keyed
    assert call(channel, "ServerLive", M.ServerLiveRequest()).live
    assert call(channel, "ServerReady", M.ServerReadyRequest()).ready
    for method, request in [
        ("ModelInfer", iris_request(ROW, raw=True)),
        ("ModelMetadata", M.ModelMetadataRequest(name="iris")),
        ("ModelReady", M.ModelReadyRequest(name="iris")),
        ("ServerMetadata", M.ServerMetadataRequest()),
    ]:
        error = error_of(channel, method, request)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, method
        assert "credentials required" in error.details()


def test_keys_and_tokens_from_metadata_as_http_takes_them(
    keyed: tuple[ServerProcess, grpc.Channel, dict[str, str]], issuer: Issuer
) -> None:
    _, channel, keys = keyed
    request = iris_request(ROW, raw=True)
    assert call(channel, "ModelInfer", request, metadata=bearer(keys["predictor"])).model_name == "iris"
    assert call(channel, "ModelInfer", request, metadata=[("x-api-key", keys["predictor"])]).model_name == "iris"
    token = issuer.token({"ferryman_role": "predictor"})
    assert call(channel, "ModelInfer", request, metadata=bearer(token)).model_name == "iris"
    wrong_secret = keys["admin"][: len("fm_") + 13] + "B" * 43
    for metadata in [
        bearer(wrong_secret),
        bearer("not-a-key"),
        [("authorization", "Basic YWRtaW46YWRtaW4=")],
        [("x-api-key", "fm_garbage")],
    ]:
        assert error_of(channel, "ModelInfer", request, metadata=metadata).code() == grpc.StatusCode.UNAUTHENTICATED


def test_roles_and_model_scopes_decide_as_on_http(
    keyed: tuple[ServerProcess, grpc.Channel, dict[str, str]],
) -> None:
    server, channel, keys = keyed
    request = iris_request(ROW, raw=True)
    denied = error_of(channel, "ModelInfer", request, metadata=bearer(keys["viewer"]))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "infer" in denied.details()
    scoped = error_of(channel, "ModelInfer", request, metadata=bearer(keys["fraud-only"]))
    assert scoped.code() == grpc.StatusCode.PERMISSION_DENIED and "iris" in scoped.details()
    assert call(channel, "ModelInfer", request, metadata=bearer(keys["iris-only"])).model_name == "iris"
    other = M.ModelMetadataRequest(name="fraud")
    assert error_of(channel, "ModelMetadata", other, metadata=bearer(keys["iris-only"])).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert call(channel, "ModelMetadata", other, metadata=bearer(keys["fraud-only"])).name == "fraud"
    # Each RPC needs what its REST twin needs, for every role.
    for role in ("admin", "predictor", "viewer"):
        rest = httpx.get(f"{server.url}/v2/models/iris", headers=auth(keys[role])).status_code
        try:
            call(channel, "ModelMetadata", M.ModelMetadataRequest(name="iris"), metadata=bearer(keys[role]))
            assert rest == 200, role
        except grpc.RpcError as error:
            assert (rest, error.code()) == (403, grpc.StatusCode.PERMISSION_DENIED), role
    # Pinning a version by metadata needs traffic rights, as the header does.
    pinned = error_of(
        channel, "ModelInfer", request, metadata=[*bearer(keys["predictor"]), ("x-ferryman-version", "1")]
    )
    assert pinned.code() == grpc.StatusCode.PERMISSION_DENIED and "x-ferryman-version" in pinned.details()


def test_a_revoked_key_is_refused_and_failures_are_audited(
    keyed: tuple[ServerProcess, grpc.Channel, dict[str, str]],
) -> None:
    server, channel, keys = keyed
    request = iris_request(ROW, raw=True)
    victim = keys["victim"]
    assert call(channel, "ModelInfer", request, metadata=bearer(victim)).model_name == "iris"
    revoked = httpx.delete(f"{server.url}/api/v1/keys/{victim.split('_')[1]}", headers=auth(keys["admin"]))
    assert revoked.status_code == 200

    def refused() -> bool:
        try:
            call(channel, "ModelInfer", request, metadata=bearer(victim))
        except grpc.RpcError as error:
            return bool(error.code() == grpc.StatusCode.UNAUTHENTICATED)
        return False

    wait_for(refused, "the revoked key to be refused over gRPC", deadline_s=5)
    registry = open_registry(server.home)
    target = "GRPC /inference.GRPCInferenceService/ModelInfer"

    def audited() -> list[dict[str, object]]:
        records = [r.to_dict() for r in registry.list_audit(action="auth.*", limit=200)]
        return [r for r in records if r["target"] == target]

    wait_for(lambda: any(r["principal"] == f"key:{victim.split('_')[1]}" for r in audited()), "the audit records")
    records = audited()
    assert {r["action"] for r in records} >= {"auth.failed", "auth.denied"}
    assert all(r["source_address"] == "127.0.0.1" for r in records)
    assert victim.split("_", 2)[2] not in json.dumps(records)


def test_the_per_key_rate_limit_applies(keyed: tuple[ServerProcess, grpc.Channel, dict[str, str]]) -> None:
    _, channel, keys = keyed
    stub = channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=M.ModelInferRequest.SerializeToString,
        response_deserializer=M.ModelInferResponse.FromString,
    )
    request = iris_request(ROW, raw=True)
    for _ in range(20):
        stub(request, metadata=bearer(keys["limited"]))
    with pytest.raises(grpc.RpcError) as limited:
        stub(request, metadata=bearer(keys["limited"]))
    error = limited.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "rate limit" in error.details()
    assert int(dict(error.trailing_metadata())["retry-after"]) >= 1
    assert call(channel, "ModelInfer", request, metadata=bearer(keys["predictor"])).model_name == "iris"


# -- TLS and mTLS ---------------------------------------------------------------------------------


def _handshake(port: int, pki: Pki, maximum: ssl.TLSVersion) -> str | None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.set_alpn_protocols(["h2"])
    # Let this client offer old versions at all, so that a refusal is the server's.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # offering TLS 1.0/1.1 on purpose
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = maximum
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


def _secure(port: int, pki: Pki, client: str | None = None) -> grpc.Channel:
    cert = key = None
    if client is not None:
        cert_path, key_path = pki.client(client)
        cert, key = Path(cert_path).read_bytes(), Path(key_path).read_bytes()
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes(), private_key=key, certificate_chain=cert)
    return grpc.secure_channel(f"localhost:{port}", credentials)


def test_grpc_over_tls_only_with_modern_versions(tls_server_factory: TlsServerFactory, pki: Pki) -> None:
    server = tls_server_factory(GRPC)
    port = grpc_port(server)
    with _secure(port, pki) as channel:
        assert call(channel, "ServerLive", M.ServerLiveRequest(), timeout=10).live
    with grpc.insecure_channel(f"127.0.0.1:{port}") as plain:
        assert error_of(plain, "ServerLive", M.ServerLiveRequest(), timeout=5).code() == grpc.StatusCode.UNAVAILABLE
    assert _handshake(port, pki, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises((ssl.SSLError, ConnectionResetError)) as refused:
        _handshake(port, pki, ssl.TLSVersion.TLSv1_1)
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value)  # the server hung up, not this client


def test_mtls_client_certificates_map_to_principals(tls_server_factory: TlsServerFactory, pki: Pki) -> None:
    principals = {"alice": {"role": "admin"}, "bob": {"role": "predictor", "models": ["iris"]}}
    env = {"FERRYMAN_MTLS_PRINCIPALS": json.dumps(principals)}
    server = tls_server_factory(["--tls-client-ca", str(pki.ca), *GRPC], env, probe_cert=pki.client("carol"))
    port = grpc_port(server)
    for client in (None, "rogue"):  # no certificate, or one from another CA: no connection at all
        with _secure(port, pki, client) as channel:
            error = error_of(channel, "ServerLive", M.ServerLiveRequest(), timeout=5)
            assert error.code() == grpc.StatusCode.UNAVAILABLE, client
    with _secure(port, pki, "alice") as alice:
        assert call(alice, "ServerMetadata", M.ServerMetadataRequest(), timeout=10).name == "ferryman"
    with _secure(port, pki, "bob") as bob:
        missing = error_of(bob, "ModelMetadata", M.ModelMetadataRequest(name="iris"), timeout=10)
        assert missing.code() == grpc.StatusCode.NOT_FOUND  # admitted; there is no such model on this server
        other = error_of(bob, "ModelMetadata", M.ModelMetadataRequest(name="other"), timeout=10)
        assert other.code() == grpc.StatusCode.PERMISSION_DENIED
    with _secure(port, pki, "carol") as carol:  # a valid certificate, but nobody we know
        unknown = error_of(carol, "ServerMetadata", M.ServerMetadataRequest(), timeout=10)
        assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
