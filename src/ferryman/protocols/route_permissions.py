"""The one table: every HTTP route, the permission it needs, the model it acts on, and how it is audited.

:data:`ROUTES` maps ``(method, path template)`` to a :class:`RouteRule`. The auth middleware
(``protocols/auth.py``) and the inference endpoint look requests up here; a request matching no
entry needs ``admin`` on every model (fail closed), and ``tests/security`` walks the app's real
route table and fails for any route missing here. Adding a route means adding its line.

``model`` names the path parameter holding the model, for roles limited to some models; list
routes without one filter their answers by the principal instead (``GET /api/v1/models``).
``action`` is the audit trail's action for writes (recorded with principal, target, outcome and
source address after the answer); ``audit_success=False`` where the registry already audits the
success in the write's own transaction (key changes), so only refusals and failures are added.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path

from ferryman.security.permissions import Permission

__all__ = [
    "GRPC_METHODS",
    "INFERENCE_ROUTES",
    "ROUTES",
    "UNDECLARED",
    "RouteRule",
    "RouteTable",
    "app_routes",
    "undeclared",
]


@dataclass(frozen=True, slots=True)
class RouteRule:
    """What one route needs: a permission (None = open to everyone), the model's path parameter, audit."""

    permission: Permission | None
    model: str | None = None
    action: str | None = None
    audit_success: bool = True
    scrape: bool = False
    """``/metrics``: open when the ``metrics_auth`` setting is off."""


#: What a request matching no declared route needs: everything (it is answered 404 for an admin).
UNDECLARED = RouteRule(Permission.ADMIN)

#: The inference endpoint's routes, answered by ``protocols/v2_infer.py`` in front of FastAPI.
INFERENCE_ROUTES = (("POST", "/v2/models/{model}/infer"), ("POST", "/v2/models/{model}/versions/{version}/infer"))

_P = Permission
_M = "/api/v1/models/{name}"
_V = _M + "/versions/{version}"
_A = _M + "/aliases/{alias}"
_R = _M + "/rollouts/current"


def _read(model: str | None = "name") -> RouteRule:
    return RouteRule(_P.READ, model)


def _write(permission: Permission, action: str) -> RouteRule:
    return RouteRule(permission, "name", action)


ROUTES: Mapping[tuple[str, str], RouteRule] = {
    # Health stays open so orchestrators can probe; metrics per the metrics_auth setting.
    ("GET", "/v2/health/live"): RouteRule(None),
    ("GET", "/v2/health/ready"): RouteRule(None),
    ("GET", "/metrics"): RouteRule(_P.METRICS, scrape=True),
    # API documentation
    ("GET", "/openapi.json"): _read(None),
    ("GET", "/docs"): _read(None),
    ("GET", "/docs/oauth2-redirect"): _read(None),
    ("GET", "/redoc"): _read(None),
    # Open Inference Protocol: metadata and readiness belong to inference (Triton/KServe clients need them)
    ("GET", "/v2"): RouteRule(_P.INFER),
    ("GET", "/v2/models/{model}"): RouteRule(_P.INFER, "model"),
    ("GET", "/v2/models/{model}/versions/{version}"): RouteRule(_P.INFER, "model"),
    ("GET", "/v2/models/{model}/ready"): RouteRule(_P.INFER, "model"),
    ("GET", "/v2/models/{model}/versions/{version}/ready"): RouteRule(_P.INFER, "model"),
    **{route: RouteRule(_P.INFER, "model") for route in INFERENCE_ROUTES},
    # Models and versions
    ("GET", "/api/v1/models"): _read(None),
    ("GET", _M): _read(),
    ("DELETE", _M): _write(_P.DELETE, "model.delete"),
    ("GET", _M + "/versions"): _read(),
    ("POST", _M + "/versions"): _write(_P.PUSH, "version.push"),
    ("GET", _V): _read(),
    ("DELETE", _V): _write(_P.DELETE, "version.delete"),
    ("POST", _V + "/load"): _write(_P.LOAD, "version.load"),
    ("POST", _V + "/unload"): _write(_P.LOAD, "version.unload"),
    ("GET", _V + "/drift"): _read(),
    # Aliases
    ("GET", _M + "/aliases"): _read(),
    ("PUT", _A): _write(_P.ALIAS, "alias.set"),
    ("DELETE", _A): _write(_P.ALIAS, "alias.delete"),
    ("GET", _A + "/history"): _read(),
    ("POST", _A + "/rollback"): _write(_P.ALIAS, "alias.rollback"),
    # Traffic and version policies
    ("GET", _M + "/traffic"): _read(),
    ("PUT", _M + "/traffic"): _write(_P.TRAFFIC, "traffic.set"),
    ("DELETE", _M + "/traffic"): _write(_P.TRAFFIC, "traffic.clear"),
    ("GET", _M + "/traffic/history"): _read(),
    ("GET", _M + "/version-policy"): _read(),
    ("PUT", _M + "/version-policy"): _write(_P.POLICY, "version_policy.set"),
    # Rollouts
    ("POST", _M + "/rollouts"): _write(_P.ROLLOUT, "rollout.start"),
    ("GET", _M + "/rollouts"): _read(),
    ("GET", _R): _read(),
    ("POST", _R + "/pause"): _write(_P.ROLLOUT, "rollout.pause"),
    ("POST", _R + "/resume"): _write(_P.ROLLOUT, "rollout.resume"),
    ("POST", _R + "/abort"): _write(_P.ROLLOUT, "rollout.abort"),
    # Experiments (feedback arrives at request rate: not audited)
    ("POST", _M + "/feedback"): RouteRule(_P.FEEDBACK, "name"),
    ("GET", _M + "/experiment"): _read(),
    ("GET", _M + "/accuracy"): _read(),
    # Alerts: read by viewers; rules and webhooks managed with 'alerts' (webhook URLs may be secrets)
    ("GET", "/api/v1/alerts"): _read(None),
    ("GET", "/api/v1/alerts/rules"): _read(None),
    ("POST", "/api/v1/alerts/rules"): RouteRule(_P.ALERTS, None, "alert_rule.create"),
    ("GET", "/api/v1/alerts/rules/{rule}"): _read(None),
    ("DELETE", "/api/v1/alerts/rules/{rule}"): RouteRule(_P.ALERTS, None, "alert_rule.delete"),
    ("GET", "/api/v1/alerts/webhooks"): RouteRule(_P.ALERTS),
    ("POST", "/api/v1/alerts/webhooks"): RouteRule(_P.ALERTS, None, "webhook.create"),
    ("DELETE", "/api/v1/alerts/webhooks/{webhook}"): RouteRule(_P.ALERTS, None, "webhook.delete"),
    ("GET", "/api/v1/alerts/deliveries"): RouteRule(_P.ALERTS),
    # Keys and the audit trail (the registry audits key changes in their own transaction)
    ("POST", "/api/v1/keys"): RouteRule(_P.KEYS, None, "key.create", audit_success=False),
    ("GET", "/api/v1/keys"): RouteRule(_P.KEYS),
    ("DELETE", "/api/v1/keys/{key_id}"): RouteRule(_P.KEYS, None, "key.revoke", audit_success=False),
    ("POST", "/api/v1/keys/{key_id}/rotate"): RouteRule(_P.KEYS, None, "key.rotate", audit_success=False),
    ("GET", "/api/v1/audit"): RouteRule(_P.AUDIT),
    ("GET", "/api/v1/audit/verify"): RouteRule(_P.AUDIT),
}

