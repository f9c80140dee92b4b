"""Client methods for API keys and the audit trail (admin only).

Mixed into :class:`ferryman.Client`; every method is one management API call (``docs/api.md``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SecurityMethods"]


class SecurityMethods:
    """Key and audit calls; the transport (``_json``) is the Client's."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def create_key(
        self, role: str, *, models: list[str] | None = None, expires: str | None = None, name: str = ""
    ) -> dict[str, Any]:
        """Create a key; the answer's ``key`` is its secret, shown this once (``expires`` like ``90d``)."""
        body: dict[str, Any] = {"role": role, "name": name}
        if models is not None:
            body["models"] = models
        if expires is not None:
            body["expires"] = expires
        result: dict[str, Any] = self._json("POST", "/api/v1/keys", json=body)
        return result

    def keys(self, *, include_revoked: bool = True) -> list[dict[str, Any]]:
        """Every key (id, name, role, models, state, times), never a secret."""
        params = {"include_revoked": str(include_revoked).lower()}
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/keys", params=params)["keys"]
        return result

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        """Revoke a key at once (on every replica within a second); returns its record."""
        result: dict[str, Any] = self._json("DELETE", f"/api/v1/keys/{key_id}")
        return result

    def rotate_key(self, key_id: str, *, grace: str | None = None) -> dict[str, Any]:
        """Replace a key by a new one with the same rights; the old one is revoked, or expires after ``grace``."""
        body = {} if grace is None else {"grace": grace}
        result: dict[str, Any] = self._json("POST", f"/api/v1/keys/{key_id}/rotate", json=body)
        return result

    def audit_log(
        self,
        *,
        principal: str | None = None,
        action: str | None = None,
        target: str | None = None,
        outcome: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Audit records, newest first; ``since``/``until`` take ISO-8601 times or durations ago (``24h``)."""
        filters = {
            "principal": principal,
            "action": action,
            "target": target,
            "outcome": outcome,
            "since": since,
            "until": until,
            "before_seq": before_seq,
            "limit": limit,
        }
        params = {key: value for key, value in filters.items() if value is not None}
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/audit", params=params)["records"]
        return result

    def verify_audit(self) -> dict[str, Any]:
        """Check the audit chain: ``{"ok", "checked", "first_bad_seq", "reason", "head"}``."""
        result: dict[str, Any] = self._json("GET", "/api/v1/audit/verify")
        return result
