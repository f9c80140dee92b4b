"""Who is calling, and may they: credentials → :class:`Principal`, then the route's permission, then the rate.

One :class:`Guard` per server process. Credentials, in order: ``Authorization: Bearer <key or
token>`` or ``x-api-key: <key>``; without either, a verified client certificate whose CN is in
``mtls_principals``. API keys are checked against the in-memory :class:`KeyCache` (no database
query per request); bearer tokens by the OIDC verifier. The key table is reloaded whenever the
registry revision moves (every key change bumps it; polled twice a second, and on PostgreSQL
woken at once by the registry's LISTEN/NOTIFY change feed) and right after a key change made
through this process, so a revocation reaches every process within a second. While the registry
is unreachable the loaded table keeps admitting requests.

Authentication is *off* (every caller is :data:`LOCAL_ANONYMOUS`, an admin) only while the
server is bound to a loopback address (or started with ``--insecure``) and no API key, OIDC
issuer or client-certificate principal exists; the first key created turns it on, everywhere.

Refusals are recorded in the audit trail (``auth.failed``: bad or missing credentials;
``auth.denied``: a principal without the permission) through :class:`AuditTrail`, never with
the credential itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from concurrent.futures import Executor
from typing import Any

from starlette.types import Scope

from ferryman.config import Settings
from ferryman.errors import FerrymanError, Forbidden, Overloaded, Unauthenticated
from ferryman.protocols.audit_trail import AuditTrail
from ferryman.registry.notify import ChangeFeed
from ferryman.registry.service import RegistryService
from ferryman.security.audit import AuditEntry
from ferryman.security.exposure import auth_may_be_off, check_security_settings
from ferryman.security.keys import KeyCache, KeyRejected
from ferryman.security.oidc import OidcVerifier, TokenRejected
from ferryman.security.permissions import Permission, parse_role, require, validate_model_scope
from ferryman.security.principal import LOCAL_ANONYMOUS, Principal
from ferryman.security.rate_limit import RateLimiter
from ferryman.security.tls import common_name
from ferryman.serving.router import VERSION_HEADER

__all__ = ["PRINCIPAL_KEY", "Guard", "audit_identity", "error_headers", "principal_of", "source_address"]

logger = logging.getLogger(__name__)

#: Scope key under which the middleware leaves the request's principal for the routes.
PRINCIPAL_KEY = "ferryman.principal"
_KEY_POLL_S = 0.5
_MARK_USED_S = 60.0
_NO_CREDENTIALS = "credentials required: send an API key (Authorization: Bearer or x-api-key) or a bearer token"


class _CredentialRejected(Unauthenticated):
    def __init__(self, reason: str) -> None:
        super().__init__("invalid credentials: send an API key (Authorization: Bearer or x-api-key) or a bearer token")
        self.reason = reason


def principal_of(scope: Scope) -> Principal:
    """The principal the auth middleware admitted for this request (anonymous on open routes)."""
    principal = scope.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else LOCAL_ANONYMOUS


def audit_identity(principal: Principal) -> str:
    """How the audit trail names a principal: ``key:<id>``, ``jwt:<subject>``, ``mtls:<CN>`` or ``anonymous``."""
    if principal.source == "key" and principal.key_id is not None:
        return f"key:{principal.key_id}"
    if principal.source == "mtls":
        return f"mtls:{principal.name}"
    return principal.name


def source_address(scope: Scope) -> str:
    """The client's address (no proxy headers are trusted)."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def error_headers(error: FerrymanError) -> list[tuple[bytes, bytes]]:
    """Headers a refusal carries: ``WWW-Authenticate`` on 401, ``Retry-After`` on 429."""
    if isinstance(error, Unauthenticated):
        return [(b"www-authenticate", b'Bearer realm="ferryman"')]
    if isinstance(error, Overloaded):
        return [(b"retry-after", str(max(1, math.ceil(error.retry_after))).encode())]
    return []


