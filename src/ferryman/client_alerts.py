"""Client methods for alerts, webhooks and live accuracy.

Mixed into :class:`ferryman.Client`; every method is one management API call (``docs/monitoring.md``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

__all__ = ["AlertMethods"]


class AlertMethods:
    """Alert, webhook and accuracy calls; the transport (``_json``) is the Client's."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def alerts(self, *, limit: int = 50) -> dict[str, Any]:
        """Every rule's state per target (``alerts``) and the newest events (``events``)."""
        result: dict[str, Any] = self._json("GET", "/api/v1/alerts", params={"limit": limit})
        return result

    def alert_rules(self) -> list[dict[str, Any]]:
        """Every alert rule."""
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/alerts/rules")["rules"]
        return result

    def create_alert_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        """Create a rule (fields: ``docs/monitoring.md``); returns it as stored."""
        result: dict[str, Any] = self._json("POST", "/api/v1/alerts/rules", json=rule)
        return result

    def delete_alert_rule(self, name: str) -> None:
        """Delete a rule (its past events stay)."""
        self._json("DELETE", f"/api/v1/alerts/rules/{quote(name, safe='')}")

    def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook with its delivery counts (never a secret)."""
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/alerts/webhooks")["webhooks"]
        return result

    def create_webhook(
        self, name: str, url: str, *, secret: str | None = None, min_severity: str = "info"
    ) -> dict[str, Any]:
        """Create a webhook; without ``secret`` the server makes one and returns it this once (``secret``)."""
        body: dict[str, Any] = {"name": name, "url": url, "min_severity": min_severity}
        if secret is not None:
            body["secret"] = secret
        result: dict[str, Any] = self._json("POST", "/api/v1/alerts/webhooks", json=body)
        return result

    def delete_webhook(self, name: str) -> None:
        """Delete a webhook and its deliveries."""
        self._json("DELETE", f"/api/v1/alerts/webhooks/{quote(name, safe='')}")

    def webhook_deliveries(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries: webhook, event, state, attempts and last error."""
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/alerts/deliveries", params={"limit": limit})[
            "deliveries"
        ]
        return result

    def accuracy(
        self, name: str, *, window: str = "1h", buckets: int = 24, version: int | None = None
    ) -> dict[str, Any]:
        """Live accuracy of a model per version and time bucket, from labelled feedback."""
        params: dict[str, Any] = {"window": window, "buckets": buckets}
        if version is not None:
            params["version"] = version
        result: dict[str, Any] = self._json("GET", f"/api/v1/models/{quote(name, safe='')}/accuracy", params=params)
        return result
