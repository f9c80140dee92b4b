"""Client methods for monitoring: a version's drift report with its data-quality counts.

Mixed into :class:`ferryman.Client`; every method is one management API call (``docs/api.md``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

__all__ = ["MonitoringMethods"]


class MonitoringMethods:
    """Monitoring calls; the transport (``_json``) is the Client's."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def drift_report(self, name: str, version: int) -> dict[str, Any]:
        """The drift report of one version (``docs/monitoring.md``): verdict, per-column tests, data quality.

        ``status`` says whether it is being monitored (``monitoring``), still learning its reference
        profile from traffic (``learning``), has seen no traffic yet, or monitoring is off.
        """
        result: dict[str, Any] = self._json(
            "GET", f"/api/v1/models/{quote(name, safe='')}/versions/{int(version)}/drift"
        )
        return result
