"""The pure ASGI middleware in front of FastAPI: look the route up in the one table, admit, audit writes.

Every request is matched against :data:`~ferryman.protocols.route_permissions.ROUTES` (not
against FastAPI's router, so plain Starlette routes and anything mounted later are covered the
same way); a request matching no declared route needs ``admin`` on every model. The admitted
principal is left in the scope (:func:`~ferryman.protocols.auth.principal_of`) for routes that
filter by it. Routes with an audit ``action`` are recorded after the answer, with the status
deciding the outcome (2xx/3xx success, 401/403 denied, other failed) and the error message, if
any, in the details.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferryman.errors import FerrymanError
from ferryman.protocols.auth import PRINCIPAL_KEY, Guard, audit_identity, error_headers, source_address
from ferryman.protocols.http_errors import error_body
from ferryman.protocols.request_id import REQUEST_ID
from ferryman.protocols.route_permissions import UNDECLARED, RouteRule, RouteTable
from ferryman.security.audit import AuditEntry, Outcome
from ferryman.security.principal import Principal

__all__ = ["AuthMiddleware", "send_refusal"]

_PARAMETER = re.compile(r"\{(\w+)(?::\w+)?\}")
_API_PREFIX = "/api/v1/"
_MAX_CAPTURE = 64 * 1024


async def send_refusal(send: Send, error: FerrymanError) -> None:
    """Answer with ``{"error": ...}`` and the refusal's headers."""
    body = error_body(error.message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(error_headers(error))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _target(template: str, params: dict[str, str]) -> str:
    path = _PARAMETER.sub(lambda m: params.get(m.group(1), m.group(0)), template)
    return path.removeprefix(_API_PREFIX)


def _outcome(status: int) -> Outcome:
    if status < 400:
        return "success"
    return "denied" if status in (401, 403) else "failed"


class AuthMiddleware:
    """Admits each request by its route's rule (see the module docstring)."""

    def __init__(self, app: ASGIApp, guard: Guard, table: RouteTable | None = None) -> None:
        self.app = app
        self._guard = guard
        self._table = table or RouteTable()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = self._table.match(scope["method"], scope["path"])
        rule, template, params = found if found is not None else (UNDECLARED, "", {})
        if rule.permission is None or (rule.scrape and self._guard.metrics_open):
            await self.app(scope, receive, send)
            return
        model = params.get(rule.model) if rule.model is not None else None
        try:
            principal = await self._guard.admit(scope, rule.permission, model)
        except FerrymanError as exc:
            await send_refusal(send, exc)
            return
        scope[PRINCIPAL_KEY] = principal
        if rule.action is None:
            await self.app(scope, receive, send)
            return
        await self._audited(scope, receive, send, rule, _target(template, params), principal)

    async def _audited(
        self, scope: Scope, receive: Receive, send: Send, rule: RouteRule, target: str, principal: Principal
    ) -> None:
        status = 500
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and len(body) < _MAX_CAPTURE:
                body.extend(message.get("body", b"")[: _MAX_CAPTURE - len(body)])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            outcome = _outcome(status)
            if outcome != "success" or rule.audit_success:
                details: dict[str, Any] = {"status": status, "request_id": REQUEST_ID.get()}
                if principal.source == "key":
                    details["key_name"] = principal.name
                target = self._describe(rule, target, outcome, bytes(body), details)
                assert rule.action is not None
                entry = AuditEntry(
                    audit_identity(principal), rule.action, target, outcome, source_address(scope), details
                )
                self._guard.trail.record(entry)

    @staticmethod
    def _describe(rule: RouteRule, target: str, outcome: Outcome, body: bytes, details: dict[str, Any]) -> str:
        """Add what the answer tells (the error; a push's version number) to the record; returns the target."""
        try:
            document = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            return target
        if outcome != "success":
            details["error"] = str(document.get("error", ""))[:1000]
        elif rule.action == "version.push" and isinstance(document.get("version"), dict):
            number = document["version"].get("version")
            details["created"] = bool(document.get("created"))
            if isinstance(number, int):
                return target.replace("/versions", f"/versions/{number}", 1) if target.endswith("/versions") else target
        return target
