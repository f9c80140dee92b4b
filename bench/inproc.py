"""The in-process ceiling: the model call alone, no HTTP, one thread, 1 row and batches of 32 rows.

Measured twice per model: the framework call every peer makes (scikit-learn ``predict``, ONNX
Runtime ``session.run`` of the label) and Ferryman's runtime ``predict`` as ``ferryman serve``
loads it by default (for scikit-learn that is ``predict`` + ``predict_proba``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.models import artifact, data


def _time(call: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """(calls per second, median ms per call) over ``seconds`` after a short warm-up."""
    for _ in range(20):
        call()
    durations = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        begin = time.perf_counter()
        call()
        durations.append(time.perf_counter() - begin)
    return len(durations) / sum(durations), statistics.median(durations) * 1000


def measure(models_dir: Path, workloads: list[str], seconds: float) -> list[dict[str, Any]]:
    import joblib
    import onnxruntime

    from ferryman.runtimes import load_runtime
    from ferryman.runtimes.base import RuntimeConfig

    features, _ = data()
    rows: list[dict[str, Any]] = []
    for workload in workloads:
        path = artifact(models_dir, workload)
        if workload == "w3":
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            framework: Callable[[np.ndarray], Any] = lambda x, s=session: s.run(["label"], {"input": x})  # noqa: E731
            framework_name = "onnxruntime `run(label)`"
        else:
            model = joblib.load(path)
            framework = model.predict
            framework_name = "scikit-learn `predict`"
        runtime = load_runtime(path, None, RuntimeConfig())
        dtype = np.float32 if workload == "w3" else np.float64
        calls: list[tuple[str, Callable[[np.ndarray], Any]]] = [
            (framework_name, framework),
            ("Ferryman runtime `predict` (default outputs)", lambda x, r=runtime: r.predict({"input": x})),
        ]
        for name, call in calls:
            for batch in (1, 32):
                batch_rows = np.ascontiguousarray(features[:batch], dtype=dtype)
                per_second, p50 = _time(lambda c=call, b=batch_rows: c(b), seconds)
                rows.append(
                    {
                        "workload": workload,
                        "call": name,
                        "batch": batch,
                        "rows_per_s": per_second * batch,
                        "p50_ms": p50,
                    }
                )
                print(f"  in-process {workload} {name} x{batch}: {per_second * batch:,.0f} rows/s, p50 {p50:.3f} ms")
    return rows
