"""Which versions are loaded: load (single-flight), verify, warm up, swap defaults atomically, unload safely.

A model's *serving default* is the version that requests without a version get. It only moves
once the new target has loaded, so a version that fails to load (a corrupted artifact, a model
that raises, a failed warm-up) is refused and named while the previous one keeps serving.
Unloading waits for the version's in-flight requests to finish, then gives the memory back.

With a memory budget (``memory_budget_mb``) many models share a box: loads run one at a time,
each version's memory is estimated as it loads, and least-recently-used idle versions are
unloaded to make room (``serving/memory.py``). A version unloaded that way keeps its place as its
model's serving default and loads again on its next request (a cold start, timed and logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ferryman.errors import FerrymanError, ModelFailed, NotFound, Overloaded
from ferryman.monitoring.metrics import LOAD_BUCKETS, Histogram
from ferryman.registry.artifacts import ArtifactStore
from ferryman.runtimes.base import Runtime, run_predict
from ferryman.security.artifact_policy import ArtifactPolicy
from ferryman.serving.batch_policy import BatchPolicy
from ferryman.serving.batcher import Batcher, batcher_for
from ferryman.serving.cache import CacheLimits, ResponseCache, cache_for
from ferryman.serving.catalog import Catalog, CatalogModel, CatalogVersion
from ferryman.serving.keeping import VersionKeeper
from ferryman.serving.loading import discard_runtime, locate_artifact, start_runtime
from ferryman.serving.memory import MemoryBudget, format_bytes, protected_keys
from ferryman.serving.router import resolve_version
from ferryman.tensors import Signature

__all__ = ["LoadedVersion", "ModelManager", "VersionState"]

logger = logging.getLogger(__name__)

Key = tuple[str, int]
T = TypeVar("T")

#: How often a request retries a version that the budget unloaded again before the request could use it.
_ACQUIRE_ATTEMPTS = 3
#: The state reason of a version the memory budget unloaded.
EVICTED_REASON = "unloaded to stay within the memory budget; loads again on its next request"


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
    #: Responses already computed, when the version's runtime config turns the cache on.
    cache: ResponseCache | None = None
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    #: ``time.monotonic()`` of the last request (or of the load): the budget unloads the oldest first.
    last_used: float = 0.0
    #: Seconds the load took (artifact check, runtime load, warm-up): what a cold start costs.
    load_seconds: float = 0.0
    #: Estimated memory this version holds (see ``serving/memory.py``).
    memory_bytes: int = 0

    def enter(self) -> None:
        """Count a request that is about to use this version."""
        self.inflight += 1
        self.last_used = time.monotonic()
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
        *,
        budget: MemoryBudget | None = None,
        cache_defaults: CacheLimits | None = None,
        artifact_policy: ArtifactPolicy | None = None,
    ) -> None:
        self._catalog = catalog
        #: Signature and pickle rules checked on every load, after the sha256 (docs/security.md).
        self._artifact_policy = artifact_policy
        self._artifacts = artifacts
        self._executor = executor
        self._inference_executor = inference_executor
        self._batch_defaults = batch_defaults
        self._threads = threads
        self._loaded: dict[Key, LoadedVersion] = {}
        self._loading: dict[Key, asyncio.Task[LoadedVersion]] = {}
        self._failures: dict[Key, tuple[str, str]] = {}
        self._serving_default: dict[str, int] = {}
        self._budget = budget or MemoryBudget(None)
        self._cache_defaults = cache_defaults or CacheLimits()
        # Under a budget, loads run one at a time: each measurement is its own, and two loads
        # cannot both count on the same free memory.
        self._budget_lock = asyncio.Lock()
        #: Versions the budget unloaded (with their sha256): still "ready", they load on demand.
        self._evicted: dict[Key, str] = {}
        self._load_stats: dict[Key, tuple[float, int]] = {}
        #: Counters for metrics: loads caused by a request, and versions the budget unloaded.
        self.cold_starts = 0
        self.evictions = 0
        self.load_failures = 0
        #: Per version, for metrics: failed loads, and how long each successful load took.
        self.version_load_failures: dict[Key, int] = {}
        self.version_load_seconds: dict[Key, Histogram] = {}
        self._keeper = VersionKeeper(self)

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
        key = (name, number)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        failure = self._failures.get(key)
        if failure is not None and failure[0] == model.versions[number].sha256:
            raise ModelFailed(failure[1])
        for _ in range(_ACQUIRE_ATTEMPTS):
            loaded = await self.load(name, number, requester=name)
            # Under memory pressure the budget may unload it again before this request resumes.
            if self._loaded.get(key) is loaded:
                break
        else:
            raise Overloaded(
                f"model '{name}' version {number} was unloaded to make room before this request could use it; "
                "retry shortly",
                status=503,
            )
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
        if key in self._evicted:
            return VersionState.UNLOADED, EVICTED_REASON
        return VersionState.UNLOADED, None

    def load_stats(self, name: str, version: int) -> tuple[float, int] | None:
        """Seconds and estimated bytes of the version's latest load in this process, if it ever loaded."""
        return self._load_stats.get((name, version))

    def serving_default(self, name: str) -> int | None:
        """The version now answering requests without a version (loaded, or unloaded by the budget), if any."""
        return self._serving_default.get(name)

    def loaded_versions(self) -> list[LoadedVersion]:
        """Every version in memory."""
        return list(self._loaded.values())

    def model_ready(self, name: str, version: int | None) -> bool:
        """True when the given version (or the model's serving default) is loaded.

        A version the memory budget unloaded still counts: it loads again on its next request.
        """
        model = self._catalog.models.get(name)
        if model is None:
            return False
        number = version if version is not None else self._serving_default.get(name)
        return number is not None and ((name, number) in self._loaded or (name, number) in self._evicted)

    # -- loading and unloading --------------------------------------------------------------------

    async def load(self, name: str, version: int, *, requester: str | None = None) -> LoadedVersion:
        """Load a version (once, however many callers ask at the same time).

        ``requester`` names the model whose request needs the load (a cold start); the budget
        then keeps that model's serving default.
        """
        key = (name, version)
        loaded = self._loaded.get(key)
        if loaded is not None:
            return loaded
        task = self._loading.get(key)
        if task is None:
            entry = self.model(name).versions.get(version)
            if entry is None:
                raise NotFound(f"model '{name}' has no version {version}")
            task = asyncio.get_running_loop().create_task(self._load(entry, requester))
            self._loading[key] = task
        return await asyncio.shield(task)

    async def _load(self, entry: CatalogVersion, requester: str | None) -> LoadedVersion:
        try:
            async with self._budget_lock if self._budget.limit_bytes is not None else contextlib.nullcontext():
                return await self._bring_in(entry, requester)
        finally:
            self._loading.pop((entry.model, entry.version), None)

    async def _bring_in(self, entry: CatalogVersion, requester: str | None) -> LoadedVersion:
        key = (entry.model, entry.version)
        label = f"model '{entry.model}' version {entry.version}"
        started = time.monotonic()
        path, floor = await self._guarded(entry, label, locate_artifact, entry, self._artifacts, self._artifact_policy)
        located = time.monotonic()
        freed = await self._make_room(label, self._budget.expected(key, entry.sha256, floor), requester)
        resumed = time.monotonic()
        runtime, signature, growth = await self._guarded(entry, label, start_runtime, entry, path, self._threads)
        # The version's own cost (verify, load, warm up), without the time spent unloading others.
        seconds = (located - started) + (time.monotonic() - resumed)
        memory = self._budget.record(key, entry.sha256, growth, floor)
        try:
            # The measured cost may exceed the expectation; the new version itself is not a candidate yet.
            freed += await self._make_room(label, memory, requester)
            batcher = None
            if self._batch_defaults is not None:
                batcher = batcher_for(
                    getattr(runtime, "inner_framework", None) or runtime.framework,
                    entry.runtime_config,
                    [spec.shape for spec in signature.inputs],
                    functools.partial(run_predict, runtime),
                    self._inference_executor,
                    self._batch_defaults,
                    label,
                )
            cache = cache_for(entry.runtime_config, self._cache_defaults)
        except BaseException:
            await asyncio.get_running_loop().run_in_executor(self._executor, discard_runtime, runtime)
            raise
        loaded = LoadedVersion(
            entry.model,
            entry.version,
            entry.sha256,
            runtime,
            signature,
            label,
            batcher,
            cache,
            last_used=time.monotonic(),
            load_seconds=seconds,
            memory_bytes=memory,
        )
        loaded.idle.set()
        self._failures.pop(key, None)
        self._evicted.pop(key, None)
        self._load_stats[key] = (seconds, memory)
        self.version_load_seconds.setdefault(key, Histogram(LOAD_BUCKETS)).observe(seconds)
        self._loaded[key] = loaded
        if requester is not None:
            self.cold_starts += 1
        cold = " on first request (cold start)" if requester is not None else ""
        room = f"; unloading {freed} other versions took {time.monotonic() - started - seconds:.3f} s" if freed else ""
        logger.info(
            f"loaded {label} ({runtime.framework}) in {seconds:.3f} s{cold}, about {format_bytes(memory)}{room}"
        )
        return loaded

    async def _guarded(self, entry: CatalogVersion, label: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking load step; a failure is recorded against the version and named."""
        key = (entry.model, entry.version)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except Exception as exc:
            ours = isinstance(exc, FerrymanError)
            reason = exc.message if isinstance(exc, FerrymanError) else f"{type(exc).__name__}: {exc}"
            message = f"{label} cannot be loaded: {reason}"
            self.load_failures += 1
            self.version_load_failures[key] = self.version_load_failures.get(key, 0) + 1
            self._failures[key] = (entry.sha256, message)
            self._evicted.pop(key, None)
            # Our own errors explain themselves; anything else deserves its traceback in the log.
            logger.log(logging.ERROR, message, exc_info=not ours)
            status = exc.status if isinstance(exc, FerrymanError) and exc.status >= 500 else 500
            raise ModelFailed(message, status=status) from exc

    async def _make_room(self, label: str, need: int, requester: str | None) -> int:
        """Unload least-recently-used idle versions until ``need`` more bytes fit the budget; how many."""
        residents = list(self._loaded.values())
        protected = protected_keys(residents, self._serving_default, requester)
        victims = self._budget.victims(label, need, residents, protected)
        # Take them all out of service first, so no request picks one up while others unload.
        for victim in victims:
            key = (victim.model, victim.version)
            self._loaded.pop(key, None)
            self._evicted[key] = victim.sha256
        for victim in victims:
            self.evictions += 1
            await self._retire(victim)
            logger.info(
                "unloaded %s (about %s) to make room for %s", victim.label, format_bytes(victim.memory_bytes), label
            )
        return len(victims)

    async def _retire(self, loaded: LoadedVersion) -> None:
        """Wait for the version's in-flight requests, unload its runtime and give the memory back."""
        await loaded.idle.wait()
        loaded.batcher = None
        loaded.cache = None
        await asyncio.get_running_loop().run_in_executor(self._executor, discard_runtime, loaded.runtime)

    async def unload(self, name: str, version: int) -> None:
        """Drop a version from memory once its in-flight requests have finished."""
        self._evicted.pop((name, version), None)
        loaded = self._loaded.pop((name, version), None)
        if self._serving_default.get(name) == version:
            del self._serving_default[name]
        if loaded is None:
            return
        await self._retire(loaded)
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
        for key in [k for k in self._load_stats if k[0] not in models or k[1] not in models[k[0]].versions]:
            del self._load_stats[key]
        for key, sha256 in list(self._evicted.items()):
            entry = models[key[0]].versions.get(key[1]) if key[0] in models else None
            if entry is None or entry.sha256 != sha256:
                del self._evicted[key]
        for name in [n for n in self._serving_default if n not in models]:
            del self._serving_default[name]
        await asyncio.gather(*(self._swap_default(model) for model in models.values()))
        await self._keeper.apply(models)

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
            if current is not None and current in model.versions and current not in model.versions_to_keep():
                await self.unload(model.name, current)
            return

    async def close(self) -> None:
        """Unload everything (server shutdown)."""
        for key in list(self._loaded):
            await self.unload(*key)
