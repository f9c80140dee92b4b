"""Which versions are loaded: load (single-flight), verify, swap defaults atomically, unload safely.

A model's *serving default* is the version that requests without a version get. It only moves
once the new target has loaded, so a version that fails to load (a corrupted artifact, a model
that raises) is refused and named while the previous one keeps serving. Unloading waits for the
version's in-flight requests to finish.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

from ferryman.errors import FerrymanError, ModelFailed, NotFound
from ferryman.registry.artifacts import ArtifactStore
from ferryman.runtimes import load_runtime
from ferryman.runtimes.base import Runtime, RuntimeConfig
from ferryman.serving.batcher import Batcher, BatchPolicy, batcher_for
from ferryman.serving.catalog import Catalog, CatalogModel, CatalogVersion
from ferryman.serving.router import resolve_version
from ferryman.tensors import Signature

__all__ = ["LoadedVersion", "ModelManager", "VersionState"]

logger = logging.getLogger(__name__)

Key = tuple[str, int]


class VersionState(enum.Enum):
    """Lifecycle of one version in this process."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    FAILED = "failed"


@dataclass(slots=True, eq=False)
class LoadedVersion:
    """A version in memory, ready to predict."""

    model: str
    version: int
    sha256: str
    runtime: Runtime
    signature: Signature
    label: str
    batcher: Batcher | None = None
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        """Count a request that is about to use this version."""
        self.inflight += 1
        self.idle.clear()

    def leave(self) -> None:
        """Count a request that has finished with this version."""
        self.inflight -= 1
        if self.inflight == 0:
            self.idle.set()


