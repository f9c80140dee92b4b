"""The batcher never mixes up results, and sheds, expires and sizes batches as documented."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ferryman.errors import DeadlineExceeded, InvalidInput, ModelFailed, Overloaded
from ferryman.serving.batch_policy import BatchPolicy, BatchSizer
from ferryman.serving.batcher import Batcher, batcher_for

Arrays = dict[str, np.ndarray[Any, Any]]


def transform(inputs: Arrays, wanted: frozenset[str] | None = None) -> Arrays:
    """A model whose every output row is a function of its own input row only."""
    x = inputs["x"]
    return {"y": x * 2 + 1, "first": x[:, 0].copy()}


class CountingModel:
    """Records batch sizes; optionally blocks until released, to build up a queue."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.sizes: list[int] = []
        self.gate = gate

    def __call__(self, inputs: Arrays, wanted: frozenset[str] | None = None) -> Arrays:
        if self.gate is not None:
            self.gate.wait(30)
        self.sizes.append(int(inputs["x"].shape[0]))
        return transform(inputs)


POLICIES = [
    BatchPolicy(max_batch_size=32),
    BatchPolicy(max_batch_size=8, max_queue_delay_ms=2),
    BatchPolicy(max_batch_size=16, preferred_batch_sizes=(4, 8)),
    BatchPolicy(max_batch_size=64, latency_slo_ms=20),
    BatchPolicy(max_batch_size=32, instances=2),
    BatchPolicy(max_batch_size=32, inline_max_ms=0),
    BatchPolicy(max_batch_size=32, inline_max_ms=1000),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: repr(p))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(row_counts=st.lists(st.integers(min_value=1, max_value=5), min_size=50, max_size=300))
def test_concurrent_requests_each_get_their_own_rows(policy: BatchPolicy, row_counts: list[int]) -> None:
    model = CountingModel()

    async def scenario() -> None:
        with ThreadPoolExecutor(4) as pool:
            batcher = Batcher(model, pool, policy, "model 't' version 1")
            requests = []
            start = 0
            for rows in row_counts:
                x = np.arange(start, start + rows * 3, dtype=np.float64).reshape(rows, 3)
                requests.append(x)
                start += rows * 3
            results = await asyncio.gather(*(batcher.submit({"x": x}) for x in requests))
            for x, result in zip(requests, results, strict=True):
                np.testing.assert_array_equal(result["y"], x * 2 + 1)
                np.testing.assert_array_equal(result["first"], x[:, 0])
            assert batcher.rows == sum(row_counts)

    asyncio.run(scenario())
    assert max(model.sizes) <= max(policy.max_batch_size, 5)


def test_requests_queue_behind_a_running_batch_and_run_together() -> None:
    gate = threading.Event()
    model = CountingModel(gate)

    async def scenario() -> None:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(model, pool, BatchPolicy(max_batch_size=32), "m")
            first = asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}))
            await asyncio.sleep(0)  # sync-ok: lets the first batch start before the others queue
            rest = [asyncio.ensure_future(batcher.submit({"x": np.full((1, 2), i)})) for i in range(10)]
            await asyncio.sleep(0)  # sync-ok: every submit has queued (no awaits inside submit before queueing)
            assert batcher.queued == 10
            gate.set()
            await asyncio.gather(first, *rest)

    asyncio.run(scenario())
    assert model.sizes == [1, 10]


def test_queue_bound_sheds_with_429_and_expired_requests_get_504() -> None:
    gate = threading.Event()

    async def scenario() -> None:
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(CountingModel(gate), pool, BatchPolicy(max_queue_size=3), "model 'm' version 1")
            running = asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}))
            await asyncio.sleep(0)  # sync-ok: the first request starts running
            expired = asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}, deadline=time.monotonic() - 1))
            queued = [asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))})) for _ in range(2)]
            await asyncio.sleep(0)  # sync-ok: all three are queued now
            with pytest.raises(Overloaded) as shed:
                await batcher.submit({"x": np.zeros((1, 2))})
            assert shed.value.status == 429 and shed.value.retry_after >= 1
            gate.set()
            await running
            with pytest.raises(DeadlineExceeded):
                await expired
            await asyncio.gather(*queued)
            assert batcher.expired == 1

    asyncio.run(scenario())


