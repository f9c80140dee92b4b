"""Client methods for versions in production: rollback, traffic and version policies, rollouts, feedback.

Mixed into :class:`ferryman.Client`; every method is one management API call (``docs/api.md``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["ReleaseMethods"]


class ReleaseMethods:
    """Release-management calls; the transport (``_json``, ``_request``) is the Client's."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    # -- aliases -------------------------------------------------------------------------------

    def rollback_alias(self, name: str, alias: str, *, expected_version: int | None = None) -> dict[str, Any]:
        """Point ``alias`` back at the version it pointed at before its latest change.

        Returns ``{"model", "alias", "version", "previous"}``; rolling back twice returns to where
        it started. Conflict when there is nothing to go back to (or that version was deleted).
        """
        body = {} if expected_version is None else {"expected_version": expected_version}
        result: dict[str, Any] = self._json("POST", f"{_alias_path(name, alias)}/rollback", json=body)
        return result

    # -- traffic policy ------------------------------------------------------------------------

    def traffic_policy(self, name: str) -> dict[str, Any]:
        """``{"model", "policy", "revision"}``; ``policy`` is None when the model has none."""
        result: dict[str, Any] = self._json("GET", f"{_model_path(name)}/traffic")
        return result

    def set_traffic_policy(
        self, name: str, policy: dict[str, Any], *, expected_revision: int | None = None
    ) -> dict[str, Any]:
        """Replace the traffic policy; with ``expected_revision`` only if nobody changed it since (else Conflict)."""
        result: dict[str, Any] = self._json(
            "PUT", f"{_model_path(name)}/traffic", json=policy, headers=_if_match(expected_revision)
        )
        return result

    def clear_traffic_policy(self, name: str, *, expected_revision: int | None = None) -> None:
        """Remove the traffic policy (its history is kept)."""
        self._request("DELETE", f"{_model_path(name)}/traffic", headers=_if_match(expected_revision))

    def traffic_history(self, name: str) -> list[dict[str, Any]]:
        """Every change of the traffic policy, newest first (revision, old_policy, new_policy, who, when)."""
        result: list[dict[str, Any]] = self._json("GET", f"{_model_path(name)}/traffic/history")["history"]
        return result

    # -- version policy ------------------------------------------------------------------------

    def version_policy(self, name: str) -> dict[str, Any]:
        """Which versions stay loaded: ``{"keep": "aliased_and_latest", "latest": 1}`` or ``"explicit"``."""
        result: dict[str, Any] = self._json("GET", f"{_model_path(name)}/version-policy")["policy"]
        return result

    def set_version_policy(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        """Set which versions stay loaded; returns the stored policy."""
        result: dict[str, Any] = self._json("PUT", f"{_model_path(name)}/version-policy", json=policy)["policy"]
        return result

    # -- rollouts ------------------------------------------------------------------------------

    def start_rollout(
        self,
        name: str,
        to: int,
        *,
        steps: list[float] | None = None,
        interval: float | str | None = None,
        alias: str = "production",
        guards: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Start moving ``alias`` to version ``to`` through ``steps`` percent, ``interval`` per step."""
        body: dict[str, Any] = {"to": to, "alias": alias}
        if steps is not None:
            body["steps"] = steps
        if interval is not None:
            body["interval"] = interval
        if guards:
            body["guards"] = guards
        result: dict[str, Any] = self._json("POST", f"{_model_path(name)}/rollouts", json=body)
        return result

    def rollout(self, name: str) -> dict[str, Any]:
        """The model's latest rollout (NotFound if it never had one)."""
        result: dict[str, Any] = self._json("GET", f"{_model_path(name)}/rollouts/current")
        return result

    def rollouts(self, name: str) -> list[dict[str, Any]]:
        """Every rollout of the model, newest first."""
        result: list[dict[str, Any]] = self._json("GET", f"{_model_path(name)}/rollouts")["rollouts"]
        return result

    def pause_rollout(self, name: str, reason: str = "") -> dict[str, Any]:
        """Hold the running rollout at its current step."""
        return self._rollout_action(name, "pause", reason)

    def resume_rollout(self, name: str, reason: str = "") -> dict[str, Any]:
        """Continue a paused rollout (its current step starts over)."""
        return self._rollout_action(name, "resume", reason)

    def abort_rollout(self, name: str, reason: str = "") -> dict[str, Any]:
        """Stop the rollout; the alias stays on the version it pointed at."""
        return self._rollout_action(name, "abort", reason)

    def _rollout_action(self, name: str, action: str, reason: str) -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        result: dict[str, Any] = self._json("POST", f"{_model_path(name)}/rollouts/current/{action}", json=body)
        return result

    # -- feedback ------------------------------------------------------------------------------

    def send_feedback(self, name: str, items: list[dict[str, Any]]) -> int:
        """Record feedback (``request_id`` with ``reward`` and/or ``label``, optional ``version``); returns how many."""
        result: dict[str, Any] = self._json("POST", f"{_model_path(name)}/feedback", json={"items": items})
        return int(result["count"])

    def send_feedback_counts(self, name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Record feedback; returns ``{"count", "matched", "unmatched"}`` (unmatched: ids the server did not know)."""
        result: dict[str, Any] = self._json("POST", f"{_model_path(name)}/feedback", json={"items": items})
        return result

    def experiment_report(self, name: str, *, confidence: float = 0.95, baseline: int | None = None) -> dict[str, Any]:
        """The model's experiment report: its versions side by side, with a verdict per comparison."""
        params: dict[str, Any] = {"confidence": confidence}
        if baseline is not None:
            params["baseline"] = baseline
        result: dict[str, Any] = self._json("GET", f"{_model_path(name)}/experiment", params=params)
        return result


def _if_match(revision: int | None) -> dict[str, str]:
    return {} if revision is None else {"If-Match": f'"{int(revision)}"'}


def _model_path(name: str) -> str:
    return f"/api/v1/models/{quote(name, safe='')}"


def _alias_path(name: str, alias: str) -> str:
    return f"{_model_path(name)}/aliases/{quote(alias, safe='')}"
