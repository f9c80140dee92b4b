"""Management API for alerts, webhooks and live accuracy (relative to ``/api/v1``).

- ``GET /alerts``: every rule's state per target, and the recent events;
- ``GET|POST /alerts/rules``, ``GET|DELETE /alerts/rules/{rule}``: alert rules (``monitoring/alert_rules.py``);
- ``GET|POST /alerts/webhooks``, ``DELETE /alerts/webhooks/{webhook}``, ``GET /alerts/deliveries``:
  webhooks and their deliveries. A webhook's secret is returned once, when the server generated it
  at creation, and never again;
- ``GET /models/{m}/accuracy?window=1h&buckets=24[&version=N]``: live accuracy per version and bucket.

Principals limited to some models see only those models' rules, states and events, may manage
rules that name one of their models exactly, and manage only webhooks whose ``models`` their scope
covers (a webhook they create receives their models' events only).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from ferryman.errors import Forbidden, InvalidInput, NotFound
from ferryman.monitoring.accuracy import MAX_BUCKETS, accuracy_document
from ferryman.monitoring.alert_rules import parse_rule, validate_rule_name, validate_severity
from ferryman.protocols.auth import audit_identity, principal_of
from ferryman.protocols.management_releases import NAME, json_response, read_object, refuse_unknown
from ferryman.registry.core import utc_now
from ferryman.registry.rollout_spec import parse_duration
from ferryman.registry.service import RegistryService
from ferryman.security.permissions import validate_model_scope
from ferryman.security.principal import Principal

__all__ = ["AlertApi"]

T = TypeVar("T")
RULE = PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Alert rule name")
WEBHOOK = PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Webhook name")
_WEBHOOK_FIELDS = ("name", "url", "secret", "min_severity", "models")
_MIN_SECRET, _MAX_SECRET = 16, 255
_MAX_URL = 2000
_MAX_ACCURACY_SPAN_S = 90 * 86400.0


class AlertApi:
    """Routes for alert rules, alert state, webhooks and live accuracy."""

    def __init__(self, registry: RegistryService, executor: Executor, known_model: Callable[[str], object]) -> None:
        self._registry = registry
        self._executor = executor
        self._known_model = known_model  # raises NotFound for a model this server does not know

    async def _blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def router(self) -> APIRouter:
        """The routes, relative to ``/api/v1``."""
        api = APIRouter(tags=["alerts"])

        @api.get("/alerts", summary="Current state of every alert rule per target, and recent events")
        async def alerts(request: Request, limit: int = Query(50, ge=1, le=1000)) -> Response:
            principal = principal_of(request.scope)
            rules = await self._blocking(self._registry.list_alert_rules)
            states = await self._blocking(self._registry.list_alert_states)
            events = await self._blocking(self._registry.list_alert_events, limit=limit)
            by_id = {stored.id: stored.rule for stored in rules}
            current = [
                {
                    "rule": by_id[state.rule_id].name,
                    "severity": by_id[state.rule_id].severity,
                    "signal": by_id[state.rule_id].signal,
                    "target": state.target,
                    "state": state.state,
                    "value": state.value,
                    "since": state.since.isoformat() if state.since else None,
                    "fired_at": state.fired_at.isoformat() if state.fired_at else None,
                    "updated_at": state.updated_at.isoformat(),
                }
                for state in states
                if state.rule_id in by_id and _sees(principal, state.target.rsplit(":", 1)[0])
            ]
            visible = [event.to_dict() for event in events if _sees(principal, event.target.rsplit(":", 1)[0])]
            return json_response({"alerts": current, "events": visible})

        @api.get("/alerts/rules", summary="Every alert rule")
        async def list_rules(request: Request) -> Response:
            principal = principal_of(request.scope)
            rules = await self._blocking(self._registry.list_alert_rules)
            return json_response({"rules": [s.to_dict() for s in rules if _may_manage(principal, s.rule.model)]})

        @api.post("/alerts/rules", status_code=201, summary="Create an alert rule")
        async def create_rule(request: Request) -> Response:
            rule = parse_rule(await read_object(request))
            principal = principal_of(request.scope)
            _check_rule_scope(principal, rule.model)
            stored = await self._blocking(self._registry.create_alert_rule, rule, created_by=audit_identity(principal))
            return json_response(stored.to_dict(), 201)

        @api.get("/alerts/rules/{rule}", summary="One alert rule")
        async def get_rule(request: Request, rule: str = RULE) -> Response:
            stored = await self._blocking(self._registry.get_alert_rule, rule)
            if not _may_manage(principal_of(request.scope), stored.rule.model):
                raise NotFound(f"no alert rule named '{rule}'")
            return json_response(stored.to_dict())

        @api.delete("/alerts/rules/{rule}", status_code=204, summary="Delete an alert rule (its events stay)")
        async def delete_rule(request: Request, rule: str = RULE) -> Response:
            stored = await self._blocking(self._registry.get_alert_rule, rule)
            _check_rule_scope(principal_of(request.scope), stored.rule.model)
            await self._blocking(self._registry.delete_alert_rule, rule)
            return Response(status_code=204)

        @api.get("/alerts/webhooks", summary="Every webhook (never its secret)")
        async def list_webhooks(request: Request) -> Response:
            principal = principal_of(request.scope)
            hooks = await self._blocking(self._registry.list_webhooks)
            return json_response({"webhooks": [hook for hook in hooks if _may_use(principal, hook["models"])]})

        @api.post("/alerts/webhooks", status_code=201, summary="Create a webhook for firing and resolved events")
        async def create_webhook(request: Request) -> Response:
            principal = principal_of(request.scope)
            body = await read_object(request)
            refuse_unknown(body, _WEBHOOK_FIELDS)
            name = validate_rule_name(body.get("name"))
            url = _webhook_url(body.get("url"))
            min_severity = validate_severity(body.get("min_severity", "info"), "min_severity")
            models = validate_model_scope(body.get("models"))
            if models is None:
                models = principal.models  # a limited principal's webhook hears its models only
            if not _may_use(principal, models):
                raise Forbidden(
                    f"'{principal.name}' is limited to some models; models: {list(models or [])} exceed them"
                )
            secret = body.get("secret")
            generated = secret is None
            if generated:
                secret = secrets.token_hex(32)
            elif (
                not isinstance(secret, str) or not _MIN_SECRET <= len(secret) <= _MAX_SECRET or not secret.isprintable()
            ):
                raise InvalidInput(
                    f"secret: expected {_MIN_SECRET} to {_MAX_SECRET} printable characters (omit it to get one)"
                )
            hook = await self._blocking(
                self._registry.create_webhook,
                name,
                url,
                secret,
                min_severity,
                models,
                created_by=audit_identity(principal),
            )
            if generated:
                hook["secret"] = secret  # shown this once
            return json_response(hook, 201)

        @api.delete("/alerts/webhooks/{webhook}", status_code=204, summary="Delete a webhook and its deliveries")
        async def delete_webhook(request: Request, webhook: str = WEBHOOK) -> Response:
            hook = await self._blocking(self._registry.get_webhook, webhook)
            if not _may_use(principal_of(request.scope), hook["models"]):
                raise Forbidden(f"webhook '{webhook}' receives events of models outside your scope")
            await self._blocking(self._registry.delete_webhook, webhook)
            return Response(status_code=204)

        @api.get("/alerts/deliveries", summary="The newest webhook deliveries with their state and last error")
        async def deliveries(request: Request, limit: int = Query(100, ge=1, le=1000)) -> Response:
            principal = principal_of(request.scope)
            hooks = await self._blocking(self._registry.list_webhooks)
            mine = {hook["name"] for hook in hooks if _may_use(principal, hook["models"])}
            found = await self._blocking(self._registry.list_deliveries, limit=limit)
            return json_response({"deliveries": [d for d in found if d["webhook"] in mine]})

        @api.get("/models/{name}/accuracy", summary="Live accuracy per version and time bucket, from labelled feedback")
        async def accuracy(
            name: str = NAME,
            window: str = Query("1h", description="Bucket length, like 10m or 1h"),
            buckets: int = Query(24, ge=1, le=MAX_BUCKETS, description="Number of buckets, ending now"),
            version: int | None = Query(None, ge=1, description="Only this version"),
        ) -> Response:
            window_s = parse_duration(window, "window")
            if window_s * buckets > _MAX_ACCURACY_SPAN_S:
                raise InvalidInput("buckets: window times buckets must cover at most 90 days")
            self._known_model(name)
            now = utc_now()
            rows = await self._blocking(
                self._registry.labelled_feedback_since, name, now - timedelta(seconds=window_s * buckets)
            )
            return json_response(
                accuracy_document(name, rows, now=now, window_s=window_s, buckets=buckets, version=version)
            )

        return api


def _sees(principal: Principal, model: str) -> bool:
    return principal.models is None or principal.covers(model)


def _may_manage(principal: Principal, pattern: str) -> bool:
    """Whether a principal may see or change a rule naming ``pattern``."""
    if principal.models is None:
        return True
    return not any(char in pattern for char in "*?[") and principal.covers(pattern)


def _check_rule_scope(principal: Principal, pattern: str) -> None:
    if not _may_manage(principal, pattern):
        raise Forbidden(
            f"'{principal.name}' is limited to some models; a rule on {pattern!r} needs access to every model it names"
        )


def _may_use(principal: Principal, models: Any) -> bool:
    """Whether a principal's scope covers every entry of a webhook's ``models`` (None: every model)."""
    if principal.models is None:
        return True
    return models is not None and all(principal.covers(entry) for entry in models)


def _webhook_url(value: Any) -> str:
    if not isinstance(value, str) or len(value) > _MAX_URL:
        raise InvalidInput(f"url: expected an http:// or https:// address of at most {_MAX_URL} characters")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"url: expected an http:// or https:// address, got {value!r}")
    if parts.username or parts.password:
        raise InvalidInput("url: must not carry credentials; the signature authenticates deliveries")
    return value
