"""The one entry point for inference: every protocol adapter calls :meth:`InferenceHandler.infer`."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np

from ferryman.errors import DeadlineExceeded, FerrymanError, InvalidInput, ModelFailed, NotFound
from ferryman.monitoring import tracing
from ferryman.monitoring.metrics import RequestMetrics, outcome_of
from ferryman.runtimes.base import run_predict
from ferryman.serving.catalog import CatalogModel
from ferryman.serving.experiments import ExperimentRecorder
from ferryman.serving.fallback import FALLBACK_PARAMETER, Fallback, parse_fallback
from ferryman.serving.manager import LoadedVersion, ModelManager
from ferryman.serving.monitoring_tap import MonitoringTap
from ferryman.serving.router import route
from ferryman.serving.shadow import ShadowRunner
from ferryman.serving.sync import CatalogSync
from ferryman.serving.validation import check_outputs, validate_inputs
from ferryman.tensors import InferenceRequest, InferenceResponse, Signature

__all__ = ["InferenceHandler"]

logger = logging.getLogger(__name__)


class InferenceHandler:
    """Route → validate → predict (off the event loop) → check outputs, for every protocol."""

    def __init__(
        self,
        manager: ModelManager,
        executor: Executor,
        sync: CatalogSync | None = None,
        metrics: RequestMetrics | None = None,
    ) -> None:
        self._manager = manager
        self._executor = executor
        self._sync = sync
        self._metrics = metrics or RequestMetrics()
        #: Shadow copies of requests (traffic policies with ``shadow``) and what they agreed on.
        self.shadows = ShadowRunner(self._predict_on)
        #: Which version served which request, for feedback, bandits and experiment reports.
        self.experiments = ExperimentRecorder()
        #: Sampled copies of answers for drift, data quality and payload logs (set by app.py; None = off).
        self.monitor: MonitoringTap | None = None

    def protocol_outcomes(self, protocol: str) -> dict[str, int]:
        """Outcome counters for one protocol adapter (``ferryman_protocol_requests_total``), bound once."""
        return self._metrics.protocol(protocol)

    def record_unrouted(self, error: Exception) -> None:
        """Count a request that failed before reaching a model version (bad body, unknown model)."""
        self._metrics.unrouted[outcome_of(error)] += 1

    async def model(self, name: str) -> CatalogModel:
        """The catalog entry for ``name``; a name this process has not seen yet triggers one fresh look."""
        try:
            return self._manager.model(name)
        except NotFound:
            if self._sync is not None and await self._sync.refresh_if_stale():
                return self._manager.model(name)
            raise

    async def _acquire(self, name: str, version: str | None) -> LoadedVersion:
        try:
            return await self._manager.acquire(name, version)
        except NotFound:
            # Pushed through another worker or replica a moment ago? Look once more before a 404.
            if self._sync is not None and await self._sync.refresh_if_stale():
                return await self._manager.acquire(name, version)
            raise

    async def infer(self, request: InferenceRequest) -> InferenceResponse:
        """Serve one inference request; raises a FerrymanError subclass on any failure."""
        started = time.perf_counter()
        tracer = tracing.TRACER if tracing.TRACER is None else tracing.recording_tracer()
        route_span = tracer.start_span("ferryman.route") if tracer is not None else None
        try:
            model = await self.model(request.model_name)
            shadow = None
            if model.traffic is None and model.rollout is None:
                loaded = await self._acquire(request.model_name, request.model_version)
            else:
                target = route(model, request.model_version, request.headers, request.inputs)
                shadow = target.shadow
                loaded = await self._acquire(request.model_name, target.version)
        except FerrymanError as exc:
            self._metrics.unrouted[outcome_of(exc)] += 1
            if route_span is not None:
                tracing.end_route(route_span, None, exc)
            raise
        if route_span is not None:
            tracing.end_route(route_span, loaded, None)
        stats = self._metrics.stats(loaded.model, str(loaded.version))
        stats.inflight += 1
        outcome = "failed"
        try:
            response = await self._serve(loaded, request)
            outcome = "ok"
        except FerrymanError as exc:
            outcome = outcome_of(exc)
            if outcome == "invalid" and self.monitor is not None:
                self.monitor.rejected(loaded.model, loaded.version, exc)
            raise
        finally:
            stats.inflight -= 1
            stats.outcomes[outcome] += 1
            stats.latency.observe(time.perf_counter() - started)
        if self.monitor is not None:
            self.monitor.offer(request, response, loaded.model, loaded.version, started)
        if model.traffic is None and model.rollout is None:
            # Feedback may name this request later: remember who answered it and what (a bounded ledger).
            self.experiments.remember(
                request.request_id, loaded.model, loaded.version, next(iter(response.outputs.values()), None)
            )
        else:
            self.experiments.record(request.request_id, loaded.model, loaded.version, response.outputs)
            if shadow is not None and shadow != loaded.version:
                self.shadows.submit(request, response, shadow)
        return response

    async def _predict_on(
        self, model: str, version: int, inputs: dict[str, np.ndarray[Any, Any]]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """Validate and run a batch of shadow copies on one version, in the inference pool."""
        loaded = await self._manager.acquire(model, str(version))
        request = InferenceRequest(model_name=model, inputs=inputs, model_version=str(version))
        validated = validate_inputs(loaded.signature, request, loaded.label)
        loaded.enter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, _predict, loaded, validated, None
            )
        finally:
            loaded.leave()
        outputs, _ = check_outputs(loaded.signature, results, None, _batch_size(validated), loaded.label)
        return outputs

    async def _serve(self, loaded: LoadedVersion, request: InferenceRequest) -> InferenceResponse:
        inputs = validate_inputs(loaded.signature, request, loaded.label)
        if request.outputs is not None:
            self._check_requested(loaded, request.outputs)
        cache = loaded.cache
        key = cache.key(loaded.model, loaded.version, inputs, request.outputs) if cache is not None else b""
        wanted = frozenset(request.outputs) if request.outputs is not None else None
        loaded.enter()
        try:
            hit = cache.get(key) if cache is not None else None
            if hit is not None:
                return InferenceResponse(
                    loaded.model, str(loaded.version), dict(hit.outputs), dict(hit.datatypes), id=request.id
                )
            tracer = tracing.TRACER if tracing.TRACER is None else tracing.recording_tracer()
            if loaded.batcher is not None:
                if tracer is None:
                    results = await loaded.batcher.submit(inputs, request.deadline, wanted)
                else:
                    results = await tracing.traced_submit(tracer, loaded.batcher, inputs, request.deadline, wanted)
            else:
                if request.deadline is not None and request.deadline <= time.monotonic():
                    raise DeadlineExceeded(f"{loaded.label}: the request's deadline passed before it could run")
                if tracer is None:
                    # In a copy of the request's context, so the model's log lines carry its request id.
                    results = await asyncio.get_running_loop().run_in_executor(
                        self._executor, contextvars.copy_context().run, _predict, loaded, inputs, wanted
                    )
                else:
                    rows = _batch_size(inputs)
                    results = await tracing.traced_call(tracer, self._executor, rows, _predict, loaded, inputs, wanted)
        except DeadlineExceeded:
            fallback = parse_fallback(self._manager.model(loaded.model).versions[loaded.version].runtime_config)
            if fallback is None:
                raise
            return await self._serve_fallback(fallback, loaded, request, _batch_size(inputs) or 1)
        finally:
            loaded.leave()
        outputs, datatypes = check_outputs(
            loaded.signature, results, request.outputs, _batch_size(inputs), loaded.label
        )
        if cache is not None:
            cache.put(key, outputs, datatypes)
        return InferenceResponse(
            model_name=loaded.model,
            model_version=str(loaded.version),
            outputs=outputs,
            output_datatypes=datatypes,
            id=request.id,
        )

    async def _serve_fallback(
        self, fallback: Fallback, loaded: LoadedVersion, request: InferenceRequest, rows: int
    ) -> InferenceResponse:
        """Answer from the version's declared fallback, marked as such in the response parameters."""
        if fallback.model is not None:
            substitute = InferenceRequest(
                model_name=fallback.model,
                model_version=fallback.version,
                inputs=request.inputs,
                id=request.id,
                outputs=request.outputs,
                declared_datatypes=request.declared_datatypes,
            )
            response = await self.infer(substitute)  # no deadline, so no second fallback
        else:
            outputs, datatypes = fallback.default_outputs(loaded.signature, rows, request.outputs)
            response = InferenceResponse(loaded.model, str(loaded.version), outputs, datatypes, id=request.id)
        response.parameters = {**(response.parameters or {}), FALLBACK_PARAMETER: fallback.label}
        return response

    async def signature(self, model_name: str, version: str | None) -> tuple[LoadedVersion, Signature]:
        """The loaded version a request would reach, and its signature (for protocol decoders)."""
        loaded = await self._acquire(model_name, version)
        return loaded, loaded.signature

    @staticmethod
    def _check_requested(loaded: LoadedVersion, wanted: list[str]) -> None:
        declared = loaded.signature.output_names()
        if not declared:
            return
        for name in wanted:
            if name not in declared:
                raise InvalidInput(f"unknown output '{name}': {loaded.label} has outputs {', '.join(declared)}")


def _predict(
    loaded: LoadedVersion, inputs: dict[str, np.ndarray[Any, Any]], wanted: frozenset[str] | None
) -> dict[str, np.ndarray[Any, Any]]:
    try:
        results = run_predict(loaded.runtime, inputs, wanted)
    except FerrymanError:
        raise
    except Exception as exc:
        logger.exception("%s raised during predict", loaded.label)
        raise ModelFailed(f"{loaded.label} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(results, dict):
        raise ModelFailed(f"{loaded.label} returned {type(results).__name__}, expected a dict of arrays")
    return results


def _batch_size(inputs: dict[str, np.ndarray[Any, Any]]) -> int | None:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else None
    return None
