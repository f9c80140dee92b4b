"""OIDC bearer tokens: valid, forged, expired, wrong audience or issuer, algorithm tricks, claims, and a JWKS URL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from jwt.algorithms import RSAAlgorithm

from tests.conftest import ServerFactory, ServerProcess
from tests.security.conftest import AUDIENCE, IRIS_ROW, ISSUER, Issuer, auth, registry_state


def _env(**extra: str) -> dict[str, str]:
    return {
        "FERRYMAN_OIDC_ISSUER": ISSUER,
        "FERRYMAN_OIDC_AUDIENCE": AUDIENCE,
        "FERRYMAN_OIDC_MODELS_CLAIM": "ferryman_models",
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, iris_joblib: Path, issuer: Issuer) -> Iterator[ServerProcess]:
    """A server trusting ``issuer``'s static public key (no API keys at all)."""
    env = _env(FERRYMAN_OIDC_PUBLIC_KEY=str(issuer.public_pem))
    process = ServerProcess(tmp_path_factory.mktemp("oidc") / "home", [str(iris_joblib)], env)
    process.wait_ready()
    yield process
    process.stop()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_public_key(issuer: Issuer) -> str:
    """The algorithm-confusion forgery: HMAC-signed with the issuer's public key as the secret."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300, "ferryman_role": "admin"}
    signing_input = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(issuer.public_pem.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def test_a_valid_token_is_accepted_with_its_role(server: ServerProcess, issuer: Issuer) -> None:
    admin = issuer.token()
    assert httpx.get(f"{server.url}/api/v1/models", headers=auth(admin)).status_code == 200
    predictor = issuer.token({"sub": "app", "ferryman_role": "predictor"})
    assert httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS_ROW, headers=auth(predictor)).status_code == 200
    assert httpx.get(f"{server.url}/api/v1/models", headers=auth(predictor)).status_code == 403


def test_role_lists_and_model_claims_are_mapped(server: ServerProcess, issuer: Issuer) -> None:
    listed = issuer.token({"ferryman_role": ["viewer", "deployer"], "ferryman_models": ["fraud-*"]})
    assert httpx.get(f"{server.url}/api/v1/models/fraud-a/versions", headers=auth(listed)).status_code == 404
    assert httpx.get(f"{server.url}/api/v1/models/iris", headers=auth(listed)).status_code == 403
    assert httpx.get(f"{server.url}/api/v1/models", headers=auth(listed)).json()["models"] == []
    comma = issuer.token({"ferryman_role": "viewer", "ferryman_models": "iris, other"})
    assert httpx.get(f"{server.url}/api/v1/models/iris", headers=auth(comma)).status_code == 200


@pytest.mark.parametrize(
    "case",
    ["forged", "expired", "wrong audience", "wrong issuer", "no role", "unknown role", "alg none", "hs256 confusion"],
)
def test_bad_tokens_are_refused_and_change_nothing(
    server: ServerProcess, issuer: Issuer, other_issuer: Issuer, case: str
) -> None:
    tokens: dict[str, Any] = {
        "forged": lambda: other_issuer.token(),
        "expired": lambda: issuer.token({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}),
        "wrong audience": lambda: issuer.token({"aud": "another-app"}),
        "wrong issuer": lambda: issuer.token({"iss": "https://elsewhere.test"}),
        "no role": lambda: issuer.token({"ferryman_role": None}),
        "unknown role": lambda: issuer.token({"ferryman_role": "root"}),
        "alg none": lambda: jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 300, "ferryman_role": "admin"},
            None,
            algorithm="none",
        ),
        "hs256 confusion": lambda: _hs256_with_public_key(issuer),
    }
    before = registry_state(server.home)
    token = tokens[case]()
    response = httpx.delete(f"{server.url}/api/v1/models/iris", headers=auth(token))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid or expired bearer token"
    assert httpx.get(f"{server.url}/api/v1/models", headers=auth(token)).status_code == 401
    assert registry_state(server.home) == before


class _JwksHandler(BaseHTTPRequestHandler):
    document: bytes = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args: object) -> None:
        pass


def test_keys_from_a_jwks_url(server_factory: ServerFactory, tmp_path: Path, issuer: Issuer) -> None:
    jwk = RSAAlgorithm.to_jwk(issuer.private_key.public_key(), as_dict=True)
    handler = type("Handler", (_JwksHandler,), {"document": json.dumps({"keys": [{**jwk, "kid": "k1"}]}).encode()})
    jwks = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=jwks.serve_forever, daemon=True)
    thread.start()
    try:
        env = _env(FERRYMAN_OIDC_JWKS_URL=f"http://127.0.0.1:{jwks.server_address[1]}/jwks.json")
        server = server_factory(home=tmp_path / "home", env=env)
        assert httpx.get(f"{server.url}/api/v1/models", headers=auth(issuer.token(kid="k1"))).status_code == 200
        unknown_kid = httpx.get(f"{server.url}/api/v1/models", headers=auth(issuer.token(kid="k2")))
        assert unknown_kid.status_code == 401
        assert httpx.get(f"{server.url}/api/v1/models", headers=auth(issuer.token())).status_code == 401
    finally:
        jwks.shutdown()
        jwks.server_close()
