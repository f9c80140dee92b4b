"""Per-version request batching: concurrent requests become one model call, then are split back.

Each loaded version that can batch gets one :class:`Batcher`. A request's rows wait in a FIFO
queue; a batch is formed when an execution slot is free and either enough rows are queued or the
oldest request has waited its delay (counted from the *first* request's arrival). Results are split
back by row counts, and a result whose row count differs from the batch's is an error for every
request in it, never a silent mix-up. How the target size is chosen (fixed, or adaptive to a latency
SLO) is the :class:`BatchSizer`'s business; see ``docs/batching.md``.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ferryman.errors import DeadlineExceeded, FerrymanError, InvalidInput, ModelFailed, Overloaded
from ferryman.monitoring.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram
from ferryman.serving.batch_policy import BatchPolicy, BatchSizer
from ferryman.serving.batch_rows import batch_key, checked, concatenate, fail, loop_time, split, union

__all__ = ["Batcher", "batcher_for"]

Arrays = dict[str, np.ndarray[Any, Any]]
#: A model call: inputs, and the outputs some caller wants (None = all).
Predict = Callable[[Arrays, frozenset[str] | None], Arrays]


@dataclass(slots=True, eq=False)
class _Pending:
    inputs: Arrays
    rows: int
    key: tuple[Any, ...]
    wanted: frozenset[str] | None
    arrival: float
    deadline: float | None
    future: asyncio.Future[Arrays] = field(repr=False)
    #: Traced requests only: the batch's start and end (monotonic) and rows, for the trace's spans.
    timing: list[float] | None = None


class Batcher:
    """Queues requests for one version and runs them as batches on an executor."""

    def __init__(
        self,
        predict: Predict,
        executor: Executor,
        policy: BatchPolicy,
        label: str,
    ) -> None:
        self._predict = predict
        self._executor = executor
        self.policy = policy
        self.sizer = BatchSizer(policy)
        self._label = label
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._running = 0
        self._timer: asyncio.TimerHandle | None = None
        self._dispatch_scheduled = False
        #: Batches in a row that served one request each, and whether a request ran at once this loop pass.
        self._solo_streak = 0
        self._ran_now = False
        #: ``time.monotonic()`` until which a new batch waits for more rows (see :meth:`_linger`).
        self._hold_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Counters for metrics and tests: batches and rows run; requests expired in the queue or refused at admission.
        self.batches = 0
        self.inline_batches = 0
        self.rows = 0
        self.expired = 0
        self.rejected = 0
        self.shed = 0
        self.queue_seconds = Histogram(LATENCY_BUCKETS)
        self.run_seconds = Histogram(LATENCY_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)

    async def submit(
        self,
        inputs: Arrays,
        deadline: float | None = None,
        wanted: frozenset[str] | None = None,
        *,
        timing: list[float] | None = None,
    ) -> Arrays:
        """Queue one request (arrays sharing a first, batch dimension) and wait for its rows.

        ``wanted`` names the outputs the caller needs (None = all): a batch computes the union.
        ``timing`` (traced requests) receives the batch's start and end (``time.monotonic()``) and rows.
        """
        if len(self._queue) >= self.policy.max_queue_size:
            self.shed += 1
            raise Overloaded(f"{self._label} has {len(self._queue)} requests queued; retry shortly", retry_after=1)
        rows, key = batch_key(inputs)
        if deadline is not None or self.policy.latency_slo_ms is not None:
            self._admit(rows, deadline)
        loop = asyncio.get_running_loop()
        if self._solo_streak >= _SOLO_STREAK and not self._queue and not self._running and not self._ran_now:
            results = self._run_now(inputs, rows, wanted, deadline, loop, timing)
            if results is not None:
                return results
        pending = _Pending(inputs, rows, key, wanted, time.monotonic(), deadline, loop.create_future(), timing)
        self._queue.append(pending)
        self._queued_rows += rows
        if not self._dispatch_scheduled:
            # Form the batch once the loop has taken in every request that arrived with this one
            # (their tasks are already scheduled ahead of this callback), not from this one alone.
            self._dispatch_scheduled = True
            loop.call_soon(self._scheduled_dispatch)
        return await pending.future

    def _scheduled_dispatch(self) -> None:
        self._dispatch_scheduled = False
        self._dispatch()

    def _run_now(
        self,
        inputs: Arrays,
        rows: int,
        wanted: frozenset[str] | None,
        deadline: float | None,
        loop: asyncio.AbstractEventLoop,
        timing: list[float] | None = None,
    ) -> Arrays | None:
        """Answer a lone caller synchronously: no future, no wake-up, no extra loop pass (None = queue it).

        Only when the last batches each served a single request (one caller at a time), and at most
        once per loop pass: a second request in the same pass means callers are concurrent again, so
        it queues and batches as usual.
        """
        if not self._runs_inline_rows(rows):
            return None
        if deadline is not None and deadline <= time.monotonic():
            self.expired += 1
            raise DeadlineExceeded(f"{self._label}: the request's deadline passed in the queue")
        self._ran_now = True
        loop.call_soon(self._end_pass)
        self._running += 1
        try:
            self.queue_seconds.observe(0.0)
            if timing is not None:
                timing.append(time.monotonic())
            results, elapsed = self._timed_predict(inputs, wanted)
            if timing is not None:
                timing.extend((time.monotonic(), rows))
            self._observe(rows, elapsed)
            self.inline_batches += 1
            self.batches += 1
            self.rows += rows
            arrays = checked(results, rows, self._label)
        except FerrymanError:
            raise
        except Exception as exc:
            raise ModelFailed(f"{self._label} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._running -= 1
        return arrays

    def _end_pass(self) -> None:
        self._ran_now = False

    def _admit(self, rows: int, deadline: float | None) -> None:
        """Refuse at once a request the queue ahead of it would make late.

        Late means past its own deadline (504), or — for a version with a latency SLO — waiting longer
        than the SLO (503 with Retry-After: shedding keeps the answers that are given fast, instead of
        making every caller slow when more arrive than the model can serve).
        """
        model = self.sizer.cost_model()
        if model is None:
            return
        intercept, slope = model
        target = self.sizer.target()
        batches = -(-(self._queued_rows + rows) // target) + (1 if self._running >= self.policy.instances else 0)
        wait = batches * (intercept + slope * target) / self.policy.instances
        now = time.monotonic()
        if deadline is not None and now + wait > deadline:
            self.rejected += 1
            raise DeadlineExceeded(
                f"{self._label} cannot answer within the deadline: about {wait * 1000:.1f} ms of work is queued"
            )
        slo = self.policy.latency_slo_ms
        if slo is not None and wait * 1000 > slo:
            self.shed += 1
            raise Overloaded(
                f"{self._label} is over capacity: about {wait * 1000:.1f} ms of work is queued, "
                f"over its {slo:g} ms latency SLO; retry shortly",
                retry_after=1,
                status=503,
            )

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue and self._running < self.policy.instances:
            target = self.sizer.target()
            delay = self.policy.max_queue_delay_ms / 1000
            if self._queued_rows < target and (delay > 0 or self._hold_until):
                ready_at = max(self._queue[0].arrival + delay if delay > 0 else 0.0, self._hold_until)
                if time.monotonic() < ready_at:
                    if self._timer is None:
                        self._timer = loop.call_at(loop_time(loop, ready_at), self._on_timer)
                    return
            batch = self._take(target)
            self._solo_streak = self._solo_streak + 1 if len(batch) == 1 else 0
            if batch and self._running == 0 and self._runs_inline(batch):
                self._run_inline(batch)
            elif batch:
                self._running += 1
                # The loop keeps only weak references to tasks: hold running batches until they finish.
                task = loop.create_task(self._run(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _runs_inline(self, batch: list[_Pending]) -> bool:
        """Whether the learned cost model says this batch is cheaper to run here than to hand off."""
        return self._runs_inline_rows(sum(item.rows for item in batch))

    def _runs_inline_rows(self, rows: int) -> bool:
        limit = self.policy.inline_max_ms
        if limit <= 0:
            return False
        model = self.sizer.cost_model()
        return model is not None and (model[0] + model[1] * rows) * 1000 <= limit

    def _run_inline(self, batch: list[_Pending]) -> None:
        """Run a cheap batch on the event loop: no thread hop, no extra task (see :meth:`_runs_inline`)."""
        self._running += 1
        try:
            merged, rows, wanted = self._prepare(batch)
            results, elapsed = self._timed_predict(merged, wanted)
            self._observe(rows, elapsed)
            self.inline_batches += 1
            self._deliver(results, batch, rows)
        except Exception as exc:
            fail(batch, exc, self._label)
        finally:
            self._running -= 1
            self._hold_until = time.monotonic() + self._linger(len(batch))

    def _linger(self, last_batch_requests: int) -> float:
        """How long to hold the next batch open for requests about to arrive (0 = don't).

        When a batch ends, its callers are only now getting their answers, and their next requests
        arrive microseconds later: a batch formed at once would often take one or two of them and
        make the rest wait a whole model call. So after a batch that served several requests (the
        sign of concurrent callers), the next one waits a fifth of the model's fixed cost per call
        (at most 2 ms): cheap when that cost is small, and worth it when it is large, as with a
        random forest whose call costs the same for 1 row or 30.
        """
        if last_batch_requests < 2:
            return 0.0
        model = self.sizer.cost_model()
        return 0.0 if model is None else min(0.3 * model[0], 0.004)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self, target: int) -> list[_Pending]:
        """Pop requests (FIFO, same trailing shapes) up to ``target`` rows, shaped by preferred sizes."""
        now = time.monotonic()
        batch: list[_Pending] = []
        rows = 0
        key = None
        while self._queue:
            head = self._queue[0]
            if head.future.cancelled():
                self._pop()
                continue
            if head.deadline is not None and head.deadline <= now:
                self._pop()
                self.expired += 1
                head.future.set_exception(
                    DeadlineExceeded(f"{self._label}: the request's deadline passed in the queue")
                )
                continue
            if batch and (head.key != key or rows + head.rows > target):
                break
            key = head.key
            batch.append(self._pop())
            rows += head.rows
        preferred = [size for size in self.policy.preferred_batch_sizes if size <= rows]
        if preferred and preferred[-1] < rows and len(batch) > 1:
            # Give back the requests past the largest preferred size that fits (to the queue's front).
            while rows > preferred[-1] and len(batch) > 1:
                item = batch.pop()
                rows -= item.rows
                self._queue.appendleft(item)
                self._queued_rows += item.rows
        return batch

    def _pop(self) -> _Pending:
        item = self._queue.popleft()
        self._queued_rows -= item.rows
        return item

    def _prepare(self, batch: list[_Pending]) -> tuple[Arrays, int, frozenset[str] | None]:
        """Merge a batch's inputs and record how long its requests queued."""
        merged = batch[0].inputs if len(batch) == 1 else concatenate(batch)
        rows = sum(item.rows for item in batch)
        now = time.monotonic()
        for item in batch:
            self.queue_seconds.observe(now - item.arrival)
            if item.timing is not None:
                item.timing.append(now)
        return merged, rows, union(batch)

    def _timed_predict(self, merged: Arrays, wanted: frozenset[str] | None) -> tuple[Arrays, float]:
        started = time.perf_counter()
        return self._predict(merged, wanted), time.perf_counter() - started

    def _observe(self, rows: int, elapsed: float) -> None:
        self.sizer.observe(rows, elapsed)
        self.run_seconds.observe(elapsed)
        self.batch_rows.observe(rows)

    def _deliver(self, results: Arrays, batch: list[_Pending], rows: int) -> None:
        self.batches += 1
        self.rows += rows
        now = time.monotonic()
        for item in batch:
            if item.timing is not None:
                item.timing.extend((now, rows))
        split(results, batch, rows, self._label)

    async def _run(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        try:
            merged, rows, wanted = self._prepare(batch)
            # Timed in the executor: the cost model is the model's, without the hand-off around it.
            results, elapsed = await loop.run_in_executor(self._executor, self._timed_predict, merged, wanted)
            self._observe(rows, elapsed)
            self._deliver(results, batch, rows)
        except Exception as exc:
            fail(batch, exc, self._label)
        finally:
            self._running -= 1
            self._hold_until = time.monotonic() + self._linger(len(batch))
            self._dispatch()


#: Single-request batches in a row after which a lone request runs at once (see ``Batcher._run_now``).
_SOLO_STREAK = 3

#: Frameworks whose predict takes any number of rows at once; custom models opt in per version.
BATCHABLE_FRAMEWORKS = frozenset({"sklearn", "xgboost", "lightgbm", "onnx"})


def batcher_for(
    framework: str | None,
    runtime_config: dict[str, Any],
    signature_inputs: list[tuple[int, ...]],
    predict: Predict,
    executor: Executor,
    defaults: BatchPolicy,
    label: str,
) -> Batcher | None:
    """A batcher for a version, or None when it must not batch.

    Batching is on by default for frameworks that batch natively, when every declared input has
    a variable first (batch) dimension; ``runtime_config["batching"]`` tunes it or turns it off
    (``enabled: false``), and turns it on for custom models (``enabled: true``).
    """
    raw = runtime_config.get("batching", {})
    if not isinstance(raw, dict):
        raise InvalidInput("runtime_config.batching must be an object")
    enabled = raw.get("enabled", framework in BATCHABLE_FRAMEWORKS)
    if not enabled or not signature_inputs or any(not shape or shape[0] != -1 for shape in signature_inputs):
        return None
    processes = runtime_config.get("process_workers")
    if isinstance(processes, int) and "instances" not in raw:
        # One batch per worker process at a time: that is what the processes are for.
        defaults = replace(defaults, instances=processes)
    policy = BatchPolicy.from_config(raw, defaults)
    if isinstance(processes, int):
        # Never run on the event loop a batch that would only wait there for another process.
        policy = replace(policy, inline_max_ms=0.0)
    return Batcher(predict, executor, policy, label)
