"""Roles, permissions and the one table that says which role may do what.

Every route declares the :class:`Permission` it needs (and, where it acts on one model, that
model's name); :func:`require` is the single check. The table, :data:`ROLE_PERMISSIONS`:

- ``viewer``: read, metrics
- ``predictor``: infer, feedback
- ``deployer``: everything viewer and predictor have, and push, delete, alias, traffic, rollout,
  policy, load, alerts
- ``admin``: everything, and keys, audit, admin

Decisions, and why:

- ``predictor`` may send ``feedback``: rewards and labels come from the application that made
  the prediction (it holds the request id), and bandits need them; feedback can only steer
  traffic among versions a deployer already put in the policy.
- ``predictor`` has no ``read``: the V2 protocol's own model metadata and readiness routes are
  part of inference and should declare ``infer``, so a predictor key works with Triton/KServe
  clients without being able to browse the registry.
- ``viewer`` has no ``infer``: inference spends compute and sees the model's answers.
- ``keys``, ``audit`` and ``admin`` (server configuration) are :data:`GLOBAL_PERMISSIONS`: they act
  on every model at once (a key manager could mint an unrestricted key), so a principal limited
  to some models never has them, whatever its role.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

from ferryman.errors import Forbidden, InvalidInput, Unauthenticated

if TYPE_CHECKING:
    from ferryman.security.principal import Principal

__all__ = [
    "GLOBAL_PERMISSIONS",
    "ROLE_PERMISSIONS",
    "Permission",
    "Role",
    "parse_role",
    "require",
    "validate_model_scope",
]


class Permission(StrEnum):
    """What a route needs; a route acting on one model also names the model."""

    INFER = "infer"
    """Run inference (V2/TF Serving/OpenAI routes, including the V2 model metadata and ready routes)."""
    READ = "read"
    """Read models, versions, aliases, policies, rollouts, histories, reports and drift."""
    METRICS = "metrics"
    """Scrape ``/metrics`` (when it is not left open)."""
    FEEDBACK = "feedback"
    """Send rewards and labels for predictions."""
    PUSH = "push"
    """Push a new version (runs the pusher's code on load for pickle formats and custom models)."""
    DELETE = "delete"
    """Delete versions and models."""
    ALIAS = "alias"
    """Set, delete and roll back aliases."""
    TRAFFIC = "traffic"
    """Set and clear traffic policies."""
    ROLLOUT = "rollout"
    """Start, pause, resume, promote and abort rollouts."""
    POLICY = "policy"
    """Set version policies (which versions stay loaded)."""
    LOAD = "load"
    """Load and unload versions into memory."""
    ALERTS = "alerts"
    """Create, change and delete alert rules."""
    KEYS = "keys"
    """Create, list, rotate and revoke API keys."""
    AUDIT = "audit"
    """Read and verify the audit trail."""
    ADMIN = "admin"
    """Change the server's configuration."""


class Role(StrEnum):
    """A principal's role: a fixed set of permissions (see :data:`ROLE_PERMISSIONS`)."""

    ADMIN = "admin"
    DEPLOYER = "deployer"
    PREDICTOR = "predictor"
    VIEWER = "viewer"


_VIEWER = frozenset({Permission.READ, Permission.METRICS})
_PREDICTOR = frozenset({Permission.INFER, Permission.FEEDBACK})
_DEPLOYER = (
    _VIEWER
    | _PREDICTOR
    | {
        Permission.PUSH,
        Permission.DELETE,
        Permission.ALIAS,
        Permission.TRAFFIC,
        Permission.ROLLOUT,
        Permission.POLICY,
        Permission.LOAD,
        Permission.ALERTS,
    }
)

#: The one table: what each role may do.
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.PREDICTOR: _PREDICTOR,
    Role.DEPLOYER: frozenset(_DEPLOYER),
    Role.ADMIN: frozenset(Permission),
}

#: Permissions over every model at once: never granted to a principal limited to some models.
GLOBAL_PERMISSIONS = frozenset({Permission.KEYS, Permission.AUDIT, Permission.ADMIN})

# Model names are [A-Za-z0-9._-]; a scope entry may add fnmatch's wildcards.
_SCOPE_ENTRY = re.compile(r"[A-Za-z0-9._*?\[\]!-]{1,128}", re.ASCII)
_MAX_SCOPE_ENTRIES = 256


def parse_role(value: str, *, field: str = "role") -> Role:
    """The :class:`Role` named ``value``; InvalidInput naming ``field`` and the roles otherwise."""
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"{field}: expected one of {', '.join(Role)}, got {value!r}") from None


def validate_model_scope(entries: Iterable[str] | None, *, field: str = "models") -> tuple[str, ...] | None:
    """Check a model restriction (names or fnmatch patterns such as ``fraud-*``); None means every model.

    Returns the entries sorted and without duplicates; InvalidInput naming ``field`` for an empty
    list (a key for no model is a mistake: omit the restriction for every model) or a bad entry.
    """
    if entries is None:
        return None
    if isinstance(entries, str):
        raise InvalidInput(f"{field}: expected a list of model names or patterns, got a string")
    scope = sorted(set(entries))
    if not scope:
        raise InvalidInput(f"{field}: expected at least one model name or pattern (omit it for every model)")
    if len(scope) > _MAX_SCOPE_ENTRIES:
        raise InvalidInput(f"{field}: at most {_MAX_SCOPE_ENTRIES} entries, got {len(scope)}")
    for entry in scope:
        if not isinstance(entry, str) or not _SCOPE_ENTRY.fullmatch(entry):
            raise InvalidInput(
                f"{field}: {entry!r} is neither a model name nor a pattern "
                "(letters, digits, '.', '_', '-' and the wildcards * ? [ ])"
            )
    return tuple(scope)


def require(principal: Principal | None, permission: Permission, model: str | None = None) -> Principal:
    """Return ``principal`` if it may do ``permission`` (on ``model``); else raise.

    Unauthenticated (401) when there is no principal; Forbidden (403) naming the principal, the
    permission and the model otherwise. Messages never contain a credential.
    """
    if principal is None:
        raise Unauthenticated(
            "credentials required: send an API key (Authorization: Bearer or x-api-key) or a bearer token"
        )
    if principal.may(permission, model):
        return principal
    who = f"'{principal.name}' (role {principal.role.value})"
    if permission not in ROLE_PERMISSIONS[principal.role]:
        where = "" if model is None else f" on model '{model}'"
        raise Forbidden(f"{who} lacks the '{permission}' permission{where}")
    if permission in GLOBAL_PERMISSIONS:
        raise Forbidden(f"{who} is limited to some models; '{permission}' needs access to every model")
    raise Forbidden(f"{who} may not use '{permission}' on model '{model}': its access is limited to other models")
