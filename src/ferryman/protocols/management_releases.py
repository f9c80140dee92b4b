"""Management routes for versions in production: rollback, traffic policy, version policy, rollouts, feedback.

Mounted under ``/api/v1`` by :class:`~ferryman.protocols.management.ManagementApi`. A thin
adapter like the rest of the management API: decode, call the registry (in the executor), encode.
Writes that make a version serve (rollback, a policy naming a version, a rollout's target) load
that version first, so nothing points at a version this server cannot serve; every write awaits
a catalog refresh before it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from starlette.responses import Response

from ferryman.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from ferryman.registry.records import RolloutRecord, TrafficPolicyChange, VersionPolicy
from ferryman.registry.service import RegistryService
from ferryman.registry.traffic_spec import parse_traffic_policy
from ferryman.serving.manager import ModelManager
from ferryman.serving.sync import CatalogSync

__all__ = ["ReleaseApi", "json_response", "read_object", "refuse_unknown"]

T = TypeVar("T")
NAME = PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Model name")
ALIAS = PathParam(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="Alias name")

#: Bodies of these routes are small documents; feedback batches may be larger.
_MAX_BODY = 1 << 20

_ROLLOUT_FIELDS = ("to", "steps", "interval", "alias", "guards")
_DEFAULT_STEPS = [5, 25, 50, 100]
_DEFAULT_INTERVAL = "10m"


def json_response(document: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response (orjson)."""
    return Response(orjson.dumps(document), status_code=status, media_type="application/json", headers=headers)