class Guard:
    """Authenticates requests, checks route permissions and rate limits, and records refusals."""

    def __init__(
        self, settings: Settings, registry: RegistryService, executor: Executor, changes: ChangeFeed | None = None
    ) -> None:
        check_security_settings(settings)
        self._changes = changes if changes is not None and changes.listening else None
        # With the change feed the poll is only a safety net and may be as slow as the catalog's.
        self._poll_s = settings.resolved_registry_poll_seconds if self._changes is not None else _KEY_POLL_S
        self._registry = registry
        self._executor = executor
        self.trail = AuditTrail(registry, executor)
        self.keys = KeyCache()
        self.metrics_open = not settings.metrics_auth
        self._may_be_off = auth_may_be_off(settings)
        self._oidc: OidcVerifier | None = None
        if settings.oidc_issuer is not None:
            assert settings.oidc_audience is not None  # check_security_settings
            self._oidc = OidcVerifier(
                issuer=settings.oidc_issuer,
                audience=settings.oidc_audience,
                role_claim=settings.oidc_role_claim,
                models_claim=settings.oidc_models_claim,
                public_key=settings.oidc_public_key,
                jwks_url=settings.oidc_jwks_url,
            )
        self._certificates = {
            cn: Principal(cn, parse_role(entry.role), validate_model_scope(entry.models), None, "mtls")
            for cn, entry in settings.mtls_principals.items()
        }
        self._limiter: RateLimiter | None = None
        if settings.rate_limit_per_s is not None:
            burst = settings.rate_limit_burst or max(1.0, settings.rate_limit_per_s)
            self._limiter = RateLimiter(settings.rate_limit_per_s, burst)
        self._where = f"{settings.host}:{settings.port}"
        self._revision = registry.revision()
        self.keys.load(registry.key_table())
        self.open = False
        self._update_mode(initial=True)

    # -- the request path -------------------------------------------------------------------------

    async def admit(self, scope: Scope, permission: Permission, model: str | None) -> Principal:
        """The request's principal if it may use ``permission`` (on ``model``); raises 401, 403 or 429."""
        if self.open:
            return LOCAL_ANONYMOUS
        credential: bytes | None = None
        bearer = False
        for name, value in scope["headers"]:
            if name == b"authorization" or name == b"x-api-key":
                credential, bearer = value, name == b"authorization"
                break
        try:
            found = self._identify(scope, credential, bearer)
            principal = found if isinstance(found, Principal) else await self._verify_token(found)
        except Unauthenticated as exc:
            self._failed(scope, exc)
            raise
        self._authorize(scope, principal, permission, model)
        return principal

    async def admit_inference(self, scope: Scope, model: str) -> Principal:
        """:meth:`admit` for inference on ``model``; pinning a version by header needs traffic or rollout rights.

        The hot path: one pass over the headers, a few dict and set lookups (a key verified before is
        remembered: ``KeyCache.verify``); measured by ``bench/auth_overhead.py``.
        """
        if self.open:
            return LOCAL_ANONYMOUS
        credential: bytes | None = None
        bearer = pinned = False
        for name, value in scope["headers"]:
            if name == b"authorization" or name == b"x-api-key":
                if credential is None:
                    credential, bearer = value, name == b"authorization"
            elif name == VERSION_HEADER:
                pinned = True
        try:
            found = self._identify(scope, credential, bearer)
            principal = found if isinstance(found, Principal) else await self._verify_token(found)
        except Unauthenticated as exc:
            self._failed(scope, exc)
            raise
        self._authorize(scope, principal, Permission.INFER, model)
        if pinned and not (principal.may(Permission.TRAFFIC, model) or principal.may(Permission.ROLLOUT, model)):
            error = Forbidden(
                f"x-ferryman-version: pinning a version needs the 'traffic' or 'rollout' permission on model "
                f"'{model}', which {audit_identity(principal)} (role {principal.role.value}) lacks"
            )
            self._denied(scope, principal, Permission.TRAFFIC, model, error)
            raise error
        return principal

    def _identify(self, scope: Scope, credential: bytes | None, bearer: bool) -> Principal | str:
        """The principal of an API key or client certificate, or the bearer token still to verify."""
        if credential is None:
            principal = self._certificate_principal(scope)
            if principal is None:
                raise Unauthenticated(_NO_CREDENTIALS)
            return principal
        if bearer:
            scheme, _, credential = credential.partition(b" ")
            if scheme.lower() != b"bearer":
                raise _CredentialRejected("not a Bearer authorization")
        token = credential.strip().decode("latin-1")
        if token.startswith("fm_"):
            return self.keys.verify(token)
        if self._oidc is not None and token.count(".") == 2:
            return token
        raise _CredentialRejected("neither an API key nor a bearer token")

    async def _verify_token(self, token: str) -> Principal:
        assert self._oidc is not None
        return await self._oidc.verify(token, self._executor)

    def _authorize(self, scope: Scope, principal: Principal, permission: Permission, model: str | None) -> None:
        if not principal.may(permission, model):
            try:
                require(principal, permission, model)
            except Forbidden as exc:
                self._denied(scope, principal, permission, model, exc)
                raise
        if self._limiter is not None:
            wait = self._limiter.acquire(principal.key_id or principal.name)
            if wait is not None:
                raise Overloaded(
                    f"rate limit of {self._limiter.rate_per_s:g} requests/s exceeded for {audit_identity(principal)}",
                    retry_after=wait,
                )

    def _certificate_principal(self, scope: Scope) -> Principal | None:
        if not self._certificates:
            return None
        tls = (scope.get("extensions") or {}).get("tls")
        subject = tls.get("client_cert_name") if isinstance(tls, dict) else None
        if not isinstance(subject, str):
            return None
        cn = common_name(subject)
        return None if cn is None else self._certificates.get(cn)

    # -- the audit trail ----------------------------------------------------------------------------

    def _failed(self, scope: Scope, error: Unauthenticated) -> None:
        who, reason = "-", "no credentials"
        if isinstance(error, KeyRejected):
            who, reason = (f"key:{error.key_id}" if error.key_id else "-"), f"API key {error.reason}"
        elif isinstance(error, TokenRejected | _CredentialRejected):
            reason = error.reason
        target = f"{scope.get('method', '')} {scope.get('path', '')}"
        self.trail.failure(AuditEntry(who, "auth.failed", target, "denied", source_address(scope), {"reason": reason}))
        logger.info("authentication failed for %s from %s: %s", target, source_address(scope), reason)

    def _denied(
        self, scope: Scope, principal: Principal, permission: Permission, model: str | None, error: Forbidden
    ) -> None:
        target = f"{scope.get('method', '')} {scope.get('path', '')}"
        details: dict[str, Any] = {"permission": permission.value, "model": model, "reason": error.message}
        if principal.source == "key":
            details["key_name"] = principal.name
        entry = AuditEntry(audit_identity(principal), "auth.denied", target, "denied", source_address(scope), details)
        self.trail.failure(entry)

    # -- keeping the key table current --------------------------------------------------------------

    async def reload_keys(self) -> None:
        """Reload the key table now (after a key change made through this process)."""
        loop = asyncio.get_running_loop()
        revision, table = await loop.run_in_executor(
            self._executor, lambda: (self._registry.revision(), self._registry.key_table())
        )
        self.keys.load(table)
        self._revision = revision
        self._update_mode()

    async def run_forever(self) -> None:
        """Follow key changes, write audit records and keys' last use, until cancelled."""
        if self._oidc is not None:
            try:
                await self._oidc.refresh_keys(self._executor)
            except Exception as exc:
                logger.warning("fetching the OIDC issuer's keys failed (retried on demand): %s", exc)
        trail = asyncio.create_task(self.trail.run_forever())
        loop = asyncio.get_running_loop()
        last_mark = time.monotonic()
        wake = self._changes.follow() if self._changes is not None else None
        failing = False
        try:
            while True:
                if wake is None:
                    await asyncio.sleep(self._poll_s)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), timeout=self._poll_s)
                    wake.clear()
                try:
                    revision = await loop.run_in_executor(self._executor, self._registry.revision)
                    if revision != self._revision:
                        await self.reload_keys()
                    if time.monotonic() - last_mark >= _MARK_USED_S:
                        last_mark = time.monotonic()
                        used = self.keys.drain_used()
                        if used:
                            await loop.run_in_executor(self._executor, self._registry.mark_keys_used, used)
                    failing = False
                except Exception as exc:
                    if not failing:  # once per outage, not twice a second
                        logger.warning("refreshing the API key table failed (%s); keeping the one loaded", exc)
                    failing = True
        finally:
            trail.cancel()
            await asyncio.gather(trail, return_exceptions=True)

    def _update_mode(self, *, initial: bool = False) -> None:
        was_open = self.open
        self.open = self._may_be_off and self._oidc is None and not self._certificates and len(self.keys) == 0
        if self.open and (initial or not was_open):
            logger.warning(
                "authentication is OFF on %s: no API key, OIDC issuer or client-certificate principal is configured. "
                "Create an admin key (ferryman keys create --role admin --home HOME) to require credentials.",
                self._where,
            )
        elif was_open and not self.open:
            logger.warning("an API key exists now: every request but health checks needs credentials")
