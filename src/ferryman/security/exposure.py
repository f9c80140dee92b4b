"""Secure defaults: when a server may run without credentials, and when it must refuse to start.

- Bound to a loopback address (127.0.0.0/8, ::1, localhost) with no API key, OIDC issuer or
  client-certificate principal: authentication is off, with a warning in the log (the demo).
- As soon as any of those exists: credentials are required on every address.
- Bound to any other address with neither an active admin key, nor an OIDC issuer, nor an admin
  client-certificate principal: ``ferryman serve`` refuses to start (exit code 2) unless
  ``insecure`` is set (``--insecure``) — then it serves without authentication, loudly.
"""

from __future__ import annotations

import ipaddress

from ferryman.config import Settings
from ferryman.errors import InvalidInput
from ferryman.registry.service import RegistryService
from ferryman.security.permissions import Role, parse_role, validate_model_scope

__all__ = ["UnsafeExposure", "auth_may_be_off", "check_exposure", "check_security_settings", "is_loopback"]


class UnsafeExposure(Exception):
    """The server would listen beyond this machine with no way to authenticate an administrator."""


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_may_be_off(settings: Settings) -> bool:
    """Whether authentication may be off at all (it is, while no credential of any kind exists)."""
    return is_loopback(settings.host) or settings.insecure


def check_security_settings(settings: Settings) -> None:
    """InvalidInput naming the setting when the security settings do not fit together."""
    if settings.oidc_issuer is not None:
        if not settings.oidc_audience:
            raise InvalidInput("oidc_audience: required with oidc_issuer (tokens for other applications must not work)")
        if (settings.oidc_jwks_url is None) == (settings.oidc_public_key is None):
            raise InvalidInput("oidc_jwks_url / oidc_public_key: set exactly one with oidc_issuer")
    elif settings.oidc_jwks_url or settings.oidc_public_key or settings.oidc_audience:
        raise InvalidInput("oidc_issuer: required when any other oidc_* setting is given")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise InvalidInput("tls_cert and tls_key: give both to serve HTTPS")
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise InvalidInput("tls_client_ca: client certificates need TLS (set tls_cert and tls_key)")
    if settings.mtls_principals and settings.tls_client_ca is None:
        raise InvalidInput("mtls_principals: needs tls_client_ca, or no certificate is ever verified")
    for cn, entry in settings.mtls_principals.items():
        parse_role(entry.role, field=f"mtls_principals.{cn}.role")
        validate_model_scope(entry.models, field=f"mtls_principals.{cn}.models")


def check_exposure(settings: Settings, registry: RegistryService) -> None:
    """Raise UnsafeExposure when ``settings`` would serve a non-loopback address without admin credentials."""
    check_security_settings(settings)
    if auth_may_be_off(settings) or settings.oidc_issuer is not None:
        return
    if any(parse_role(entry.role) is Role.ADMIN for entry in settings.mtls_principals.values()):
        return
    if registry.has_active_key(Role.ADMIN):
        return
    # Never print the database URL: it may hold a password.
    where = "--database-url URL" if settings.database_url else f"--home {settings.home}"
    raise UnsafeExposure(
        f"refusing to serve on {settings.host} without authentication: there is no active admin API key and no "
        "OIDC issuer. Create a key first (printed once):\n"
        f"    ferryman keys create --role admin --name bootstrap {where}\n"
        "or configure oidc_issuer, or pass --insecure to serve without authentication (not recommended)."
    )
