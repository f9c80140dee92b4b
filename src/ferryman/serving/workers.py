"""Process workers: a model that holds the GIL runs in child processes, tensors cross in shared memory.

Threads are enough for runtimes that release the GIL while predicting (ONNX Runtime, XGBoost,
LightGBM); a small scikit-learn model or custom Python code holds it, so two threads cannot use two
cores. :class:`ProcessPoolRuntime` starts N children that each load the version, and implements the
:class:`Runtime` protocol by handing each call to a free child.

Each child owns one shared-memory segment. A call copies the input arrays into it (one memcpy,
no pickling) and sends only their layout (dtype, shape, offset) through a pipe; the child maps
numpy views over the same memory (zero-copy), predicts, writes its outputs after the inputs and
answers with their layout; the parent copies them out. Object arrays (BYTES) and calls that do not
fit the segment fall back to pickling through the pipe.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import queue
import threading
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ferryman.errors import InvalidInput, ModelFailed
from ferryman.runtimes.base import RuntimeConfig
from ferryman.tensors import Signature

__all__ = ["MAX_PROCESS_WORKERS", "ProcessPoolRuntime", "check_worker_config"]

#: Most child processes one version may use.
MAX_PROCESS_WORKERS = 16


def check_worker_config(runtime_config: dict[str, Any]) -> None:
    """Refuse a malformed ``runtime_config.process_workers`` (run at push time)."""
    value = runtime_config.get("process_workers")
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PROCESS_WORKERS:
        raise InvalidInput(f"runtime_config.process_workers must be an integer from 1 to {MAX_PROCESS_WORKERS}")


logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray[Any, Any]]
Layout = list[tuple[str, str, tuple[int, ...], int]]  # name, dtype.str, shape, offset

_ALIGN = 64
_START_TIMEOUT_S = 300.0


def _place(arrays: Arrays, buffer: memoryview, start: int) -> tuple[Layout, int] | None:
    """Copy arrays into ``buffer`` from ``start``; their layout and the end offset, or None if they don't fit."""
    layout: Layout = []
    offset = start
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.hasobject:
            return None
        offset = -(-offset // _ALIGN) * _ALIGN
        end = offset + array.nbytes
        if end > len(buffer):
            return None
        view: np.ndarray[Any, Any] = np.ndarray(array.shape, dtype=array.dtype, buffer=buffer, offset=offset)
        view[...] = array
        layout.append((name, array.dtype.str, tuple(array.shape), offset))
        offset = end
    return layout, offset


def _views(layout: Layout, buffer: memoryview) -> Arrays:
    return {
        name: np.ndarray(shape, dtype=np.dtype(dtype), buffer=buffer, offset=offset)
        for name, dtype, shape, offset in layout
    }


def _buffer_of(memory: SharedMemory) -> memoryview:
    buffer = memory.buf
    if buffer is None:
        raise ModelFailed("a model worker's shared memory segment is closed")
    return buffer


def _child_main(
    connection: Connection, segment: str, path: str, framework: str | None, options: dict[str, Any]
) -> None:
    """One worker process: load the model, then answer predict calls until told to stop."""
    from ferryman.runtimes import load_runtime  # imported here: the child is a fresh interpreter

    memory = SharedMemory(name=segment)
    buffer = _buffer_of(memory)
    try:
        runtime = load_runtime(Path(path), framework, RuntimeConfig(options=options, threads=1))
        connection.send(("ready", runtime.signature().to_dict(), runtime.framework))
    except Exception as exc:
        connection.send(("error", f"{type(exc).__name__}: {exc}", None))
        return
    try:
        while True:
            message = connection.recv()
            if message[0] == "stop":
                break
            try:
                if message[0] == "shm":
                    layout, end = message[1], message[2]
                    results = runtime.predict(_views(layout, buffer))
                    placed = _place(results, buffer, end)
                    if placed is None:
                        connection.send(("pickled", {k: np.asarray(v) for k, v in results.items()}))
                    else:
                        connection.send(("shm", placed[0]))
                else:
                    connection.send(("pickled", {k: np.asarray(v) for k, v in runtime.predict(message[1]).items()}))
            except Exception as exc:
                connection.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        runtime.unload()
        del buffer
        memory.close()


class _Worker:
    """The parent's handle on one child process and its segment."""

    def __init__(self, index: int, path: Path, framework: str | None, options: dict[str, Any], segment_bytes: int):
        context = multiprocessing.get_context("spawn")
        self.memory = SharedMemory(create=True, size=segment_bytes)
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_child_main,
            args=(child_end, self.memory.name, str(path), framework, options),
            name=f"ferryman-model-worker-{index}",
            daemon=True,
        )
        self.process.start()
        child_end.close()

    def wait_ready(self) -> tuple[dict[str, Any], str]:
        if not self.connection.poll(_START_TIMEOUT_S):
            raise ModelFailed("a model worker process did not start in time")
        status, payload, framework = self.connection.recv()
        if status != "ready":
            raise ModelFailed(f"a model worker process could not load the model: {payload}")
        return payload, framework

    def predict(self, inputs: Arrays) -> Arrays:
        buffer = _buffer_of(self.memory)
        placed = _place(inputs, buffer, 0)
        try:
            if placed is None:
                self.connection.send(("pickled", inputs))
            else:
                self.connection.send(("shm", placed[0], placed[1]))
            kind, payload = self.connection.recv()
        except (EOFError, OSError, BrokenPipeError):
            raise ModelFailed(
                f"model worker process {self.process.pid} died (exit code {self.process.exitcode})"
            ) from None
        if kind == "error":
            raise ModelFailed(payload)
        if kind == "pickled":
            return dict(payload)
        return {name: array.copy() for name, array in _views(payload, buffer).items()}

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # the child may be gone already
            self.connection.send(("stop",))
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.connection.close()
        self.memory.close()
        self.memory.unlink()


class ProcessPoolRuntime:
    """A Runtime whose model runs in ``processes`` child processes (one call per child at a time)."""

    framework: ClassVar[str] = "process"

    def __init__(self, processes: int, segment_bytes: int = 16 * 1024 * 1024) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self._processes = processes
        self._segment_bytes = segment_bytes
        self._workers: list[_Worker] = []
        self._free: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._signature: Signature | None = None
        self._lock = threading.Lock()
        self.inner_framework: str | None = None

    def load(self, path: Path, config: RuntimeConfig, framework: str | None = None) -> None:
        """Start the children and wait until each has loaded the model."""
        options = dict(config.options)
        try:
            for index in range(self._processes):
                self._workers.append(_Worker(index, path, framework, options, self._segment_bytes))
            for worker in self._workers:
                signature, inner = worker.wait_ready()
                self._signature = Signature.from_dict(signature)
                self.inner_framework = inner
                self._free.put(worker)
        except BaseException:
            self.unload()
            raise

    def signature(self) -> Signature:
        """The model's signature, as the first child reported it."""
        assert self._signature is not None
        return self._signature

    def predict(self, inputs: Arrays) -> Arrays:
        """Run on a free child (blocks this thread until one is free)."""
        worker = self._free.get()
        try:
            return worker.predict(inputs)
        finally:
            self._free.put(worker)

    @property
    def pids(self) -> list[int]:
        """The children's process ids."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    def unload(self) -> None:
        """Stop every child and release the shared memory."""
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.stop()
