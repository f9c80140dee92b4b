"""Shadow traffic: copies of requests go to a candidate version after the primary answered.

The candidate's answers are never returned, only recorded: how many copies ran, failed or were
dropped, how long a copy took from the primary's answer to its comparison, and how often the
candidate's *decision* agreed with the primary's (the same class for a classifier, close numbers
for a regressor; :func:`~ferryman.serving.agreement.row_agreement`).

Copies cost the primary as little as possible: they skip HTTP, decoding and encoding, and they are
gathered per (model, shadow version) and run as one batch — when ``flush_rows`` rows are waiting
or the oldest has waited ``flush_ms`` — on the inference pool, never on the event loop, with one
vectorised comparison per batch. At most ``max_pending`` rows wait per shadow version and one
batch per version runs at a time; beyond that copies are dropped and counted, so shadowing never
builds a queue the primary would wait behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferryman.errors import FerrymanError
from ferryman.monitoring.metrics import LATENCY_BUCKETS, Histogram
from ferryman.serving.agreement import row_agreement
from ferryman.tensors import InferenceRequest, InferenceResponse

__all__ = ["ShadowRunner", "ShadowStats"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
#: Runs stacked inputs on one version (validated, off the event loop): (model, version, inputs) -> outputs.
PredictOn = Callable[[str, int, Arrays], Awaitable[Arrays]]


@dataclass(slots=True)
class ShadowStats:
    """What one shadow version has seen (counts are rows: one-row requests are one copy each)."""

    ok: int = 0
    errors: int = 0
    dropped: int = 0
    agreed: int = 0
    compared: int = 0
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    @property
    def agreement(self) -> float | None:
        """Share of compared rows whose decision agreed with the primary's (None before any)."""
        return self.agreed / self.compared if self.compared else None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the experiment report."""
        return {
            "requests": self.ok + self.errors,
            "errors": self.errors,
            "dropped": self.dropped,
            "compared": self.compared,
            "agreement": self.agreement,
        }


@dataclass(slots=True)
class _Waiting:
    """Copies waiting to run as one batch on one shadow version."""

    inputs: list[Arrays] = field(default_factory=list)
    primary: list[Arrays] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    since: list[float] = field(default_factory=list)
    total_rows: int = 0
    timer: asyncio.TimerHandle | None = None
    running: bool = False


class ShadowRunner:
    """Gathers shadow copies, runs them in batches in the background, and keeps their statistics."""

    def __init__(
        self, predict_on: PredictOn, *, flush_rows: int = 64, flush_ms: float = 20.0, max_pending: int = 1024
    ) -> None:
        self._predict_on = predict_on
        self._flush_rows = flush_rows
        self._flush_s = flush_ms / 1000
        self._max_pending = max_pending
        self._waiting: dict[tuple[str, int], _Waiting] = {}
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
        """Queue a copy of ``request`` for ``version`` (call once the primary's answer is ready)."""
        key = (request.model_name, version)
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = _Waiting()
        rows = _rows(request.inputs)
        if waiting.total_rows + rows > self._max_pending or rows == 0:
            self.stats_for(*key).dropped += max(rows, 1)
            return
        waiting.inputs.append(request.inputs)
        waiting.primary.append(primary.outputs)
        waiting.rows.append(rows)
        waiting.since.append(time.perf_counter())
        waiting.total_rows += rows
        if waiting.total_rows >= self._flush_rows:
            self._flush(key)
        elif waiting.timer is None:
            waiting.timer = asyncio.get_running_loop().call_later(self._flush_s, self._flush, key)

    def _flush(self, key: tuple[str, int]) -> None:
        waiting = self._waiting[key]
        if waiting.timer is not None:
            waiting.timer.cancel()
            waiting.timer = None
        if waiting.running or not waiting.inputs:
            return  # the running batch flushes again when it ends
        batch = _Waiting(waiting.inputs, waiting.primary, waiting.rows, waiting.since, waiting.total_rows)
        waiting.inputs, waiting.primary, waiting.rows, waiting.since, waiting.total_rows = [], [], [], [], 0
        waiting.running = True
        task = asyncio.get_running_loop().create_task(self._run(key, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: tuple[str, int], batch: _Waiting) -> None:
        stats = self.stats_for(*key)
        try:
            for group in _groups(batch):
                await self._run_group(key, stats, batch, group)
        finally:
            waiting = self._waiting[key]
            waiting.running = False
            if waiting.total_rows >= self._flush_rows:
                self._flush(key)
            elif waiting.inputs and waiting.timer is None:
                waiting.timer = asyncio.get_running_loop().call_later(self._flush_s, self._flush, key)

    async def _run_group(self, key: tuple[str, int], stats: ShadowStats, batch: _Waiting, group: list[int]) -> None:
        rows = sum(batch.rows[i] for i in group)
        names = list(batch.inputs[group[0]])
        merged = {name: np.concatenate([batch.inputs[i][name] for i in group]) for name in names}
        try:
            outputs = await self._predict_on(key[0], key[1], merged)
        except FerrymanError as exc:
            stats.errors += rows
            logger.debug("shadow batch for %s version %s failed: %s", key[0], key[1], exc.message)
            return
        except Exception:
            stats.errors += rows
            logger.exception("shadow batch for %s version %s failed", key[0], key[1])
            return
        finished = time.perf_counter()
        stats.ok += rows
        primary_names = set.intersection(*(set(batch.primary[i]) for i in group))
        primary = {name: np.concatenate([batch.primary[i][name] for i in group]) for name in primary_names}
        agree = row_agreement(primary, outputs, rows)
        stats.compared += rows
        stats.agreed += int(np.count_nonzero(agree))
        for i in group:
            stats.latency.observe(finished - batch.since[i])

    async def drain(self) -> None:
        """Run everything that waits, now, and return when no copy is waiting or running."""
        while self._tasks or any(waiting.inputs for waiting in self._waiting.values()):
            for key, waiting in list(self._waiting.items()):
                if waiting.inputs and not waiting.running:
                    self._flush(key)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Drop what waits and let running batches finish (server shutdown)."""
        for waiting in self._waiting.values():
            if waiting.timer is not None:
                waiting.timer.cancel()
            waiting.inputs, waiting.primary, waiting.rows, waiting.since, waiting.total_rows = [], [], [], [], 0
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _rows(inputs: Arrays) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 0
    return 0


def _groups(batch: _Waiting) -> list[list[int]]:
    """Indices of copies whose inputs concatenate (same names, trailing shapes and dtypes), in order."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, inputs in enumerate(batch.inputs):
        signature = tuple((name, array.shape[1:], array.dtype.str) for name, array in inputs.items())
        groups.setdefault(signature, []).append(index)
    return list(groups.values())