def test_a_model_returning_the_wrong_row_count_fails_every_request_in_the_batch() -> None:
    def lossy(inputs: Arrays, wanted: frozenset[str] | None = None) -> Arrays:
        return {"y": inputs["x"][:-1]}

    def raising(inputs: Arrays, wanted: frozenset[str] | None = None) -> Arrays:
        raise RuntimeError("boom")

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            for model, message in [(lossy, "rows for output 'y'"), (raising, "RuntimeError: boom")]:
                batcher = Batcher(model, pool, BatchPolicy(), "model 'm' version 1")
                results = await asyncio.gather(
                    *(batcher.submit({"x": np.zeros((2, 2))}) for _ in range(5)), return_exceptions=True
                )
                assert all(isinstance(r, ModelFailed) and message in str(r) for r in results), results

    asyncio.run(scenario())


def test_different_trailing_shapes_are_never_concatenated() -> None:
    model = CountingModel()

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(model, pool, BatchPolicy(), "m")
            small = [batcher.submit({"x": np.ones((1, 2))}) for _ in range(3)]
            wide = [batcher.submit({"x": np.ones((1, 5))}) for _ in range(3)]
            results = await asyncio.gather(*small, *wide)
            assert [r["y"].shape for r in results] == [(1, 2)] * 3 + [(1, 5)] * 3

    asyncio.run(scenario())


def test_adaptive_sizer_fits_the_cost_curve_and_respects_the_slo() -> None:
    sizer = BatchSizer(BatchPolicy(max_batch_size=256, latency_slo_ms=20))
    assert sizer.target() == 1
    for rows in [1, 2, 4, 8, 16, 32, 64] * 20:
        sizer.observe(rows, 0.001 + 0.0001 * rows)  # 1 ms + 0.1 ms per row
    intercept, slope = sizer.cost_model() or (0, 0)
    assert intercept == pytest.approx(0.001, rel=0.05) and slope == pytest.approx(0.0001, rel=0.05)
    assert sizer.target() == pytest.approx(90, abs=3)  # (10 ms - 1 ms) / 0.1 ms
    for _ in range(400):
        sizer.observe(64, 0.05)  # the model got much slower
    assert sizer.target() < 64


def test_policy_from_config_names_bad_fields() -> None:
    defaults = BatchPolicy()
    policy = BatchPolicy.from_config({"max_batch_size": 8, "preferred_batch_sizes": [8, 4]}, defaults)
    assert policy.max_batch_size == 8 and policy.preferred_batch_sizes == (4, 8)
    for raw, fragment in [
        ({"max_batch": 3}, "unknown keys max_batch"),
        ({"latency_slo_ms": -1}, "latency_slo_ms"),
        ({"preferred_batch_sizes": [0]}, "preferred_batch_sizes"),
        ({"max_batch_size": 0}, "at least 1"),
    ]:
        with pytest.raises(InvalidInput, match=fragment):
            BatchPolicy.from_config(raw, defaults)


def test_batcher_for_decides_by_framework_config_and_shapes() -> None:
    pool = ThreadPoolExecutor(1)
    try:
        args = (transform, pool, BatchPolicy(), "m")
        assert batcher_for("sklearn", {}, [(-1, 4)], *args) is not None
        assert batcher_for("sklearn", {"batching": {"enabled": False}}, [(-1, 4)], *args) is None
        assert batcher_for("sklearn", {}, [(4,)], *args) is None
        assert batcher_for("custom", {}, [(-1, 4)], *args) is None
        assert batcher_for("custom", {"batching": {"enabled": True}}, [(-1, 4)], *args) is not None
    finally:
        pool.shutdown()


def test_a_batch_computes_the_union_of_the_outputs_its_callers_want() -> None:
    gate = threading.Event()
    seen: list[frozenset[str] | None] = []

    def model(inputs: Arrays, wanted: frozenset[str] | None) -> Arrays:
        gate.wait(30)
        seen.append(wanted)
        return transform(inputs)

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(model, pool, BatchPolicy(), "m")
            first = asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}, wanted=frozenset({"y"})))
            await asyncio.sleep(0)  # sync-ok: the first batch starts, the next ones queue behind it
            rest = [
                asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}, wanted=frozenset({"y"}))),
                asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}, wanted=frozenset({"first"}))),
            ]
            await asyncio.sleep(0)  # sync-ok: both queued
            gate.set()
            await asyncio.gather(first, *rest)
            everything = asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}))
            await everything

    asyncio.run(scenario())
    assert seen == [frozenset({"y"}), frozenset({"y", "first"}), None]


