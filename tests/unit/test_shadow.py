"""Shadow copies are batched, compared row by row, bounded, and never raise into the caller."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from ferryman.errors import ModelFailed
from ferryman.serving.shadow import ShadowRunner
from ferryman.tensors import InferenceRequest, InferenceResponse

Arrays = dict[str, np.ndarray[Any, Any]]


def copy_of(value: float, label: int) -> tuple[InferenceRequest, InferenceResponse]:
    request = InferenceRequest(model_name="m", inputs={"x": np.array([[value]])})
    response = InferenceResponse("m", "1", {"label": np.array([label])}, {"label": "INT64"})
    return request, response


def test_copies_run_in_batches_and_agreement_is_counted_per_row() -> None:
    calls: list[int] = []

    async def predict_on(model: str, version: int, inputs: Arrays) -> Arrays:
        calls.append(len(inputs["x"]))
        return {"label": (inputs["x"][:, 0] > 0.5).astype(np.int64)}

    async def scenario() -> ShadowRunner:
        runner = ShadowRunner(predict_on, flush_rows=16, flush_ms=5)
        for i in range(100):
            value = (i % 10) / 10  # the shadow says 1 for 0.6..0.9
            runner.submit(*copy_of(value, label=1 if value > 0.7 else 0), version=2)
        await runner.drain()
        return runner

    runner = asyncio.run(scenario())
    stats = runner.stats[("m", 2)]
    assert sum(calls) == 100 and len(calls) < 20, calls
    assert (stats.ok, stats.compared, stats.errors, stats.dropped) == (100, 100, 0, 0)
    assert stats.agreed == 80  # values 0.6 and 0.7: the shadow says 1, the primary 0 (20 rows)
    assert stats.latency.count == 100


def test_copies_beyond_the_bound_are_dropped_and_failures_counted() -> None:
    gate = asyncio.Event()

    async def predict_on(model: str, version: int, inputs: Arrays) -> Arrays:
        await gate.wait()
        raise ModelFailed("broken")

    async def scenario() -> ShadowRunner:
        runner = ShadowRunner(predict_on, flush_rows=4, flush_ms=1, max_pending=8)
        for _ in range(40):
            runner.submit(*copy_of(1.0, 1), version=3)
        gate.set()
        await runner.drain()
        return runner

    stats = asyncio.run(scenario()).stats[("m", 3)]
    assert stats.ok == 0 and stats.errors + stats.dropped == 40
    assert stats.errors <= 12 and stats.dropped >= 28
