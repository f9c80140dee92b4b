"""Management API for API keys and the audit trail (``/api/v1/keys``, ``/api/v1/audit``); admin only.

A created or rotated key's plaintext is in that one answer (``Cache-Control: no-store``) and
never again. Key changes are audited by the registry in their own transaction, naming the
caller (``key:<id>``, ``jwt:<subject>``, ``mtls:<CN>``) and its address; this process reloads its
key table right after, the others within a second (they follow the registry revision).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from ferryman.errors import InvalidInput
from ferryman.protocols.auth import Guard, audit_identity, principal_of, source_address
from ferryman.protocols.management_releases import json_response, read_object, refuse_unknown
from ferryman.registry.service import RegistryService
from ferryman.security.audit_filters import parse_moment
from ferryman.security.keys import KeyRecord, parse_duration

__all__ = ["SecurityApi"]

T = TypeVar("T")
KEY_ID = PathParam(pattern=r"^[a-z0-9]{12}$", description="Key id (the 12 characters after fm_)")
_CREATE_FIELDS = ("role", "models", "expires", "name")
_NO_STORE = {"Cache-Control": "no-store"}


def _created(record: KeyRecord, plaintext: str) -> Response:
    document = {"key": plaintext, **record.to_dict(datetime.now(UTC))}
    return json_response(document, 201, headers=_NO_STORE)


class SecurityApi:
    """Routes for keys and the audit trail, relative to ``/api/v1``."""

    def __init__(self, registry: RegistryService, guard: Guard, executor: Executor) -> None:
        self._registry = registry
        self._guard = guard
        self._executor = executor

    async def _blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def router(self) -> APIRouter:
        """The routes, mounted under ``/api/v1``."""
        api = APIRouter(prefix="/api/v1", tags=["security"])

        @api.post("/keys", status_code=201, summary="Create an API key (its secret is in this answer only)")
        async def create_key(request: Request) -> Response:
            body = await read_object(request)
            refuse_unknown(body, _CREATE_FIELDS)
            expires = body.get("expires")
            if expires is not None and not isinstance(expires, str):
                raise InvalidInput("expires: expected a duration such as 90d, 12h or 30m")
            name = body.get("name", "")
            if not isinstance(name, str):
                raise InvalidInput("name: expected a text")
            if "role" not in body:
                raise InvalidInput("role: required (admin, deployer, predictor or viewer)")
            record, plaintext = await self._blocking(
                self._registry.create_key,
                body["role"],
                body.get("models"),
                expires_in=None if expires is None else parse_duration(expires, option="expires"),
                name=name,
                created_by=audit_identity(principal_of(request.scope)),
                source_address=source_address(request.scope),
            )
            await self._guard.reload_keys()
            return _created(record, plaintext)

        @api.get("/keys", summary="List API keys (never their secrets)")
        async def list_keys(include_revoked: bool = Query(True, description="Include revoked keys")) -> Response:
            records = await self._blocking(self._registry.list_keys, include_revoked=include_revoked)
            now = datetime.now(UTC)
            return json_response({"keys": [record.to_dict(now) for record in records]})

        @api.delete("/keys/{key_id}", summary="Revoke an API key at once, on every replica")
        async def revoke_key(request: Request, key_id: str = KEY_ID) -> Response:
            record = await self._blocking(
                self._registry.revoke_key,
                key_id,
                by=audit_identity(principal_of(request.scope)),
                source_address=source_address(request.scope),
            )
            await self._guard.reload_keys()
            return json_response(record.to_dict(datetime.now(UTC)))

        @api.post("/keys/{key_id}/rotate", status_code=201, summary="Replace a key by a new one with the same rights")
        async def rotate_key(request: Request, key_id: str = KEY_ID) -> Response:
            body = await read_object(request, allow_empty=True)
            refuse_unknown(body, ("grace",))
            grace = body.get("grace")
            if grace is not None and not isinstance(grace, str):
                raise InvalidInput("grace: expected a duration such as 1h or 7d")
            record, plaintext = await self._blocking(
                self._registry.rotate_key,
                key_id,
                by=audit_identity(principal_of(request.scope)),
                grace=None if grace is None else parse_duration(grace, option="grace"),
                source_address=source_address(request.scope),
            )
            await self._guard.reload_keys()
            return _created(record, plaintext)

        @api.get("/audit", summary="Audit records, newest first, filtered")
        async def list_audit(
            principal: str | None = Query(None, description="Exact principal, such as key:abc123def456"),
            action: str | None = Query(None, description="Exact action, or a prefix ending in * (key.*)"),
            target: str | None = Query(None, description="Target prefix, such as models/churn"),
            outcome: str | None = Query(None, description="success, denied or failed"),
            since: str | None = Query(None, description="ISO-8601 time, or a duration ago (24h)"),
            until: str | None = Query(None, description="ISO-8601 time, or a duration ago"),
            before_seq: int | None = Query(None, ge=1, description="Page back from this sequence number"),
            limit: int = Query(100, ge=1, le=10_000),
        ) -> Response:
            now = datetime.now(UTC)
            records = await self._blocking(
                self._registry.list_audit,
                principal=principal,
                action=action,
                target_prefix=target,
                outcome=outcome,
                since=None if since is None else parse_moment(since, option="since", now=now),
                until=None if until is None else parse_moment(until, option="until", now=now),
                before_seq=before_seq,
                limit=limit,
            )
            return json_response({"records": [record.to_dict() for record in records]})

        @api.get("/audit/verify", summary="Check the whole hash chain: any edited, deleted or moved record")
        async def verify_audit() -> Response:
            result = await self._blocking(self._registry.verify_audit)
            seq, head = await self._blocking(self._registry.audit_head)
            return json_response({**result.to_dict(), "head": {"seq": seq, "hash": head}})

        return api