class ModelManager:
    """Owns every loaded runtime in the process; all methods run on the event loop."""

    def __init__(
        self,
        catalog: Catalog,
        artifacts: ArtifactStore,
        executor: Executor,
        inference_executor: Executor,
        batch_defaults: BatchPolicy | None,
        threads: int | None = None,
    ) -> None:
        self._catalog = catalog
        self._artifacts = artifacts
        self._executor = executor
        self._inference_executor = inference_executor
        self._batch_defaults = batch_defaults
        self._threads = threads
        self._loaded: dict[Key, LoadedVersion] = {}
        self._loading: dict[Key, asyncio.Task[LoadedVersion]] = {}
        self._failures: dict[Key, tuple[str, str]] = {}
        self._serving_default: dict[str, int] = {}

    # -- lookups on the request path -------------------------------------------------------------

    def model(self, name: str) -> CatalogModel:
        """The catalog entry for ``name``, or NotFound."""
        model = self._catalog.models.get(name)
        if model is None:
            raise NotFound(f"model '{name}' not found")
        return model

    async def acquire(self, name: str, version: str | None) -> LoadedVersion:
        """Return the loaded version a request should use, loading it first if needed."""
        model = self.model(name)
        number = resolve_version(model, version, self._serving_default.get(name))
        loaded = self._loaded.get((name, number))
        if loaded is not None:
            return loaded
        failure = self._failures.get((name, number))
        if failure is not None and failure[0] == model.versions[number].sha256:
            raise ModelFailed(failure[1])
        loaded = await self.load(name, number)
        if version is None and name not in self._serving_default:
            self._serving_default[name] = number
        return loaded

    def catalog_models(self) -> dict[str, CatalogModel]:
        """Every servable model in the current catalog snapshot."""
        return self._catalog.models

    def has_repository_model(self, name: str) -> bool:
        """True when ``name`` is served from a read-only repository folder."""
        model = self._catalog.models.get(name)
        return model is not None and model.source == "repository"

    # -- state for the management API and health ------------------------------------------------

    def state(self, name: str, version: int) -> tuple[VersionState, str | None]:
        """The version's state here and, when it failed, why."""
        key = (name, version)
        if key in self._loaded:
            return VersionState.LOADED, None
        if key in self._loading:
            return VersionState.LOADING, None
        if key in self._failures:
            return VersionState.FAILED, self._failures[key][1]
        return VersionState.UNLOADED, None

    def serving_default(self, name: str) -> int | None:
        """The version now answering requests without a version, if one is loaded."""
        return self._serving_default.get(name)

    def loaded_versions(self) -> list[LoadedVersion]:
        """Every version in memory."""
        return list(self._loaded.values())

    def model_ready(self, name: str, version: int | None) -> bool:
        """True when the given version (or the model's serving default) is loaded."""
        model = self._catalog.models.get(name)
        if model is None:
            return False
        number = version if version is not None else self._serving_default.get(name)
        return number is not None and (name, number) in self._loaded

    # -- loading and unloading --------------------------------------------------------------------

    async def load(self, name: str, version: int) -> LoadedVersion:
        """Load a version (once, however many callers ask at the same time)."""
        key = (name, version)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        task = self._loading.get(key)
        if task is None:
            entry = self.model(name).versions.get(version)
            if entry is None:
                raise NotFound(f"model '{name}' has no version {version}")
            task = asyncio.get_running_loop().create_task(self._load(entry))
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _load(self, entry: CatalogVersion) -> LoadedVersion:
        key = (entry.model, entry.version)
        label = f"model '{entry.model}' version {entry.version}"
        try:
            runtime, signature = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._load_blocking, entry
            )
        except FerrymanError as exc:
            message = f"{label} cannot be loaded: {exc.message}"
            self._failures[key] = (entry.sha256, message)
            logger.error(message)
            raise ModelFailed(message, status=exc.status if exc.status >= 500 else 500) from exc
        except Exception as exc:
            message = f"{label} cannot be loaded: {type(exc).__name__}: {exc}"
            self._failures[key] = (entry.sha256, message)
            logger.exception(message)
            raise ModelFailed(message) from exc
        finally:
            self._loading.pop(key, None)
        batcher = None
        if self._batch_defaults is not None:
            batcher = batcher_for(
                runtime.framework,
                entry.runtime_config,
                [spec.shape for spec in signature.inputs],
                runtime.predict,
                self._inference_executor,
                self._batch_defaults,
                label,
            )
        loaded = LoadedVersion(entry.model, entry.version, entry.sha256, runtime, signature, label, batcher)
        loaded.idle.set()
        self._failures.pop(key, None)
        self._loaded[key] = loaded
        logger.info("loaded %s (%s)", label, entry.framework or "detected framework")
        return loaded

    def _load_blocking(self, entry: CatalogVersion) -> tuple[Runtime, Signature]:
        path = self._artifact_path(entry)
        config = RuntimeConfig(options=dict(entry.runtime_config), threads=self._threads)
        runtime = load_runtime(path, entry.framework, config)
        return runtime, entry.signature or runtime.signature()

    def _artifact_path(self, entry: CatalogVersion) -> Path:
        if entry.path is not None:
            return entry.path
        assert entry.filename is not None  # registry versions always carry their blob name
        return self._artifacts.materialize(entry.sha256, entry.filename)

    async def unload(self, name: str, version: int) -> None:
        """Drop a version from memory once its in-flight requests have finished."""
        loaded = self._loaded.pop((name, version), None)
        if self._serving_default.get(name) == version:
            del self._serving_default[name]
        if loaded is None:
            return
        await loaded.idle.wait()
        await asyncio.get_running_loop().run_in_executor(self._executor, loaded.runtime.unload)
        logger.info("unloaded %s", loaded.label)

    async def reconcile(self) -> None:
        """Bring memory in line with the catalog: swap defaults to new targets, drop vanished versions."""
        models = self._catalog.models
        for key, loaded in list(self._loaded.items()):
            model = models.get(key[0])
            entry = model.versions.get(key[1]) if model else None
            if entry is None or entry.sha256 != loaded.sha256:
                await self.unload(*key)
        for key in [k for k in self._failures if k[0] not in models or k[1] not in models[k[0]].versions]:
            del self._failures[key]
        for name in [n for n in self._serving_default if n not in models]:
            del self._serving_default[name]
        await asyncio.gather(*(self._swap_default(model) for model in models.values()))

    async def _swap_default(self, model: CatalogModel) -> None:
        target = model.default_version
        current = self._serving_default.get(model.name)
        if target is None or target == current:
            return
        # With nothing serving yet (startup), fall back to older versions rather than serve nothing.
        candidates = [target] if current is not None else sorted(model.versions, reverse=True)
        for candidate in candidates:
            try:
                await self.load(model.name, candidate)
            except FerrymanError as exc:
                logger.error("%s; %s keeps serving", exc.message, f"version {current}" if current else "nothing")
                continue
            self._serving_default[model.name] = candidate
            logger.info("model '%s' now serves version %s by default", model.name, candidate)
            if current is not None and current in model.versions and not model.aliases_of(current):
                await self.unload(model.name, current)
            return

    async def close(self) -> None:
        """Unload everything (server shutdown)."""
        for key in list(self._loaded):
            await self.unload(*key)