def _body_schema(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` describing a JSON body read by hand (so FastAPI does not validate it)."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


_TRAFFIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Traffic policy (docs/api.md): split, sticky, shadow, bandit",
    "example": {
        "split": [{"target": "production", "weight": 90}, {"target": "candidate", "weight": 10}],
        "sticky": {"header": "x-ferryman-route-key"},
    },
}
_ROLLOUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["to"],
    "properties": {
        "to": {"type": "integer", "minimum": 1},
        "steps": {"type": "array", "items": {"type": "number"}, "default": _DEFAULT_STEPS},
        "interval": {"oneOf": [{"type": "string", "example": "10m"}, {"type": "number"}], "default": "10m"},
        "alias": {"type": "string", "default": "production"},
        "guards": {
            "type": "object",
            "properties": {
                "max_error_rate": {"oneOf": [{"type": "number"}, {"type": "string", "example": "1%"}]},
                "max_p99_ms": {"type": "number"},
                "min_agreement": {"oneOf": [{"type": "number"}, {"type": "string", "example": "95%"}]},
            },
        },
    },
}


def etag(revision: int) -> str:
    """The ETag of a traffic policy at ``revision``."""
    return f'"{revision}"'


def parse_if_match(value: str | None) -> int | None:
    """The revision an ``If-Match`` header expects; None when absent or ``*``."""
    if value is None or value.strip() == "*":
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise InvalidInput(f'If-Match: expected the ETag of the traffic policy, like "3", got {value!r}')
    return int(text)


class ReleaseApi:
    """Builds the release-management routes (no prefix; ManagementApi mounts them under /api/v1)."""

    def __init__(self, registry: RegistryService, manager: ModelManager, sync: CatalogSync, executor: Executor) -> None:
        self._registry = registry
        self._manager = manager
        self._sync = sync
        self._executor = executor

    async def _blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def _write(self, fn: Callable[..., T], name: str, *args: Any, **kwargs: Any) -> T:
        """Run a registry write, then refresh the catalog so the next request sees it."""
        if self._manager.has_repository_model(name):
            raise Conflict(f"model '{name}' is served from a read-only repository folder; it has no release settings")
        result = await self._blocking(fn, name, *args, **kwargs)
        await self._sync.refresh()
        return result

    async def _read(self, fn: Callable[..., T], name: str, default: T) -> T:
        """Run a registry read; a repository model (not in the registry) gets ``default``."""
        try:
            return await self._blocking(fn, name)
        except NotFound:
            if self._manager.has_repository_model(name):
                return default
            raise

    async def _load(self, name: str, version: int) -> None:
        """Load a version this process knows before a write makes it serve (unknown ones are the registry's 404)."""
        model = self._manager.catalog_models().get(name)
        if model is not None and version in model.versions:
            await self._manager.load(name, version)

    # -- routes -----------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        """The routes, relative to ``/api/v1``."""
        api = APIRouter(tags=["releases"])

        @api.post(
            "/models/{name}/aliases/{alias}/rollback",
            summary="Point an alias back at the version it pointed at before its latest change",
            openapi_extra=_body_schema(
                {"type": "object", "properties": {"expected_version": {"type": "integer", "minimum": 1}}},
                required=False,
            ),
        )
        async def rollback(request: Request, name: str = NAME, alias: str = ALIAS) -> Response:
            body = await read_object(request, allow_empty=True)
            refuse_unknown(body, ("expected_version",))
            expected = _optional_version(body.get("expected_version"), "expected_version")
            current, previous = await self._blocking(self._registry.rollback_target, name, alias)
            await self._load(name, previous)
            before, after = await self._write(
                self._registry.rollback_alias, name, alias, expected_version=expected or current
            )
            return json_response({"model": name, "alias": alias, "version": after, "previous": before})

        @api.get("/models/{name}/traffic", summary="Show the model's traffic policy (ETag = its revision)")
        async def get_traffic(name: str = NAME) -> Response:
            none: tuple[dict[str, Any] | None, int] = (None, 0)
            policy, revision = await self._read(self._registry.get_traffic_policy, name, none)
            return json_response(
                {"model": name, "policy": policy, "revision": revision}, headers={"ETag": etag(revision)}
            )

        @api.put(
            "/models/{name}/traffic",
            summary="Replace the model's traffic policy (If-Match: its ETag, for a safe update)",
            openapi_extra=_body_schema(_TRAFFIC_SCHEMA),
        )
        async def set_traffic(request: Request, name: str = NAME) -> Response:
            expected = parse_if_match(request.headers.get("if-match"))
            policy = await read_object(request)
            for target in sorted(parse_traffic_policy(policy).targets()):
                if target.isdigit():
                    await self._load(name, int(target))
            revision = await self._write(self._registry.set_traffic_policy, name, policy, expected_revision=expected)
            return json_response(
                {"model": name, "policy": policy, "revision": revision}, headers={"ETag": etag(revision)}
            )

        @api.delete("/models/{name}/traffic", status_code=204, summary="Remove the model's traffic policy")
        async def clear_traffic(request: Request, name: str = NAME) -> Response:
            expected = parse_if_match(request.headers.get("if-match"))
            revision = await self._write(self._registry.clear_traffic_policy, name, expected_revision=expected)
            return Response(status_code=204, headers={"ETag": etag(revision)})

        @api.get("/models/{name}/traffic/history", summary="Every change of the traffic policy, newest first")
        async def traffic_history(name: str = NAME) -> Response:
            changes: list[TrafficPolicyChange] = await self._read(self._registry.traffic_policy_history, name, [])
            return json_response({"history": [change.to_dict() for change in changes]})

        @api.get("/models/{name}/version-policy", summary="Which versions of the model stay loaded")
        async def get_version_policy(name: str = NAME) -> Response:
            policy = await self._read(self._registry.get_version_policy, name, VersionPolicy())
            return json_response({"model": name, "policy": policy.to_dict()})

        @api.put(
            "/models/{name}/version-policy",
            summary="Set which versions stay loaded",
            openapi_extra=_body_schema(
                {
                    "type": "object",
                    "example": {"keep": "aliased_and_latest", "latest": 1},
                    "description": '{"keep": "aliased_and_latest", "latest": N} or {"keep": "explicit", '
                    '"versions": [3, 4]}',
                }
            ),
        )
        async def set_version_policy(request: Request, name: str = NAME) -> Response:
            body = await read_object(request)
            policy = await self._write(self._registry.set_version_policy, name, body)
            return json_response({"model": name, "policy": policy.to_dict()})

        @api.post(
            "/models/{name}/rollouts",
            status_code=201,
            summary="Start a progressive rollout of an alias to a version",
            openapi_extra=_body_schema(_ROLLOUT_SCHEMA),
        )
        async def start_rollout(request: Request, name: str = NAME) -> Response:
            body = await read_object(request)
            refuse_unknown(body, _ROLLOUT_FIELDS)
            if "to" not in body:
                raise InvalidInput("to: required (the version to roll out)")
            to_version = _optional_version(body["to"], "to")
            assert to_version is not None
            await self._load(name, to_version)
            record = await self._write(
                self._registry.start_rollout,
                name,
                to_version=to_version,
                steps=body.get("steps", _DEFAULT_STEPS),
                interval=body.get("interval", _DEFAULT_INTERVAL),
                alias=body.get("alias", "production"),
                guards=body.get("guards"),
            )
            return json_response(record.to_dict(), 201)

        @api.get("/models/{name}/rollouts", summary="Every rollout of the model, newest first")
        async def list_rollouts(name: str = NAME) -> Response:
            records: list[RolloutRecord] = await self._read(self._registry.list_rollouts, name, [])
            return json_response({"rollouts": [record.to_dict() for record in records]})

        @api.get("/models/{name}/rollouts/current", summary="The model's latest rollout")
        async def current_rollout(name: str = NAME) -> Response:
            record = await self._read(self._registry.get_rollout, name, None)
            if record is None:
                raise NotFound(f"model '{name}' has no rollout")
            return json_response(record.to_dict())

        for action in ("pause", "resume", "abort"):
            api.add_api_route(
                f"/models/{{name}}/rollouts/current/{action}",
                self._rollout_action(action),
                methods=["POST"],
                summary=f"{action.capitalize()} the model's rollout",
                openapi_extra=_body_schema(
                    {"type": "object", "properties": {"reason": {"type": "string"}}}, required=False
                ),
            )

        return api

    def _rollout_action(self, action: str) -> Callable[..., Any]:
        method = {
            "pause": self._registry.pause_rollout,
            "resume": self._registry.resume_rollout,
            "abort": self._registry.abort_rollout,
        }[action]

        async def route(request: Request, name: str = NAME) -> Response:
            body = await read_object(request, allow_empty=True)
            refuse_unknown(body, ("reason",))
            reason = body.get("reason", "")
            if not isinstance(reason, str) or len(reason) > 1000:
                raise InvalidInput("reason: expected a text of at most 1000 characters")
            record = await self._write(method, name, reason=reason)
            return json_response(record.to_dict())

        route.__name__ = f"{action}_rollout"
        return route


async def read_object(request: Request, *, limit: int = _MAX_BODY, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, read up to ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if allow_empty:
            return {}
        raise InvalidInput("body: expected a JSON object")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("body: expected a JSON object")
    return document


def refuse_unknown(body: dict[str, Any], known: tuple[str, ...]) -> None:
    """InvalidInput naming the first field of ``body`` not in ``known``."""
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown field (fields: {', '.join(known)})")


def _optional_version(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{field}: expected a positive version number, got {value!r}")
    return value