def test_a_version_with_a_latency_slo_sheds_what_would_wait_past_it() -> None:
    gate = threading.Event()

    def slow(inputs: Arrays, wanted: frozenset[str] | None = None) -> Arrays:
        gate.wait(30)
        return transform(inputs)

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(slow, pool, BatchPolicy(max_batch_size=1, latency_slo_ms=50), "model 'm' version 1")
            for _ in range(3):
                batcher.sizer.observe(1, 0.04)  # measured: 40 ms per call
            running = asyncio.ensure_future(batcher.submit({"x": np.zeros((1, 2))}))
            await asyncio.sleep(0)  # sync-ok: the first call starts; the next would wait 40 + 40 ms
            with pytest.raises(Overloaded) as shed:
                await batcher.submit({"x": np.zeros((1, 2))})
            assert shed.value.status == 503 and "latency SLO" in shed.value.message
            assert batcher.shed == 1
            gate.set()
            await running

    asyncio.run(scenario())


def test_cheap_batches_run_on_the_event_loop_and_costly_ones_on_the_executor() -> None:
    """The thread hop is skipped only once the cost model says the batch is cheap."""
    calls: list[tuple[int, int]] = []

    def model(inputs: Arrays, wanted: frozenset[str] | None = None) -> Arrays:
        calls.append((threading.get_ident(), int(inputs["x"].shape[0])))
        if inputs["x"][0, 0] < 0:  # the "costly" requests
            time.sleep(0.005)  # sync-ok: simulated model cost, not synchronisation
        return transform(inputs)

    async def scenario() -> None:
        loop_thread = threading.get_ident()
        row = np.ones((1, 3))
        with ThreadPoolExecutor(2) as pool:
            batcher = Batcher(model, pool, BatchPolicy(inline_max_ms=1.0), "model 't' version 1")
            await batcher.submit({"x": row})
            assert calls[-1][0] != loop_thread, "no cost model yet: the first batch goes to the executor"
            await batcher.submit({"x": row})
            assert calls[-1][0] == loop_thread
            # Requests arriving together still become one batch (formed after the loop took them all in).
            answers = await asyncio.gather(*(batcher.submit({"x": row * i}) for i in range(1, 11)))
            assert calls[-1] == (loop_thread, 10)
            assert [float(a["first"][0]) for a in answers] == [float(i) for i in range(1, 11)]
            for _ in range(30):  # teach it that calls now cost 5 ms
                await batcher.submit({"x": -row})
            assert calls[-1][0] != loop_thread

    asyncio.run(scenario())


def test_process_workers_never_run_batches_on_the_event_loop() -> None:
    with ThreadPoolExecutor(1) as pool:
        batcher = batcher_for(
            "sklearn",
            {"process_workers": 2, "batching": {"instances": 1}},
            [(-1, 3)],
            transform,
            pool,
            BatchPolicy(),
            "m",
        )
        assert batcher is not None and batcher.policy.inline_max_ms == 0
        assert batcher_for("sklearn", {}, [(-1, 3)], transform, pool, BatchPolicy(), "m").policy.inline_max_ms > 0  # type: ignore[union-attr]


def test_a_lone_caller_is_answered_without_suspending_but_a_burst_still_batches() -> None:
    model = CountingModel()

    async def scenario() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = Batcher(model, pool, BatchPolicy(inline_max_ms=1000), "model 't' version 1")
            row = np.ones((1, 3))
            for _ in range(4):  # one caller at a time: a cost model, then a streak of single-request batches
                await batcher.submit({"x": row})
            await asyncio.sleep(0)  # sync-ok: let the end-of-pass callback run, as the next request would
            coroutine = batcher.submit({"x": row * 3})
            try:
                coroutine.send(None)
            except StopIteration as done:  # answered synchronously: no future, no extra loop pass
                assert done.value["y"].tolist() == [[7.0, 7.0, 7.0]]
            else:
                raise AssertionError("a lone caller should not have been queued")
            await asyncio.sleep(0)  # sync-ok: next loop pass
            model.sizes.clear()
            answers = await asyncio.gather(*(batcher.submit({"x": row * i}) for i in range(10)))
            assert model.sizes == [1, 9]  # the first ran at once; the rest of the burst formed one batch
            assert [a["first"][0] for a in answers] == list(range(10))
            await asyncio.gather(*(batcher.submit({"x": row * i}) for i in range(10)))
            assert model.sizes[-1] == 10  # after a multi-request batch, nothing skips the queue

    asyncio.run(scenario())
