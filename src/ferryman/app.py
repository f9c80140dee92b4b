"""The composition root: the only place that builds long-lived objects and wires them together."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import FastAPI
from prometheus_client.core import Metric
from starlette.types import ASGIApp

from ferryman import __version__
from ferryman.config import Settings
from ferryman.monitoring.alert_signals import SignalHistory
from ferryman.monitoring.alerts import AlertEvaluator
from ferryman.monitoring.metrics import FerrymanCollector, LoadedView, LoadHistory, RequestMetrics, build_registry
from ferryman.monitoring.payload_config import check_payload_log_config
from ferryman.monitoring.release_metrics import ShadowView, release_families
from ferryman.monitoring.tracing import start_tracing, stop_tracing
from ferryman.monitoring.webhooks import WebhookDispatcher
from ferryman.protocols.auth import Guard
from ferryman.protocols.auth_middleware import AuthMiddleware
from ferryman.protocols.http_errors import install_error_handlers
from ferryman.protocols.management import ManagementApi
from ferryman.protocols.management_alerts import AlertApi
from ferryman.protocols.management_experiments import ExperimentApi
from ferryman.protocols.management_monitoring import MonitoringApi
from ferryman.protocols.metrics import metrics_route
from ferryman.protocols.openapi import install_v2_openapi
from ferryman.protocols.request_id import RequestIdMiddleware
from ferryman.protocols.security_api import SecurityApi
from ferryman.protocols.v2_grpc_endpoint import GrpcEndpoint
from ferryman.protocols.v2_infer import V2InferenceApp
from ferryman.protocols.v2_rest import V2Routes
from ferryman.registry.artifacts import ArtifactStore
from ferryman.registry.intake import ModelIntake
from ferryman.registry.notify import ChangeFeed
from ferryman.registry.object_artifacts import open_artifact_store
from ferryman.registry.repository import ModelRepository
from ferryman.registry.service import RegistryService
from ferryman.registry.store import create_registry_engine, upgrade_to_head
from ferryman.security.artifact_policy import artifact_policy_from
from ferryman.serving.batch_policy import BatchPolicy, check_batching_config
from ferryman.serving.cache import CacheLimits, check_cache_config
from ferryman.serving.catalog import Catalog
from ferryman.serving.drain import DrainState
from ferryman.serving.experiment_report import ExperimentReporter
from ferryman.serving.fallback import check_fallback_config
from ferryman.serving.feedback_follower import FeedbackFollower
from ferryman.serving.feedback_resolver import FeedbackResolver
from ferryman.serving.handler import InferenceHandler
from ferryman.serving.loading import check_warmup_config
from ferryman.serving.manager import ModelManager
from ferryman.serving.memory import MemoryBudget, configure_allocator
from ferryman.serving.monitoring_tap import MonitoringTap, build_monitoring_tap
from ferryman.serving.rollout_controller import RolloutController
from ferryman.serving.sync import CatalogSync
from ferryman.serving.workers import check_worker_config

__all__ = ["Components", "build_components", "create_app"]

logger = logging.getLogger(__name__)

#: Cap on unpacked folder artifacts (custom models), so a hostile tar cannot fill the disk.
_MAX_UNPACKED_BYTES = 16 * 1024**3

#: Checks of a pushed version's runtime_config, each owned by the layer that reads that block.
_CONFIG_CHECKS = [
    check_batching_config,
    check_cache_config,
    check_warmup_config,
    check_fallback_config,
    check_worker_config,
    check_payload_log_config,
]


@dataclass(slots=True)
class Components:
    """Every long-lived object of one server process."""

    settings: Settings
    registry: RegistryService
    artifacts: ArtifactStore
    intake: ModelIntake
    catalog: Catalog
    manager: ModelManager
    handler: InferenceHandler
    sync: CatalogSync
    request_metrics: RequestMetrics
    inference_pool: ThreadPoolExecutor
    io_pool: ThreadPoolExecutor
    rollouts: RolloutController
    feedback: FeedbackFollower
    resolver: FeedbackResolver
    experiments: ExperimentReporter
    monitoring: MonitoringTap
    webhooks: WebhookDispatcher
    alerts: AlertEvaluator
    changes: ChangeFeed
    drain: DrainState = field(default_factory=DrainState)
    """Set on SIGTERM: readiness turns 503 while in-flight requests finish (serving/drain.py)."""


def build_components(settings: Settings, *, sweep_staging: bool = True) -> Components:
    """Open the registry (creating it on first use) and build the engine around it.

    ``sweep_staging`` removes uploads left half-done by a crash; only the first process of a
    server may do it (a worker started later would delete its siblings' uploads in flight).
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    configure_allocator()  # so that unloading a model gives its memory back (serving/memory.py)
    engine = create_registry_engine(settings.resolved_database_url)
    upgrade_to_head(engine)
    artifacts = open_artifact_store(settings)  # a local folder, or the shared store of artifacts_url
    if sweep_staging:
        swept = artifacts.sweep_staging()
        if swept:
            logger.info("removed %d leftover staged uploads", swept)
    registry = RegistryService(engine, artifacts)
    artifact_policy = artifact_policy_from(settings)  # signed models, pickle refusal (docs/security.md)
    repository = ModelRepository(list(settings.repositories)) if settings.repositories else None
    catalog = Catalog(registry, repository)
    inference_pool = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="ferryman-infer")
    io_pool = ThreadPoolExecutor(4, thread_name_prefix="ferryman-io")
    batch_defaults = (
        BatchPolicy(
            max_batch_size=settings.batch_max_size,
            max_queue_delay_ms=settings.batch_max_delay_ms,
            max_queue_size=settings.batch_max_queue,
        )
        if settings.batching
        else None
    )
    manager = ModelManager(
        catalog,
        artifacts,
        io_pool,
        inference_pool,
        batch_defaults,
        # Worker processes share the cores: each runtime's intra-op threads get its share only, or
        # ONNX Runtime's spinning threads in every process fight over the same cores.
        threads=max(1, (os.cpu_count() or 1) // settings.workers),
        budget=MemoryBudget(settings.memory_budget_mb * 2**20 if settings.memory_budget_mb else None),
        cache_defaults=CacheLimits(settings.cache_max_entries, int(settings.cache_max_mb * 2**20)),
        artifact_policy=artifact_policy,
    )
    sync = CatalogSync(catalog, manager, io_pool)
    request_metrics = RequestMetrics()
    handler = InferenceHandler(manager, inference_pool, sync, request_metrics)
    monitoring = handler.monitor = build_monitoring_tap(settings, registry, manager)
    webhooks = WebhookDispatcher(
        registry,
        io_pool,
        timeout_s=settings.webhook_timeout_seconds,
        max_attempts=settings.webhook_max_attempts,
        backoff_s=settings.webhook_backoff_seconds,
    )
    alerts = AlertEvaluator(
        registry,
        SignalHistory(request_metrics, monitoring.pipeline),
        lambda: {name: sorted(model.versions) for name, model in manager.catalog_models().items()},
        io_pool,
        interval_s=settings.alerts_eval_seconds,
        live_window_s=settings.live_accuracy_window_seconds,
        on_event=webhooks.wake,
    )
    return Components(
        settings=settings,
        registry=registry,
        artifacts=artifacts,
        intake=ModelIntake(
            registry, artifacts, _MAX_UNPACKED_BYTES, config_checks=_CONFIG_CHECKS, policy=artifact_policy
        ),
        catalog=catalog,
        manager=manager,
        handler=handler,
        request_metrics=request_metrics,
        sync=sync,
        inference_pool=inference_pool,
        io_pool=io_pool,
        rollouts=RolloutController(registry, manager, sync, request_metrics, handler.shadows, io_pool),
        feedback=FeedbackFollower(registry, manager, io_pool),
        resolver=FeedbackResolver(registry, handler.experiments, io_pool),
        experiments=ExperimentReporter(
            registry, manager, request_metrics, handler.shadows, handler.experiments, io_pool
        ),
        monitoring=monitoring,
        webhooks=webhooks,
        alerts=alerts,
        changes=ChangeFeed(settings.resolved_database_url),  # LISTEN/NOTIFY on PostgreSQL (docs/operations.md)
    )


def create_app(components: Components) -> ASGIApp:
    """The ASGI app: V2 REST + management API + OpenAPI docs, with a lifespan that loads models."""
    settings = components.settings
    v2 = V2Routes(components.handler, components.manager, settings.max_request_bytes, drain=components.drain)
    guard = Guard(settings, components.registry, components.io_pool, components.changes)  # auth: docs/security.md
    v2.registry_reachable = lambda: components.sync.registry_reachable
    grpc = GrpcEndpoint(settings, components.handler, components.manager, guard, lambda: v2.ready)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(components.io_pool, components.catalog.refresh)
        components.monitoring.start()
        start_tracing(settings)  # OpenTelemetry, when configured and installed (monitoring/tracing.py)
        startup = asyncio.create_task(_load_defaults(components, v2))
        await grpc.start()  # V2 over gRPC on grpc_port, same handler and guard (protocols/v2_grpc.py)
        changes = components.changes
        changes.start()
        poller = asyncio.create_task(
            components.sync.poll_forever(
                settings.repository_poll_seconds,
                settings.resolved_registry_poll_seconds,
                wake=changes.follow() if changes.listening else None,
            )
        )
        background = [
            asyncio.create_task(components.rollouts.run_forever()),
            asyncio.create_task(components.feedback.run_forever()),
            asyncio.create_task(components.resolver.run_forever()),
            asyncio.create_task(guard.run_forever()),
        ]
        if settings.alerts_enabled:  # docs/monitoring.md: alerts, webhooks, live accuracy
            background.append(asyncio.create_task(components.alerts.run_forever()))
            background.append(asyncio.create_task(components.webhooks.run_forever()))
        try:
            yield
        finally:
            await grpc.stop()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            poller.cancel()
            await asyncio.get_running_loop().run_in_executor(components.io_pool, changes.close)
            startup.cancel()
            await components.handler.shadows.close()
            await asyncio.get_running_loop().run_in_executor(components.io_pool, components.monitoring.close)
            await asyncio.get_running_loop().run_in_executor(components.io_pool, stop_tracing)
            await components.manager.close()
            components.inference_pool.shutdown(wait=False, cancel_futures=True)
            components.io_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="Ferryman",
        version=__version__,
        description="Open Inference Protocol (V2) model server with a versioned registry.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.router.routes.extend(v2.routes())
    app.router.routes.append(metrics_route(build_registry(_collector(components))))
    management = ManagementApi(
        components.registry,
        components.intake,
        components.artifacts,
        components.manager,
        components.sync,
        components.io_pool,
        settings.max_upload_bytes,
        ExperimentApi(components.registry, components.handler.experiments, components.experiments, components.io_pool),
        monitoring=MonitoringApi(components.monitoring, components.manager, components.io_pool),
    )
    app.include_router(management.router())
    app.include_router(SecurityApi(components.registry, guard, components.io_pool).router())
    app.include_router(
        AlertApi(components.registry, components.io_pool, components.manager.model).router(), prefix="/api/v1"
    )
    install_v2_openapi(app)
    # The inference endpoint sits in front of FastAPI's stack; everything else goes through it.
    # Both admit requests through the guard, by the one route table (protocols/route_permissions.py).
    return V2InferenceApp(
        components.handler,
        RequestIdMiddleware(AuthMiddleware(app, guard)),
        settings.max_request_bytes,
        guard=guard,
        max_tensor_elements=settings.max_tensor_elements,
    )


def _collector(components: Components) -> FerrymanCollector:
    manager = components.manager

    def loaded() -> list[LoadedView]:
        views = []
        for version in manager.loaded_versions():
            batcher, cache = version.batcher, version.cache
            batch: dict[str, object] | None = None
            if batcher is not None:
                batch = {
                    "queue": batcher.queue_seconds,
                    "run": batcher.run_seconds,
                    "rows": batcher.batch_rows,
                    "expired": batcher.expired,
                    "rejected": batcher.rejected,
                    "shed": batcher.shed,
                    "batches": batcher.batches,
                    "inline": batcher.inline_batches,
                }
            views.append(
                LoadedView(
                    model=version.model,
                    version=str(version.version),
                    memory_bytes=version.memory_bytes,
                    load_seconds=version.load_seconds,
                    queued=batcher.queued if batcher is not None else 0,
                    batch=batch,
                    cache={"hits": cache.hits, "misses": cache.misses} if cache is not None else None,
                )
            )
        return views

    def counters() -> dict[str, int]:
        return {
            "cold_starts": manager.cold_starts,
            "evictions": manager.evictions,
            "load_failures": manager.load_failures,
        }

    def releases() -> Iterator[Metric]:
        shadows = [
            ShadowView(model, str(version), s.ok, s.errors, s.dropped, s.compared, s.agreed, s.latency)
            for (model, version), s in list(components.handler.shadows.stats.items())
        ]
        return itertools.chain(
            release_families(shadows, components.feedback.applied),
            components.monitoring.metric_families(),
            components.alerts.metric_families(),
            components.webhooks.metric_families(),
        )

    def load_history() -> LoadHistory:
        return LoadHistory(
            {(m, str(v)): n for (m, v), n in list(manager.version_load_failures.items())},
            {(m, str(v)): h for (m, v), h in list(manager.version_load_seconds.items())},
        )

    return FerrymanCollector(components.request_metrics, loaded, counters, releases, load_history)


async def _load_defaults(components: Components, v2: V2Routes) -> None:
    try:
        if components.settings.load_on_startup:
            await components.manager.reconcile()
    finally:
        v2.ready = True
        logger.info(
            "ready: %s",
            ", ".join(f"{lv.model}:{lv.version}" for lv in components.manager.loaded_versions()) or "no models loaded",
        )
