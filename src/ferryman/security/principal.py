"""Who is calling: the principal every request carries once its credentials are checked."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Literal

from ferryman.security.permissions import GLOBAL_PERMISSIONS, ROLE_PERMISSIONS, Permission, Role

__all__ = ["LOCAL_ANONYMOUS", "Principal", "PrincipalSource"]

#: How a principal proved who it is.
PrincipalSource = Literal["key", "jwt", "mtls", "anonymous"]

_WILDCARDS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a name, a role and the models it may act on.

    ``models`` is None for every model, else exact names and fnmatch patterns (``fraud-*``),
    matched case-sensitively like model names. ``key_id`` names the API key it came from (for
    rate limits and the audit trail); it is never a secret.
    """

    name: str
    role: Role
    models: tuple[str, ...] | None = None
    key_id: str | None = None
    source: PrincipalSource = "key"
    _granted: frozenset[Permission] = field(init=False, repr=False, compare=False)
    _exact: frozenset[str] = field(init=False, repr=False, compare=False)
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        role = Role(self.role)
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "_granted", ROLE_PERMISSIONS[role])
        entries = () if self.models is None else tuple(self.models)
        if self.models is not None:
            object.__setattr__(self, "models", entries)
        patterns = [entry for entry in entries if _WILDCARDS & set(entry)]
        object.__setattr__(self, "_exact", frozenset(entry for entry in entries if entry not in patterns))
        joined = "|".join(fnmatch.translate(pattern) for pattern in patterns)
        object.__setattr__(self, "_pattern", re.compile(joined) if joined else None)

    def covers(self, model: str) -> bool:
        """True when ``model`` is within this principal's models (for filtering lists)."""
        if self.models is None or model in self._exact:
            return True
        return self._pattern is not None and self._pattern.match(model) is not None

    def may(self, permission: Permission | str, model: str | None = None) -> bool:
        """True when this principal's role grants ``permission`` and, for ``model``, covers it.

        Without a model only the role counts (a list route filters with :meth:`covers`), except
        for the global permissions, which a principal limited to some models never has.
        """
        if permission not in self._granted:
            return False
        if self.models is None:
            return True
        if permission in GLOBAL_PERMISSIONS:
            return False
        return model is None or self.covers(model)


#: The caller when authentication is off (bound to loopback with no keys or issuer configured).
LOCAL_ANONYMOUS = Principal("anonymous", Role.ADMIN, None, None, "anonymous")
