"""Shadow traffic: a copy of a request goes to a candidate version after the primary answered.

The candidate's answer is never returned, only recorded: how many copies ran, failed or were
dropped, how long they took, and how far their outputs agreed with the primary's
(:func:`~ferryman.serving.agreement.compare_outputs`; a copy *agrees* when its decision does —
the same class for a classifier, close numbers for a regressor). Copies run as background tasks on the same
event loop, through the same handler path as any request (validation, batching), without a
deadline. At most ``max_inflight`` copies per model run at once — beyond that a copy is dropped
and counted, so shadowing never queues work the primary would wait behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ferryman.errors import FerrymanError
from ferryman.monitoring.metrics import LATENCY_BUCKETS, Histogram
from ferryman.serving.agreement import compare_outputs
from ferryman.tensors import InferenceRequest, InferenceResponse

__all__ = ["ShadowRunner", "ShadowStats"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
#: Serves a request on one version: (request, version) -> response.
ServeOn = Callable[[InferenceRequest, int], Awaitable[InferenceResponse]]


@dataclass(slots=True)
class ShadowStats:
    """What one shadow version has seen."""

    ok: int = 0
    errors: int = 0
    dropped: int = 0
    agreed: int = 0
    compared: int = 0
    #: Sum over compared copies of the mean absolute difference of float outputs.
    abs_diff_total: float = 0.0
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    @property
    def agreement(self) -> float | None:
        """Share of compared copies whose outputs agreed with the primary's (None before any)."""
        return self.agreed / self.compared if self.compared else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the experiment report."""
        return {
            "requests": self.ok + self.errors,
            "errors": self.errors,
            "dropped": self.dropped,
            "compared": self.compared,
            "agreement": self.agreement,
            "mean_abs_diff": self.abs_diff_total / self.compared if self.compared else None,
        }


class ShadowRunner:
    """Runs shadow copies in the background and keeps their statistics per (model, version)."""

    def __init__(self, serve_on: ServeOn, max_inflight: int = 32) -> None:
        self._serve_on = serve_on
        self._max_inflight = max_inflight
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: dict[tuple[str, int], ShadowStats] = {}

    def stats_for(self, model: str, version: int) -> ShadowStats:
        """The statistics of one shadow version (created on first use)."""
        key = (model, version)
        stats = self.stats.get(key)
        if stats is None:
            stats = self.stats[key] = ShadowStats()
        return stats

    def submit(self, request: InferenceRequest, primary: InferenceResponse, version: int) -> None:
        """Schedule a copy of ``request`` on ``version`` (call after the primary's response is ready)."""
        model = request.model_name
        running = self._inflight.get(model, 0)
        if running >= self._max_inflight:
            self.stats_for(model, version).dropped += 1
            return
        self._inflight[model] = running + 1
        copy = replace(request, model_version=str(version), deadline=None, headers=None)
        task = asyncio.get_running_loop().create_task(self._run(copy, primary.outputs, version))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: InferenceRequest, primary: Arrays, version: int) -> None:
        stats = self.stats_for(request.model_name, version)
        started = time.perf_counter()
        try:
            response = await self._serve_on(request, version)
        except FerrymanError as exc:
            stats.errors += 1
            logger.debug("shadow copy to version %s failed: %s", version, exc.message)
            return
        except Exception:
            stats.errors += 1
            logger.exception("shadow copy to version %s failed", version)
            return
        finally:
            stats.latency.observe(time.perf_counter() - started)
            self._inflight[request.model_name] -= 1
        stats.ok += 1
        agreement = compare_outputs(primary, response.outputs)
        stats.compared += 1
        if agreement.decision_agrees:
            stats.agreed += 1
        diffs = [output.mean_abs_diff for output in agreement.outputs if output.mean_abs_diff is not None]
        if diffs:
            stats.abs_diff_total += sum(diffs) / len(diffs)

    async def close(self) -> None:
        """Wait for running copies (server shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
