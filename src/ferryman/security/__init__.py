"""Security: principals, roles and permissions, API keys, the audit chain, rate limits.

Pure domain code: nothing here touches the network or the database. The registry stores keys
and audit records (``registry/api_keys.py``, ``registry/audit_log.py``); the interfaces turn
credentials into a :class:`Principal` and call :func:`require` with the permission a route
declares.
"""

from __future__ import annotations

from ferryman.security.audit import AuditEntry, AuditRecord, VerifyResult, redact, redact_text
from ferryman.security.keys import KeyCache, KeyRecord, KeyRejected, StoredKey, parse_duration
from ferryman.security.permissions import GLOBAL_PERMISSIONS, ROLE_PERMISSIONS, Permission, Role, require
from ferryman.security.principal import LOCAL_ANONYMOUS, Principal
from ferryman.security.rate_limit import RateLimiter

__all__ = [
    "GLOBAL_PERMISSIONS",
    "LOCAL_ANONYMOUS",
    "ROLE_PERMISSIONS",
    "AuditEntry",
    "AuditRecord",
    "KeyCache",
    "KeyRecord",
    "KeyRejected",
    "Permission",
    "Principal",
    "RateLimiter",
    "Role",
    "StoredKey",
    "VerifyResult",
    "parse_duration",
    "redact",
    "redact_text",
    "require",
]
