"""Bearer tokens (JWTs) from an OIDC issuer: signature, issuer, audience and expiry checks, claims → principal.

Only asymmetric algorithms are accepted, and only those that fit the key: a token cannot pick
``none`` or an HMAC algorithm keyed with the public key (the classic algorithm-confusion attack).
Keys come from a static PEM public key or the issuer's JWKS document; the JWKS is fetched in an
executor (never on the event loop) at start and again when a token names a key id not seen yet,
at most once every 30 seconds so that tokens with made-up key ids cannot hammer the issuer.

A verified token is remembered until it expires (bounded), so a client that reuses its token
pays one dictionary lookup per request instead of an RSA verification.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from ferryman.errors import InvalidInput, Unauthenticated
from ferryman.security.permissions import Role, validate_model_scope
from ferryman.security.principal import Principal

# PyJWT and cryptography's key types are imported where a token or key is handled: a server
# without an OIDC issuer never needs them, and start-up is faster without them.
__all__ = ["OidcVerifier", "TokenRejected"]

_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = ("ES256", "ES384", "ES512")
_ASYMMETRIC = frozenset((*_RSA_ALGORITHMS, *_EC_ALGORITHMS, "EdDSA"))
#: Most privileged first: a token listing several roles gets the first of these it names.
_ROLE_PRECEDENCE = (Role.ADMIN, Role.DEPLOYER, Role.PREDICTOR, Role.VIEWER)
_LEEWAY_S = 10
_JWKS_REFETCH_S = 30.0
_JWKS_TIMEOUT_S = 5.0
_MAX_JWKS_BYTES = 1 << 20
_CACHE_SIZE = 4096


class TokenRejected(Unauthenticated):
    """A bearer token was refused (401); ``reason`` is for the audit trail, never told to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__("invalid or expired bearer token")
        self.reason = reason


def _algorithms_for(key: Any) -> tuple[str, ...]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise InvalidInput("oidc_public_key: expected an RSA, EC or Ed25519/Ed448 public key")


def _load_public_key(value: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = value if value.lstrip().startswith("-----BEGIN") else Path(value).read_text()
    try:
        return load_pem_public_key(text.encode())
    except ValueError as exc:
        raise InvalidInput(f"oidc_public_key: not a PEM public key ({exc})") from None


def _check_jwks_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise InvalidInput("oidc_jwks_url: expected an https URL (plain http only on a loopback address)")


def _fetch_jwks(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=_JWKS_TIMEOUT_S) as response:  # noqa: S310 (scheme checked)  # nosec B310
        document = json.loads(response.read(_MAX_JWKS_BYTES))
    if not isinstance(document, dict):
        raise ValueError("the JWKS document is not a JSON object")
    return document


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


class OidcVerifier:
    """Verifies bearer tokens of one issuer and turns their claims into a :class:`Principal`."""

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        role_claim: str = "ferryman_role",
        models_claim: str | None = None,
        public_key: str | None = None,
        jwks_url: str | None = None,
        fetch: Callable[[str], dict[str, Any]] = _fetch_jwks,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (public_key is None) == (jwks_url is None):
            raise InvalidInput("oidc: set exactly one of oidc_public_key and oidc_jwks_url")
        self._issuer = issuer
        self._audience = audience
        self._role_claim = role_claim
        self._models_claim = models_claim
        self._jwks_url = jwks_url
        self._fetch = fetch
        self._clock = clock
        self._static: tuple[Any, tuple[str, ...]] | None = None
        self._jwks: dict[str, tuple[Any, tuple[str, ...]]] = {}
        self._last_fetch = -_JWKS_REFETCH_S
        self._verified: dict[str, tuple[Principal, float]] = {}
        if public_key is not None:
            key = _load_public_key(public_key)
            self._static = (key, _algorithms_for(key))
        if jwks_url is not None:
            _check_jwks_url(jwks_url)

    async def verify(self, token: str, executor: Executor) -> Principal:
        """The principal a valid token names; TokenRejected (401) otherwise."""
        cached = self._verified.get(token)
        if cached is not None and cached[1] > self._clock():
            return cached[0]
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in _ASYMMETRIC:
            raise TokenRejected(f"algorithm {algorithm!r} is not accepted")
        key, allowed = await self._key_for(header.get("kid"), executor)
        if algorithm not in allowed:
            raise TokenRejected(f"algorithm {algorithm!r} does not fit the issuer's key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=_LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"invalid token: {type(exc).__name__}") from None
        principal = self._principal(claims)
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    async def refresh_keys(self, executor: Executor) -> None:
        """Fetch the issuer's JWKS now (at start, so the first request does not wait for it)."""
        if self._jwks_url is None:
            return
        import jwt

        loop = asyncio.get_running_loop()
        self._last_fetch = time.monotonic()
        document = await loop.run_in_executor(executor, self._fetch, self._jwks_url)
        keys: dict[str, tuple[Any, tuple[str, ...]]] = {}
        for entry in jwt.PyJWKSet.from_dict(document).keys:
            if entry.key_id is None or entry.public_key_use not in (None, "sig"):
                continue
            try:
                allowed = _algorithms_for(entry.key)
            except InvalidInput:
                continue  # a symmetric ("oct") key in the set is never usable here
            keys[entry.key_id] = (entry.key, allowed)
        self._jwks = keys

    async def _key_for(self, kid: Any, executor: Executor) -> tuple[Any, tuple[str, ...]]:
        if self._static is not None:
            return self._static
        if not isinstance(kid, str):
            raise TokenRejected("token names no key id")
        found = self._jwks.get(kid)
        if found is None and time.monotonic() - self._last_fetch >= _JWKS_REFETCH_S:
            try:
                await self.refresh_keys(executor)
            except Exception as exc:
                raise TokenRejected(f"the issuer's keys could not be fetched: {type(exc).__name__}") from None
            found = self._jwks.get(kid)
        if found is None:
            raise TokenRejected(f"unknown key id {kid[:64]!r}")
        return found

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenRejected("token has no subject")
        value = _claim(claims, self._role_claim)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        roles = [role for role in _ROLE_PRECEDENCE if role.value in names]
        if not roles:
            raise TokenRejected(f"token has no valid '{self._role_claim}' claim")
        models: tuple[str, ...] | None = None
        if self._models_claim is not None:
            raw = _claim(claims, self._models_claim)
            if isinstance(raw, str):
                raw = [part.strip() for part in raw.split(",") if part.strip()]
            if raw is not None:
                try:
                    models = validate_model_scope(raw, field=self._models_claim)
                except InvalidInput:
                    raise TokenRejected(f"token has an invalid '{self._models_claim}' claim") from None
        return Principal(f"jwt:{subject[:200]}", roles[0], models, None, "jwt")
