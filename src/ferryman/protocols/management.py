"""Management REST API (``/api/v1``): models, versions (streaming upload), aliases, load/unload.

Rollback, traffic and version policies, rollouts and feedback live in ``management_releases.py``.

A thin adapter: it parses the request, calls the registry service, intake or manager, and
encodes the answer. Writes await a catalog refresh so the next request sees them.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import APIRouter, Body, Request
from fastapi import Path as PathParam
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ferryman.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from ferryman.protocols.auth import principal_of
from ferryman.protocols.management_experiments import ExperimentApi
from ferryman.protocols.management_monitoring import MonitoringApi
from ferryman.protocols.management_releases import ReleaseApi
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.intake import IntakeRequest, ModelIntake
from ferryman.registry.service import RegistryService
from ferryman.serving.catalog import CatalogModel, CatalogVersion
from ferryman.serving.manager import ModelManager
from ferryman.serving.sync import CatalogSync

__all__ = ["ManagementApi"]

T = TypeVar("T")
NAME = PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", description="Model name")
VERSION = PathParam(ge=1, description="Version number")


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


class ManagementApi:
    """Builds the ``/api/v1`` router over the registry, intake and manager."""

    def __init__(
        self,
        registry: RegistryService,
        intake: ModelIntake,
        artifacts: ArtifactStore,
        manager: ModelManager,
        sync: CatalogSync,
        executor: Executor,
        max_upload_bytes: int,
        experiments: ExperimentApi | None = None,
        monitoring: MonitoringApi | None = None,
    ) -> None:
        self._registry = registry
        self._intake = intake
        self._artifacts = artifacts
        self._manager = manager
        self._sync = sync
        self._executor = executor
        self._max_upload = max_upload_bytes
        self._experiments = experiments
        self._monitoring = monitoring

    async def _blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- encoding ---------------------------------------------------------------------------------

    def describe_version(self, model: CatalogModel, entry: CatalogVersion) -> dict[str, Any]:
        """The version object of docs/api.md."""
        if entry.record is not None:
            document = entry.record.to_dict()
        else:
            document = {
                "model": entry.model,
                "version": entry.version,
                "framework": entry.framework,
                "sha256": entry.sha256,
                "path": str(entry.path),
                "runtime_config": entry.runtime_config,
                "description": model.description,
                "signature": entry.signature.to_dict() if entry.signature else None,
            }
        state, reason = self._manager.state(entry.model, entry.version)
        # The latest load in this process (null before the first): cold-start seconds, estimated bytes.
        stats = self._manager.load_stats(entry.model, entry.version)
        document.update(
            source=entry.source,
            aliases=model.aliases_of(entry.version),
            state=state.value,
            state_reason=reason,
            load_seconds=round(stats[0], 6) if stats else None,
            memory_bytes=stats[1] if stats else None,
        )
        return document

    def describe_model(self, model: CatalogModel) -> dict[str, Any]:
        """The model object of docs/api.md."""
        return {
            "name": model.name,
            "source": model.source,
            "latest_version": max(model.versions) if model.versions else None,
            "version_count": len(model.versions),
            "aliases": dict(model.aliases),
            "default_version": self._manager.serving_default(model.name) or model.default_version,
            "created_at": model.created_at.isoformat() if model.created_at else None,
            "description": model.description,
        }

    def _entry(self, name: str, version: int) -> tuple[CatalogModel, CatalogVersion]:
        model = self._manager.model(name)
        entry = model.versions.get(version)
        if entry is None:
            raise NotFound(f"model '{name}' has no version {version}")
        return model, entry

    # -- routes -----------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        """The FastAPI router, mounted at ``/api/v1``."""
        api = APIRouter(prefix="/api/v1", tags=["management"])

        @api.get("/models", summary="List models")
        async def list_models(request: Request) -> Response:
            principal = principal_of(request.scope)  # a principal limited to some models sees only those
            models = [m for m in self._manager_models() if principal.covers(m.name)]
            return _json({"models": [self.describe_model(m) for m in models]})

        @api.get("/models/{name}", summary="Show a model with its versions")
        async def show_model(name: str = NAME) -> Response:
            model = self._manager.model(name)
            document = self.describe_model(model)
            document["versions"] = [self.describe_version(model, model.versions[v]) for v in sorted(model.versions)]
            return _json(document)

        @api.delete("/models/{name}", status_code=204, summary="Delete a model and all its versions")
        async def delete_model(name: str = NAME) -> Response:
            await self._blocking(self._registry.delete_model, name)
            await self._sync.refresh()
            return Response(status_code=204)

        @api.get("/models/{name}/versions", summary="List a model's versions")
        async def list_versions(name: str = NAME) -> Response:
            model = self._manager.model(name)
            return _json(
                {"versions": [self.describe_version(model, model.versions[v]) for v in sorted(model.versions)]}
            )

        @api.post(
            "/models/{name}/versions",
            status_code=201,
            summary="Push a new version (multipart: artifact, optional sample, metadata and signature)",
        )
        async def push(request: Request, name: str = NAME) -> Response:
            return await self._push(name, request)

        @api.get("/models/{name}/versions/{version}", summary="Show a version")
        async def show_version(name: str = NAME, version: int = VERSION) -> Response:
            return _json(self.describe_version(*self._entry(name, version)))

        @api.delete("/models/{name}/versions/{version}", status_code=204, summary="Delete a version")
        async def delete_version(name: str = NAME, version: int = VERSION) -> Response:
            await self._blocking(self._registry.delete_version, name, version)
            await self._sync.refresh()
            return Response(status_code=204)

        @api.post("/models/{name}/versions/{version}/load", summary="Load a version into memory")
        async def load(name: str = NAME, version: int = VERSION) -> Response:
            model, entry = self._entry(name, version)
            await self._manager.load(name, version)
            return _json(self.describe_version(model, entry))

        @api.post("/models/{name}/versions/{version}/unload", summary="Unload a version from memory")
        async def unload(name: str = NAME, version: int = VERSION) -> Response:
            model, entry = self._entry(name, version)
            await self._manager.unload(name, version)
            return _json(self.describe_version(model, entry))

        @api.get("/models/{name}/aliases", summary="List a model's aliases")
        async def list_aliases(name: str = NAME) -> Response:
            return _json({"aliases": await self._blocking(self._registry.aliases, name)})

        @api.put("/models/{name}/aliases/{alias}", summary="Point an alias at a version")
        async def set_alias(
            name: str = NAME,
            alias: str = PathParam(pattern=r"^[a-z][a-z0-9_-]{0,63}$"),
            version: int = Body(..., embed=True, ge=1),
            expected_version: int | None = Body(None, embed=True, ge=1),
        ) -> Response:
            self._entry(name, version)
            # Load first: an alias never points at a version this server cannot serve.
            await self._manager.load(name, version)
            previous = await self._blocking(
                lambda: self._registry.set_alias(name, alias, version, expected_version=expected_version)
            )
            await self._sync.refresh()
            return _json({"model": name, "alias": alias, "version": version, "previous": previous})

        @api.delete("/models/{name}/aliases/{alias}", status_code=204, summary="Remove an alias")
        async def delete_alias(name: str = NAME, alias: str = PathParam()) -> Response:
            await self._blocking(self._registry.delete_alias, name, alias)
            await self._sync.refresh()
            return Response(status_code=204)

        @api.get("/models/{name}/aliases/{alias}/history", summary="Every change of an alias, newest first")
        async def alias_history(name: str = NAME, alias: str = PathParam()) -> Response:
            changes = await self._blocking(self._registry.alias_history, name, alias)
            return _json({"history": [change.to_dict() for change in changes]})

        # Rollback, traffic and version policies, rollouts, feedback (protocols/management_releases.py).
        api.include_router(ReleaseApi(self._registry, self._manager, self._sync, self._executor).router())
        if self._experiments is not None:  # feedback and experiment reports (protocols/management_experiments.py)
            api.include_router(self._experiments.router())
        if self._monitoring is not None:  # drift and data quality (protocols/management_monitoring.py)
            api.include_router(self._monitoring.router())
        return api

    def _manager_models(self) -> list[CatalogModel]:
        models = self._manager.catalog_models()
        return [models[name] for name in sorted(models)]

    async def _push(self, name: str, request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_upload:
            raise PayloadTooLarge(f"upload of {declared} bytes exceeds the limit of {self._max_upload} bytes")
        if self._manager.has_repository_model(name):
            raise Conflict(f"model '{name}' is served from a read-only repository folder; push under another name")
        try:
            form = await request.form(max_files=2, max_fields=4)
        except ClientDisconnect:
            raise InvalidInput("the upload was cut off before it finished; nothing was registered") from None
        except MultiPartException as exc:
            raise InvalidInput(f"malformed multipart body: {exc.message}") from None
        sample_dir: Path | None = None
        try:
            artifact = form.get("artifact")
            if not isinstance(artifact, UploadFile) or not artifact.filename:
                raise InvalidInput("field 'artifact' must be a file upload with a file name")
            metadata = self._metadata(form.get("metadata"))
            artifact_signature = form.get("signature")  # ed25519:<key id>:<base64> (docs/security.md)
            if artifact_signature is not None and not isinstance(artifact_signature, str):
                raise InvalidInput("field 'signature' must be text, not a file")
            sample_path = None
            sample = form.get("sample")
            if isinstance(sample, UploadFile):
                sample_dir = Path(tempfile.mkdtemp(prefix="ferryman-sample-"))
                sample_path = sample_dir / Path(sample.filename or "sample.csv").name
                await self._blocking(_copy_to, sample.file, sample_path)
            staged = await self._blocking(
                lambda: self._artifacts.stage(artifact.file, artifact.filename or "", max_bytes=self._max_upload)
            )
            intake = IntakeRequest(
                name=name,
                framework=metadata.get("framework"),
                description=str(metadata.get("description") or ""),
                runtime_config=metadata.get("runtime_config"),
                sample=sample_path,
                artifact_signature=artifact_signature or None,
            )
            record, created = await self._blocking(self._intake.register, staged, intake)
        finally:
            await form.close()
            if sample_dir is not None:
                shutil.rmtree(sample_dir, ignore_errors=True)
        await self._sync.refresh()
        model, entry = self._entry(name, record.version)
        return _json({"created": created, "version": self.describe_version(model, entry)}, 201 if created else 200)

    @staticmethod
    def _metadata(raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, str):
            raise InvalidInput("field 'metadata' must be a JSON string")
        try:
            metadata = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"field 'metadata' is not valid JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise InvalidInput("field 'metadata' must be a JSON object")
        unknown = set(metadata) - {"framework", "description", "runtime_config"}
        if unknown:
            raise InvalidInput(f"field 'metadata' has unknown keys: {', '.join(sorted(unknown))}")
        if metadata.get("runtime_config") is not None and not isinstance(metadata["runtime_config"], dict):
            raise InvalidInput("field 'metadata.runtime_config' must be an object")
        return metadata


def _copy_to(source: Any, target: Path) -> None:
    with target.open("wb") as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