#: The V2 gRPC methods (``protocols/v2_grpc.py``), each with the rule of its REST twin, so both
#: protocols admit exactly the same callers. ``model`` is set where the request names a model.
GRPC_METHODS: Mapping[str, RouteRule] = {
    "ServerLive": ROUTES[("GET", "/v2/health/live")],
    "ServerReady": ROUTES[("GET", "/v2/health/ready")],
    "ServerMetadata": ROUTES[("GET", "/v2")],
    "ModelMetadata": ROUTES[("GET", "/v2/models/{model}/versions/{version}")],
    "ModelReady": ROUTES[("GET", "/v2/models/{model}/versions/{version}/ready")],
    "ModelInfer": ROUTES[INFERENCE_ROUTES[1]],
}


@dataclass(frozen=True, slots=True)
class _Compiled:
    template: str
    regex: re.Pattern[str]
    rules: dict[str, RouteRule]


class RouteTable:
    """Finds the rule for a request (``HEAD`` is ``GET``); templates with more literal segments win."""

    def __init__(self, routes: Mapping[tuple[str, str], RouteRule] = ROUTES) -> None:
        by_template: dict[str, dict[str, RouteRule]] = {}
        for (method, template), rule in routes.items():
            by_template.setdefault(template, {})[method] = rule
        compiled = [_Compiled(t, compile_path(t)[0], rules) for t, rules in by_template.items()]
        compiled.sort(key=lambda c: -sum(1 for part in c.template.split("/") if part and "{" not in part))
        self._compiled = compiled
        self._exact = {c.template: c for c in compiled if "{" not in c.template}

    def match(self, method: str, path: str) -> tuple[RouteRule, str, dict[str, str]] | None:
        """``(rule, template, path parameters)`` for a request, or None when no declared route matches."""
        if method == "HEAD":
            method = "GET"
        exact = self._exact.get(path)
        if exact is not None:
            rule = exact.rules.get(method)
            if rule is not None:
                return rule, exact.template, {}
        for entry in self._compiled:
            found = entry.regex.match(path)
            if found is not None:
                rule = entry.rules.get(method)
                if rule is not None:
                    return rule, entry.template, found.groupdict()
        return None


def app_routes(app: Any) -> list[tuple[str, str]]:
    """Every ``(method, path template)`` an app built by ``create_app`` serves (HEAD left out).

    Follows the wrappers' ``app`` attributes down to the FastAPI app, lists its routes (those of
    included routers too) and adds the inference endpoint's.
    """
    from fastapi import FastAPI
    from fastapi.routing import iter_route_contexts

    inner = app
    while not isinstance(inner, FastAPI):
        inner = inner.app
    found: set[tuple[str, str]] = set(INFERENCE_ROUTES)
    for route in iter_route_contexts(inner.routes):
        path = route.path
        if path is None:
            continue
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, path))
    return sorted(found, key=lambda item: (item[1], item[0]))


def undeclared(routes: Iterable[tuple[str, str]], table: Mapping[tuple[str, str], RouteRule] = ROUTES) -> list[str]:
    """The routes in ``routes`` that the table does not declare, as ``METHOD path``."""
    return [f"{method} {path}" for method, path in routes if (method, path) not in table]
